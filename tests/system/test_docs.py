"""Every fenced code block of README.md and docs/*.md is run, so the docs cannot rot.

The convention (docs/README.md, "Writing docs"): a block's language tag says how it is
checked; an HTML comment ``<!-- doc-test: ... -->`` on the line before a fence changes
that (``skip reason=...``, ``dry reason=...``, ``as=<user>``, ``expect``). One
``gql-usage serve --demo`` (the README's own command, on a fresh SQLite file) serves every
block; each block is its own test, named ``<file>:<line>-<language>``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.ports import free_port
from support.serve import serve_process

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Run against the demo server: GraphQL as a demo user, shells, Python, Node.
RUN = {"graphql", "bash", "sh", "python", "js", "javascript"}
#: Parsed (JSON), or compared with the block before when marked ``expect``.
PARSED = {"json"}
#: Output and illustration only: never run.
SHOWN = {"text", "http"}
#: The demo's logins (``gql_usage.demo.DemoInfo``) a GraphQL block may run as.
USERS = ("paid_admin", "member", "free_admin")
#: Skips are for what cannot run here at all; keep them few.
MAX_SKIPS = 5
#: Longest a block may run.
BLOCK_TIMEOUT_S = 120
#: Longest wait for ``serve --demo`` (seeds 120,000 events first: ~35 s on a loaded machine).
DEMO_START_TIMEOUT_S = 300

FENCE = re.compile(r"^```(.*)$")
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->$")
OPTION = re.compile(r"(skip|dry|expect|as)(?:=(\S+))?\s*")


@dataclass
class Block:
    path: Path
    line: int  # the opening fence, 1-based
    lang: str
    text: str
    options: dict[str, str] = field(default_factory=dict)
    #: The ``expect`` JSON block right after this one, if any.
    expected: Block | None = None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}-{self.lang or 'untagged'}"


def parse_marker(text: str) -> dict[str, str]:
    """``skip reason=...`` -> {"skip": "", "reason": "..."}; ``as=member`` -> {"as": "member"}."""
    head, _, reason = text.partition("reason=")
    options = {"reason": reason.strip()} if reason.strip() else {}
    position = 0
    while position < len(head):
        match = OPTION.match(head, position)
        if match is None:
            options["unknown"] = head[position:]
            break
        options[match.group(1)] = match.group(2) or ""
        position = match.end()
    return options


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start, lang = i, opening.group(1).strip()
        i += 1
        body = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: fence never closed"
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before.strip())
        block = Block(path, start + 1, lang, "\n".join(body) + "\n",
                      parse_marker(marker.group(1)) if marker else {})
        if "expect" in block.options and found:
            found[-1].expected = block
        found.append(block)
        i += 1
    return found


BLOCKS = [block for path in FILES for block in blocks_of(path)]


def test_every_block_has_a_known_language() -> None:
    """An untagged or unknown tag fails (a ``skip`` with a reason lets any tag through)."""
    wrong = [b.id for b in BLOCKS
             if b.lang not in RUN | PARSED | SHOWN and "skip" not in b.options]
    known = sorted(RUN | PARSED | SHOWN)
    assert not wrong, f"blocks without a known language tag ({known}): {wrong}"


def test_markers_are_known_and_skips_few_and_explained() -> None:
    problems = []
    for b in BLOCKS:
        o = b.options
        if "unknown" in o:
            problems.append(f"{b.id}: unknown marker text {o['unknown']!r}")
        if ("skip" in o or "dry" in o) and not o.get("reason"):
            problems.append(f"{b.id}: skip/dry without reason=")
        if "dry" in o and b.lang not in ("bash", "sh"):
            problems.append(f"{b.id}: dry is for shell blocks")
        if "as" in o and (b.lang != "graphql" or o["as"] not in USERS):
            problems.append(f"{b.id}: as= is for graphql blocks, one of {USERS}")
        owner = next((x for x in BLOCKS if x.expected is b), None)
        if "expect" in o and (b.lang != "json" or owner is None or owner.lang not in RUN):
            problems.append(f"{b.id}: expect is for a json block right after a run block")
        if b.lang in SHOWN and re.search(r"^\s*(\$ |curl |python|gql-usage )", b.text, re.M):
            problems.append(f"{b.id}: a command in a {b.lang} block: tag it bash to run it")
    assert not problems, problems
    skips = [f"{b.id}: {b.options['reason']}" for b in BLOCKS if "skip" in b.options]
    assert len(skips) <= MAX_SKIPS, skips


def test_readme_starts_with_the_two_commands() -> None:
    """The README's first block is the two commands for a fresh machine, and `.ci/run`
    runs the same test command."""
    first = blocks_of(ROOT / "README.md")[0]
    commands = [line.split("#")[0].strip() for line in first.text.strip().split("\n")]
    assert commands == ["python3 -m pip install -e . && gql-usage serve --demo",
                        "bash .ci/run"]
    assert "skip" in first.options
    assert 'python3 -m pytest "$@"' in (ROOT / ".ci" / "run").read_text()


# --- the demo server ------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    url: str
    tokens: dict[str, str]
    service_token: str
    database_url: str
    access_token: str

    def env(self) -> dict[str, str]:
        """What a shell, Python or Node block sees (docs/README.md, "Writing docs")."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GQL_USAGE_")}
        path = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
        return {**environ, "PYTHONPATH": path, "GQL_USAGE_URL": self.url,
                "GQL_USAGE_DATABASE_URL": self.database_url,
                "TOKEN": self.tokens["paid_admin"], "MEMBER_TOKEN": self.tokens["member"],
                "FREE_TOKEN": self.tokens["free_admin"], "SERVICE_TOKEN": self.service_token,
                "GQL_USAGE_TOKEN": self.access_token}

    def graphql(self, query: str, user: str = "paid_admin") -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Authorization": f"Bearer {self.tokens[user]}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=BLOCK_TIMEOUT_S) as response:
                answer: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            answer = json.load(exc)
        return answer


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``gql-usage serve --demo`` on a fresh SQLite file, as the README says, with the
    tokens it printed. Session-scoped: on an xdist worker, another module's tests may run
    between this module's, and a module-scoped server was seeded (~15 s) twice."""
    directory = tmp_path_factory.mktemp("docs-demo")
    database_url = f"sqlite://{directory / 'gql_usage.sqlite3'}"
    port, log = free_port(), directory / "serve.log"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with serve_process("--demo", "--port", str(port), log=log, PYTHONPATH=pythonpath,
                       GQL_USAGE_DATABASE_URL=database_url) as process:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEMO_START_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "demo not ready:\n" + log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        printed = log.read_text(errors="replace")
        tokens = dict(re.findall(r"^  (paid_admin|member|free_admin):\n    (\S+)$", printed,
                                 re.M))
        service = re.search(r"^Service token: (\S+)$", printed, re.M)
        assert set(tokens) == set(USERS) and service, printed
        demo = Demo(url, tokens, service.group(1), database_url, "")
        # A partner's access token of the paid-plan admin (docs/access-tokens.md).
        created = demo.graphql('mutation { createAccessToken(name: "docs") { token } }')
        yield replace(demo, access_token=created["data"]["createAccessToken"]["token"])


# --- running blocks -------------------------------------------------------------------


def contains(expected: Any, actual: Any) -> bool:
    """``expected`` is in ``actual``: objects by their listed keys, lists item by item
    (same length), everything else equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (isinstance(actual, list) and len(expected) == len(actual)
                and all(contains(e, a) for e, a in zip(expected, actual, strict=True)))
    return bool(expected == actual)


def check_expected(block: Block, answer: Any) -> None:
    assert block.expected is not None
    wanted = json.loads(block.expected.text)
    assert contains(wanted, answer), (
        f"{block.id}: the answer does not hold {block.expected.id}:\n"
        f"{json.dumps(answer, indent=1)[:4000]}")


def run(argv: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=BLOCK_TIMEOUT_S)


def assert_ok(block: Block, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- block\n{block.text}--- stdout\n"
        f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def shell_segments(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell block: lines joined at ``\\``, comments dropped,
    split at ``&&``, ``||``, ``|`` and ``;``, leading ``VAR=value`` assignments dropped."""
    for line in text.replace("\\\n", " ").split("\n"):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", "|", ";"):
                while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                    words.pop(0)
                if words:
                    yield words
                words = []
            else:
                words.append(token)


def dry_check(block: Block, env: dict[str, str]) -> None:
    """A command too long or too wide to run here is checked without running it: its
    program exists, pytest collects the files it names, and every ``--option`` it uses
    is in the help of its program (and subcommand)."""
    for words in shell_segments(block.text):
        program = words[0]
        if program in ("export", "cd", "test"):
            continue
        assert shutil.which(program, path=env["PATH"]), f"{block.id}: no program {program!r}"
        if program in ("python", "python3") and words[1:2] == ["-m"]:
            command, args = [program, "-m", words[2]], words[3:]
            if words[2] == "pytest":
                files = [a for a in args if a not in ("-s", "-x")]
                assert_ok(block, run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                      "-p", "no:cacheprovider", "-n", "0", *files],
                                     env, ROOT))
                continue
        else:
            subcommands = []
            for word in words[1:]:
                if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                subcommands.append(word)
            command, args = [program, *subcommands], words[1 + len(subcommands):]
        done = run([*command, "--help"], env, ROOT)
        assert_ok(block, done)
        missing = [a.split("=")[0] for a in args
                   if a.startswith("--") and a.split("=")[0] not in done.stdout]
        assert not missing, f"{block.id}: {' '.join(command)} has no option {missing}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if "skip" in block.options:
        pytest.skip(block.options.get("reason", ""))
    if block.lang in SHOWN or block.lang not in RUN | PARSED:
        return  # illustration (or an unknown tag, reported by the test above)
    if block.lang == "json":
        json.loads(block.text)
        return
    demo: Demo = request.getfixturevalue("demo")
    env = demo.env()
    if block.lang == "graphql":
        answer = demo.graphql(block.text, block.options.get("as") or "paid_admin")
        if block.expected is not None:
            check_expected(block, answer)
        else:
            assert "errors" not in answer and answer.get("data"), f"{block.id}: {answer}"
        return
    if block.lang in ("bash", "sh"):
        if "dry" in block.options:
            dry_check(block, env)
            return
        done = run(["bash", "-e", "-o", "pipefail", "-c", block.text], env, ROOT)
    elif block.lang == "python":
        done = run([sys.executable, "-"], env, tmp_path, stdin=block.text)
    else:  # js, javascript: an ES module (top-level await)
        script = tmp_path / "block.mjs"
        script.write_text(block.text, encoding="utf-8")
        done = run(["node", str(script)], env, tmp_path)
    assert_ok(block, done)
    if block.expected is not None:
        check_expected(block, json.loads(done.stdout))


def test_readme_first_query_keys_add_up(demo: Demo) -> None:
    """The README's first query: every key's credits, the revoked one included, add up to
    the report's credits, as do the rows of the breakdown by key."""
    first = next(b for b in blocks_of(ROOT / "README.md") if b.lang == "graphql")
    answer = demo.graphql(first.text)
    assert "errors" not in answer, answer
    account = answer["data"]["account"]
    keys = account["apiKeys"]
    assert len(keys) == 7 and sum(k["revokedAt"] is not None for k in keys) == 1
    total = account["usage"]["credits"]
    assert sum(k["usage"]["credits"] for k in keys) == total
    assert sum(row["credits"] for row in account["usage"]["byKey"]) == total
    assert sum(b["credits"] for b in account["usage"]["series"]) == total
    # The query's month lies in the demo's 13 months while the clock is before ~Oct 2027.
    if datetime.now(UTC) - timedelta(days=390) < datetime(2026, 9, 1, tzinfo=UTC):
        assert total > 0
        revoked = next(k for k in keys if k["revokedAt"] is not None)
        assert revoked["usage"]["credits"] > 0  # without it the sum would fall short
