"""The demo's JWT secret and service token, kept beside its database so that a restarted
``gql-usage serve --demo`` accepts the tokens it printed before, and ``gql-usage token``
signs for the demo without any setting (README, 'Quick start')."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The file's name beside a SQLite database ``<file>``: ``<file>.demo-secrets.json``;
#: for a server database, in the working directory.
SUFFIX = ".demo-secrets.json"
SERVER_FILE = "gql_usage" + SUFFIX


@dataclass(frozen=True)
class DemoSecrets:
    jwt_secret: str
    service_token: str


def secrets_path(database_url: str) -> Path:
    """Where the demo's secrets for ``database_url`` are kept."""
    if database_url.startswith("sqlite://"):
        return Path(database_url.removeprefix("sqlite://").partition("?")[0] + SUFFIX)
    return Path(SERVER_FILE)


def load(database_url: str) -> DemoSecrets | None:
    """The stored secrets, or None when there are none (or the file is not ours)."""
    try:
        data = json.loads(secrets_path(database_url).read_text(encoding="utf-8"))
        return DemoSecrets(str(data["jwtSecret"]), str(data["serviceToken"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_or_create(database_url: str) -> DemoSecrets:
    """The stored secrets; made (random) and stored, readable by the owner only, the
    first time. Two demos starting at once agree: the file is created exclusively."""
    found = load(database_url)
    if found is not None:
        return found
    made = DemoSecrets("demo-secret-" + secrets.token_hex(16),
                       "demo-service-" + secrets.token_hex(16))
    path = secrets_path(database_url)
    text = json.dumps({"jwtSecret": made.jwt_secret, "serviceToken": made.service_token})
    # Written whole to a private file first, then linked into place: the link fails if
    # the name exists, and a reader never sees a file half written (an exclusively
    # created file is empty until written: a second demo read it as "not ours").
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp's mode is 0600
            f.write(text)
        os.link(staged, path)
    except FileExistsError:  # another demo made it meanwhile, or it is not ours
        found = load(database_url)
        if found is None:
            raise RuntimeError(f"{path} exists but holds no demo secrets; remove it") from None
        return found
    finally:
        os.unlink(staged)
    return made
