"""I/O error loops: fail the Nth file operation with EIO or ENOSPC, for every N.

For each N the workload runs until the fault fires (once, or on every
operation from then on). Then faults are switched off, the store reopened,
and: every acknowledged call is present, the call that failed is fully
present or fully absent, and the failing handle refused every write after
its error, except after ``StoreFullError`` (no room, the log as it was),
when it goes on writing. Faults also hit recovery itself (a torn tail being cut).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from filestore import FileSessionStore, FilestoreError, SessionKey, StoreFullError, StorePoisonedError
from filestore.engine.fileio import FileIO, OsFileIO, is_plain
from filestore.offline.fsck import fsck

from .support import ctx, data
from .support.fileio import FaultyIO, HookedIO, os_error

Expected = dict[str, str | None]
# The workload: (verb, step) pairs; the steps make distinct session contents.
STEPS = (("create", 1), ("update", 2), ("create", 3), ("remove", 0), ("snapshot", 0))


def run_with_fault(directory: Path, fail_at: int, error: int, persistent: bool) -> bool:
    """One iteration of the loop; returns whether the fault fired."""
    io = FaultyIO(fail_at, os_error(error), persistent=persistent)
    acknowledged: Expected = {}
    keys: list[SessionKey] = []
    in_flight: tuple[str, int] | None = ("open", 0)
    store: FileSessionStore | None = None
    failure: BaseException | None = None
    try:
        store = FileSessionStore(directory, io=io)
        for verb, step in STEPS:
            in_flight = (verb, step)
            if verb == "create":
                keys.append(store.create_session(ctx(), data(step=step)))
                acknowledged[keys[-1]] = data(step=step).to_json()
            elif verb == "update":
                store.update_session(keys[0], data(step=step))
                acknowledged[keys[0]] = data(step=step).to_json()
            elif verb == "remove":
                store.remove_session(keys[0])
                acknowledged[keys[0]] = None
            else:
                store.write_snapshot()
        in_flight = None
    except (FilestoreError, OSError) as raised:
        assert io.fired
        failure = raised
    assert (in_flight is not None) == io.fired
    if store is not None:
        if io.fired and isinstance(failure, StoreFullError):
            # No room, and the log left as it was: the handle goes on writing.
            io.enabled = False
            keys.append(store.create_session(ctx(), data(step=9)))
            acknowledged[keys[-1]] = data(step=9).to_json()
        elif io.fired:
            # The failing handle refuses every later write, faults or not.
            io.enabled = False
            with pytest.raises(StorePoisonedError):
                store.create_session(ctx(), data(step=9))
        io.enabled = False
        store.close()
    io.enabled = False
    with FileSessionStore(directory) as reopened:
        found: Expected = {str(key): None for key in acknowledged}
        for key in reopened.session_keys():
            session = reopened.get_session(key)
            found[str(key)] = None if session is None else session.to_json()
    allowed = [acknowledged]
    if in_flight is not None and in_flight[0] == "create":
        extra = [key for key in found if key not in acknowledged]
        if extra:
            allowed.append({**acknowledged, extra[0]: data(step=in_flight[1]).to_json()})
    elif in_flight is not None and in_flight[0] == "update":
        allowed.append({**acknowledged, keys[0]: data(step=in_flight[1]).to_json()})
    elif in_flight is not None and in_flight[0] == "remove":
        allowed.append({**acknowledged, keys[0]: None})
    assert found in allowed, f"N={fail_at}: {in_flight} left the store in a state never acknowledged"
    assert not fsck(directory).errors
    return io.fired


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize("persistent", [False, True], ids=["once", "persistent"])
def test_fault_at_every_operation(tmp_path: Path, error: int, persistent: bool) -> None:
    """For N = 1, 2, ... until the workload completes: nothing acknowledged is lost."""
    fail_at = 1
    while run_with_fault(tmp_path / f"n{fail_at}", fail_at, error, persistent):
        fail_at += 1
    print(f"I/O fault loop ({os.strerror(error)}, persistent={persistent}): {fail_at - 1} failure points")
    assert fail_at > 10


def test_fault_during_recovery(tmp_path: Path) -> None:
    """Faults while cutting a torn tail: open fails cleanly; without faults it recovers fully."""
    directory = tmp_path / "s"
    with FileSessionStore(directory, preallocate_bytes=0) as store:
        key = store.create_session(ctx(), data(step=1))
    with (directory / "sessions.log").open("ab") as log:
        log.write(b"\xf5\x1e torn record")
    fail_at = 1
    while True:
        io = FaultyIO(fail_at, os_error(errno.EIO), persistent=False)
        try:
            FileSessionStore(directory, io=io).close()
        except (FilestoreError, OSError):
            assert io.fired
        else:
            break
        with FileSessionStore(directory) as store:
            assert store.get_session(key) == data(step=1)
        with (directory / "sessions.log").open("ab") as log:
            log.write(b"\xf5\x1e torn again")
        fail_at += 1
    assert fail_at > 2


def test_the_io_doubles_hook_every_file_operation() -> None:
    """Each FileIO call the engine can make passes the doubles' hook, so no fault point is missed.

    ``write_file`` and ``read_file`` are built from the other calls on ``self``, so are hooked through them.
    """
    operations = {name for name in dir(FileIO) if not name.startswith("_")} - {"write_file", "read_file"}
    assert operations <= set(vars(HookedIO)), operations - set(vars(HookedIO))


def test_the_hot_path_calls_os_itself_only_where_the_seam_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """``is_plain`` is true only for FileIO's own operations: one a subclass, the instance or a
    patch of FileIO replaces is never bypassed by the write path's direct ``os`` calls."""
    plain = OsFileIO()
    assert all(is_plain(plain, name) for name in ("pwrite", "pread", "size", "sync_data"))
    hooked = HookedIO()
    assert not any(is_plain(hooked, name) for name in ("pwrite", "pread", "size"))
    replaced = OsFileIO()
    replaced.pwrite = plain.pwrite  # type: ignore[method-assign]
    assert not is_plain(replaced, "pwrite")
    assert is_plain(replaced, "pread")
    monkeypatch.setattr(FileIO, "size", lambda self, fd: 0)
    assert not is_plain(plain, "size")


def test_every_write_and_look_passes_a_seam_that_overrides_them(tmp_path: Path) -> None:
    """With a FileIO double, each create, update and remove writes its record through the
    double's ``pwrite`` (once each, no preallocation here) and looks for new records through
    its ``pread``: fault injection and crash recording see every write the store makes."""
    io = HookedIO()
    with FileSessionStore(tmp_path / "store", io=io, preallocate_bytes=0, durability="none") as store:
        before = io.calls.copy()
        key = store.create_session(ctx(), data(step=1))
        store.update_session(key, data(step=2))
        store.remove_session(key)
        done = io.calls - before
    assert done["pwrite"] == 3
    assert done["pread"] >= 3
    assert done["size"] >= 3
