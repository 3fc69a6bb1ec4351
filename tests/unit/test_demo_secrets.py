"""The demo's secrets kept beside its database (gql_usage.demo_secrets) and
``gql-usage token`` signing with them (issue 13, point 4)."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from gql_usage import cli, demo_secrets


def test_secrets_live_beside_a_sqlite_file_and_in_the_working_directory_otherwise(
        tmp_path: Path) -> None:
    assert demo_secrets.secrets_path(f"sqlite://{tmp_path}/demo.sqlite3") == \
        tmp_path / "demo.sqlite3.demo-secrets.json"
    assert demo_secrets.secrets_path("postgres://u@h/db") == Path("gql_usage.demo-secrets.json")


def test_made_once_kept_after_and_readable_by_the_owner_only(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/demo.sqlite3"
    assert demo_secrets.load(url) is None
    first = demo_secrets.load_or_create(url)
    assert first.jwt_secret.startswith("demo-secret-") and len(first.jwt_secret) == 44
    assert first.service_token.startswith("demo-service-")
    assert demo_secrets.load_or_create(url) == first == demo_secrets.load(url)
    mode = stat.S_IMODE((tmp_path / "demo.sqlite3.demo-secrets.json").stat().st_mode)
    assert mode == 0o600
    # Another database has secrets of its own.
    assert demo_secrets.load_or_create(f"sqlite://{tmp_path}/other.sqlite3") != first


def test_demos_starting_at_once_agree_on_one_set(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/demo.sqlite3"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: demo_secrets.load_or_create(url), range(16)))
    assert len(set(made)) == 1


def test_a_file_that_is_not_ours_is_reported_not_overwritten(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/demo.sqlite3"
    path = demo_secrets.secrets_path(url)
    path.write_text("not json")
    with pytest.raises(RuntimeError, match="holds no demo secrets; remove it"):
        demo_secrets.load_or_create(url)
    assert path.read_text() == "not json"


def test_token_signs_with_the_demos_secret_when_none_is_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite://{tmp_path}/demo.sqlite3"
    monkeypatch.delenv("GQL_USAGE_JWT_SECRET", raising=False)
    monkeypatch.setenv("GQL_USAGE_DATABASE_URL", url)
    # No demo yet: the one-line message about the missing setting.
    assert cli.main(["token", "--user", "u1", "--account", "acme"]) == 2
    assert "missing required setting GQL_USAGE_JWT_SECRET" in capsys.readouterr().err
    kept = demo_secrets.load_or_create(url)
    assert cli.main(["token", "--user", "u1", "--account", "acme", "--ttl", "60"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), kept.jwt_secret, algorithms=["HS256"])
    assert (claims["sub"], claims["acc"], claims["exp"] - claims["iat"]) == ("u1", "acme", 60)
    # A secret set in the environment wins.
    monkeypatch.setenv("GQL_USAGE_JWT_SECRET", "e" * 40)
    assert cli.main(["token", "--user", "u1", "--account", "acme"]) == 0
    jwt.decode(capsys.readouterr().out.strip(), "e" * 40, algorithms=["HS256"])
