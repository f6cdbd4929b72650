"""FileIO doubles: the real file layer with a hook around every call, and the policies tests put there.

``HookedIO`` does each call for real, counts it, and passes it through
``before`` and ``after``; a policy overrides one of them:

- ``FaultyIO``: the Nth mutating call fails (OSError, or ``SimulatedCrash``
  for ``crashing_io``), and, if persistent, every mutating call after it;
- ``FailingIO``: every call of one named operation fails while armed;
- ``ExitAt``: the process ends (``os._exit(3)``, no clean-up, as a kill) just
  before or just after the Nth call of one operation on one file name;
- ``ReadOnlyIO``: any call that could change a file fails the test;
- ``SyncLedger``: every record written and every fdatasync, in order, with
  the inode each hit (did a sync of the current log follow a write's record?).

``crashsim.RecordingIO`` is not one of them: it models what the page cache
holds, so it lives with the crash simulator.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

import attrs

from filestore.engine.fileio import OsFileIO
from filestore.engine.framing import RECORD_MAGIC

# "create" is an open that may create the file; an open of an existing file
# changes nothing and is "open".
MUTATING: Final = frozenset(
    {"create", "pwrite", "truncate", "sync_data", "rename", "link", "unlink", "sync_dir"}
)


@attrs.frozen
class Call:
    """One call on the file layer: its operation and the path it names ("" for a descriptor)."""

    operation: str  # open | create | open_readonly | close | pread | size, or one of MUTATING
    path: str = ""  # rename and link: the target


class HookedIO(OsFileIO):
    """The real file layer; every call is counted in ``calls`` and passed to ``before`` and ``after``.

    Counting is thread-safe, so writers on several threads can share one.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def before(self, call: Call) -> None:
        """Called before ``call`` is done; an exception raised here means it is never done."""
        with self._lock:
            self.calls[call.operation] += 1

    def after(self, call: Call) -> None:
        """Called once ``call`` has been done."""

    @contextlib.contextmanager
    def _hooked(self, call: Call) -> Iterator[None]:
        self.before(call)
        yield
        self.after(call)  # not reached when the call raised

    def open(self, path: str, *, create: bool = False, exclusive: bool = False, mode: int = 0o600) -> int:
        with self._hooked(Call("create" if create or exclusive else "open", path)):
            return super().open(path, create=create, exclusive=exclusive, mode=mode)

    def open_readonly(self, path: str) -> int:
        with self._hooked(Call("open_readonly", path)):
            return super().open_readonly(path)

    def close(self, fd: int) -> None:
        with self._hooked(Call("close")):
            super().close(fd)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        with self._hooked(Call("pwrite")):
            super().pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        with self._hooked(Call("pread")):
            return super().pread(fd, size, offset)

    def size(self, fd: int) -> int:
        with self._hooked(Call("size")):
            return super().size(fd)

    def sync_data(self, fd: int) -> None:
        with self._hooked(Call("sync_data")):
            super().sync_data(fd)

    def truncate(self, fd: int, size: int) -> None:
        with self._hooked(Call("truncate")):
            super().truncate(fd, size)

    def rename(self, source: str, target: str) -> None:
        with self._hooked(Call("rename", target)):
            super().rename(source, target)

    def link(self, source: str, target: str) -> None:
        with self._hooked(Call("link", target)):
            super().link(source, target)

    def unlink(self, path: str) -> None:
        with self._hooked(Call("unlink", path)):
            super().unlink(path)

    def sync_dir(self, path: str) -> None:
        with self._hooked(Call("sync_dir", path)):
            super().sync_dir(path)


def os_error(code: int) -> Callable[[], OSError]:
    """A fault: the OSError the kernel would raise with ``code`` (``errno.EIO``, ``errno.ENOSPC``)."""
    return lambda: OSError(code, os.strerror(code))


class FaultyIO(HookedIO):
    """Counts mutating calls; the ``fail_at``-th raises ``fault()``, and, if ``persistent``, every later one.

    With ``done=True`` the first call from the ``fail_at``-th on that completes then raises
    (an interrupt arriving just after a rename, say); later ones never run.
    ``enabled = False`` stops both counting and failing (the tests then reopen
    the store through the same object); ``fired`` says whether the fault was raised.
    """

    def __init__(
        self, fail_at: int, fault: Callable[[], BaseException], *, persistent: bool, done: bool = False
    ) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.fault = fault
        self.persistent = persistent
        self.done = done
        self.count = 0
        self.fired = False
        self.enabled = True

    def before(self, call: Call) -> None:
        super().before(call)
        if not self.enabled or call.operation not in MUTATING:
            return
        self.count += 1
        if (self.count == self.fail_at and not self.done) or (self.persistent and self.fired):
            self.fired = True
            raise self.fault()

    def after(self, call: Call) -> None:
        due = self.enabled and self.done and call.operation in MUTATING and self.count >= self.fail_at
        if due and not self.fired:
            self.fired = True
            raise self.fault()


class SimulatedCrash(BaseException):
    """Raised by ``crashing_io``: the process 'dies' here (the page cache survives, as in a kill)."""


def crashing_io(crash_at: int) -> FaultyIO:
    """A file layer that crashes at the ``crash_at``-th mutating call, and at every one after it.

    Crashing again afterwards means clean-up code on the way out (``finally``,
    ``except BaseException``) cannot tidy up what a dead process would have
    left behind.
    """
    return FaultyIO(crash_at, SimulatedCrash, persistent=True)


class FailingIO(HookedIO):
    """Fails every call of the operation named by ``fail_on`` (``None``: none) with ``OSError(error)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_on: str | None = None
        self.error = errno.EIO

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation == self.fail_on:
            raise os_error(self.error)()


class ExitAt(HookedIO):
    """Ends the process with ``os._exit(3)`` just before (or ``after``) the ``nth`` call of ``operation``.

    Only calls naming a file called ``name`` count, when ``name`` is given
    (for a rename or link, the target's name).
    """

    def __init__(self, operation: str, *, nth: int = 1, after: bool = False, name: str | None = None) -> None:
        super().__init__()
        self.operation = operation
        self.nth = nth
        self.exit_after = after
        self.name = name
        self.seen = 0

    def _matches(self, call: Call) -> bool:
        return call.operation == self.operation and (
            self.name is None or os.path.basename(call.path) == self.name
        )

    def before(self, call: Call) -> None:
        super().before(call)
        if self._matches(call):
            self.seen += 1
            if self.seen == self.nth and not self.exit_after:
                os._exit(3)

    def after(self, call: Call) -> None:
        if self._matches(call) and self.seen == self.nth and self.exit_after:
            os._exit(3)


class ReadOnlyIO(HookedIO):
    """Fails the test on any call that could change a file, including opening one read-write."""

    def before(self, call: Call) -> None:
        super().before(call)
        if call.operation == "open" or call.operation in MUTATING:
            raise AssertionError(f"{call.operation} {call.path}".rstrip())


@attrs.frozen
class Landed:
    """One event ``SyncLedger`` saw: a record written (``"record"``) or an fdatasync that
    completed (``"sync"``), on the file with inode ``inode``, by thread ``thread``."""

    event: str
    inode: int
    thread: int


class SyncLedger(HookedIO):
    """Notes every record written (a ``pwrite`` starting with the record magic) and every
    completed fdatasync, in order, with the inode of the file each hit and the thread.

    The inode, not the path: a compaction renames a new file over the log, and
    a sync through an old descriptor must not pass for a sync of the new log.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ledger: list[Landed] = []

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        super().pwrite(fd, data, offset)
        if data.startswith(RECORD_MAGIC):
            self._note("record", fd)

    def sync_data(self, fd: int) -> None:
        super().sync_data(fd)
        self._note("sync", fd)

    def _note(self, event: str, fd: int) -> None:
        landed = Landed(event, os.fstat(fd).st_ino, threading.get_ident())
        with self._lock:
            self.ledger.append(landed)

    def mark(self) -> int:
        """Where the ledger ends now: pass it as ``since`` or ``until`` below."""
        with self._lock:
            return len(self.ledger)

    def records_and_syncs(self, since: int, until: int) -> tuple[list[int], int]:
        """Among the events from ``since`` to ``until``: the inodes of the records this thread
        wrote, and how many fdatasyncs of the last one's inode completed after it (by any thread)."""
        with self._lock:
            events = self.ledger[since:until]
        me = threading.get_ident()
        mine = [
            number for number, landed in enumerate(events) if landed.event == "record" and landed.thread == me
        ]
        if not mine:
            return [], 0
        inode = events[mine[-1]].inode
        syncs = [
            landed for landed in events[mine[-1] + 1 :] if landed.event == "sync" and landed.inode == inode
        ]
        return [events[number].inode for number in mine], len(syncs)
