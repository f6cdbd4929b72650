"""The ```sh blocks of README.md and docs/*.md run against the real `filestore` entry point.

Each block runs in a fresh directory with a `filestore` on PATH that is this checkout's
`python -m filestore`. The docs speak of an operator's store at `/var/lib/runner/sessions`
and of a server `redis.internal`: the block gets a copy of `documented_store` in the place of
the one and the test Redis server (`support/redis_server.py`) in the place of the other (the
test cluster and Sentinel group of `support/redis_cluster.py` in the place of the documented
cluster and Sentinels, each in a namespace of its own, emptied after), and a `backup.jsonl`
exported from it, as the export example leaves. Every command must exit 0. In a
block whose commands start with `$ `, the lines under a command are its stdout, compared with
what it printed (store UUIDs and a snapshot's age, which change from run to run, excepted).

A block that cannot run here is marked, on the line right before its fence (a run of comment
lines may stand there), with `<!-- not run: REASON -->`; any other block that fails is a doc
that does not say what is true. docs/benchmarks.md is left out as a whole: its blocks are
benchmark runs of minutes (`tools/bench`, smoke-run by `tests/test_bench.py`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from filestore import FileSessionStore, SessionCursor, SessionData, TenantCtx, main, open_store
from tests.support.installed import installed_mode
from tests.support.redis_cluster import cluster_url, sentinel_group
from tests.support.redis_server import drop_namespace, redis_url

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name != "benchmarks.md"),
]
FENCE = re.compile(r"^```(\S*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")
COMMENT = re.compile(r"^<!--.*-->$")

OPERATOR_STORE = "/var/lib/runner/sessions"
DOCUMENTED_REDIS = "redis://redis.internal:6379/0"
DOCUMENTED_CLUSTER = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000?namespace=greentic:session"
DOCUMENTED_SENTINEL = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster"
# The namespace the Redis examples write to (the default, also named in cli.md's URL).
DOCUMENTED_NAMESPACE = "greentic:session"
# Changes from run to run: a new store's UUID, and a snapshot's age.
UNSTABLE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"written [0-9.]+ s ago"), "written <age> s ago"),
]


@dataclass(frozen=True)
class ShellBlock:
    document: Path
    line: int
    text: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.document.name}:{self.line}"


def shell_blocks(document: Path) -> list[ShellBlock]:
    """The ```sh blocks of a document, each with the reason it is not run, if marked."""
    text = document.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "sh":
            continue
        before = text[: match.start()].splitlines()
        reason = None
        while before and COMMENT.match(before[-1]):
            marked = NOT_RUN.match(before.pop())
            reason = marked.group(1) if marked else reason
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(ShellBlock(document, line, match.group(2), reason))
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in shell_blocks(document)]


def commands(block: str) -> list[tuple[str, list[str] | None]]:
    """Each command of a block (continuation lines joined) and the stdout the block shows for it.

    Without a `$ ` line, every line is a command and no output is shown; a `#` starts a comment.
    """
    lines = block.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    result: list[tuple[str, list[str] | None]] = []
    pending = ""
    for text in lines:
        if prompted and not text.startswith("$ ") and not pending:
            expected = result[-1][1]
            assert expected is not None, f"output before the first command: {text!r}"
            expected.append(text)
            continue
        line = text.removeprefix("$ ") if prompted else text
        if pending:
            line = line.strip()
        if line.endswith("\\"):
            pending += line.rstrip("\\").rstrip() + " "
            continue
        command, pending = (pending + line).strip(), ""
        if command and not command.startswith("#"):
            result.append((command, [] if prompted else None))
    return result


def documented_store(directory: Path) -> None:
    """The store cli.md's examples show: 310 sessions of about 1 KiB (297 users, 13 of them with
    a second, newer session), then 894 updates: 1,204 records, of which compaction keeps 310."""
    env = TenantCtx.new("prod", "acme").with_team("support")
    with FileSessionStore(directory, durability="none") as store:
        keys = []
        for number in range(310):
            ctx = env.with_user(f"user-{number % 297:03}")
            data = SessionData(ctx, "onboarding.flow", SessionCursor("ask.email", "input"), "{}")
            keys.append(store.create_session(ctx, data))
        for step in range(894):
            key = keys[step % 310]
            ctx = env.with_user(f"user-{step % 310 % 297:03}")
            context = json.dumps({"step": step % 1000, "notes": "x" * 900})
            data = SessionData(ctx, "onboarding.flow", SessionCursor("ask.email"), context)
            store.update_session(key, data)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented store and its export as `backup.jsonl`, built once and copied for every block."""
    root = tmp_path_factory.mktemp("documented")
    documented_store(root / "sessions")
    with open(root / "backup.jsonl", "w", encoding="utf-8") as backup:
        assert main(["export", str(root / "sessions"), "--output", backup.name]) == 0
    return root


def normalise(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        stable = line.rstrip()
        for pattern, replacement in UNSTABLE:
            stable = pattern.sub(replacement, stable)
        out.append(stable)
    return out


def shell_environment(bin_directory: Path) -> dict[str, str]:
    """The `filestore` under test first on PATH, as `.venv/bin/filestore` would be: the installed
    package's own script when the suite tests an install (FILESTORE_TEST_INSTALLED=1), else this
    checkout's `python -m filestore`."""
    shim = bin_directory / "filestore"
    environment = dict(os.environ)
    if installed_mode():
        shim.symlink_to(Path(sys.executable).with_name("filestore"))
    else:
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m filestore "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
        environment["PYTHONPATH"] = str(ROOT)
    environment["PATH"] = f"{bin_directory}{os.pathsep}{environment.get('PATH', '')}"
    return environment


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_shell_block_runs(block: ShellBlock, template: Path, tmp_path: Path) -> None:
    """Every command of the block exits 0, printing what the block shows under it (if anything)."""
    if block.not_run is not None:
        pytest.skip(f"marked not run: {block.not_run}")
    text = block.text
    uses_redis = DOCUMENTED_REDIS in text
    if uses_redis:
        text = text.replace(DOCUMENTED_REDIS, redis_url())  # skips if redis-server is missing
        drop_namespace(DOCUMENTED_NAMESPACE)
    scaled_out = []
    namespace = f"docs-{tmp_path.name}"
    if DOCUMENTED_CLUSTER in text:
        scaled_out.append(cluster_url(namespace))
        text = text.replace(DOCUMENTED_CLUSTER, scaled_out[-1])
    if DOCUMENTED_SENTINEL in text:
        scaled_out.append(sentinel_group().url(namespace))
        text = text.replace(DOCUMENTED_SENTINEL, scaled_out[-1])
    for tool in ("jq",):
        if re.search(rf"\|\s*{tool}\b", text) and shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    work = tmp_path / "work"
    shutil.copytree(template, work)
    store = work / "sessions"
    environment = shell_environment(tmp_path)
    bash = shutil.which("bash")
    assert bash is not None, "the docs' blocks are bash"
    try:
        ran = 0
        for command, expected in commands(text):
            done = subprocess.run(
                [bash, "-o", "pipefail", "-c", command.replace(OPERATOR_STORE, str(store))],
                cwd=work,
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            where = f"{block.name}: {command}"
            assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stderr}"
            if expected:
                printed = done.stdout.replace(str(store), OPERATOR_STORE).splitlines()
                assert normalise(printed) == normalise(expected), where
            ran += 1
        assert ran >= 1, f"{block.name}: no command in the block"
    finally:
        if uses_redis:
            drop_namespace(DOCUMENTED_NAMESPACE)
        for url in scaled_out:
            _empty(url)


def _empty(url: str) -> None:
    """Remove every session of the store at ``url`` (with its lookups and waits)."""
    store = open_store(url)
    try:
        for stored in list(store.iter_sessions()):
            store.remove_session(stored.key)
    finally:
        store.close()


def test_blocks_found() -> None:
    """The README's and the docs' blocks are found, none empty, and most of them run."""
    names = {block.document.name for block in BLOCKS}
    assert {"README.md", "cli.md", "scaling-out.md"} <= names
    assert all(block.text.strip() for block in BLOCKS)
    assert sum(block.not_run is None for block in BLOCKS) > len(BLOCKS) / 2


def test_commands_parse_prompts_and_continuations() -> None:
    """A `$ ` block pairs each command with the lines under it; `\\` joins a command's lines."""
    assert commands("$ a b\nout 1\nout 2\n$ c\n") == [("a b", ["out 1", "out 2"]), ("c", [])]
    assert commands("a \\\n  --x 1\n# note\nb\n") == [("a --x 1", None), ("b", None)]


def test_not_run_marker_is_read(tmp_path: Path) -> None:
    """Only a `not run:` comment right before the fence marks a block; other comments may stand with it."""
    document = tmp_path / "doc.md"
    document.write_text(
        "<!-- not run: needs a second host -->\n<!-- other -->\n```sh\nssh a\n```\n\n"
        "<!-- not run: too far above -->\n\n```sh\nls\n```\n```python\nx = 1\n```\n",
        encoding="utf-8",
    )
    blocks = shell_blocks(document)
    assert [(block.line, block.not_run) for block in blocks] == [(3, "needs a second host"), (9, None)]
