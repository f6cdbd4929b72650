"""Every exception filestore raises, under one root.

Each leaf also subclasses the builtin a caller would naturally catch
(``KeyError`` for a missing session, ``ValueError`` for bad input,
``TimeoutError`` for a lock wait), carries greentic's ``ErrorCode`` as
``code``, keeps its structured fields as attributes, and pickles (so errors
survive a trip through ``multiprocessing``). ``str(error)`` is greentic's
error Display, ``"{code}: {message}"`` (``NotFound: no session with key
k-1``); ``error.message`` is the bare message, the one to embed in another
message (``message_of``) or to write as data beside ``code.serde_name``.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, ClassVar

from filestore import serdejson


class ErrorCode(enum.StrEnum):
    """greentic-types' ``ErrorCode``.

    Its value (and ``str()``) is the Rust variant's name, as greentic's error
    Display writes it (``NotFound: message``). Written as data it is serde's
    spelling (``rename_all = "snake_case"``): ``serde_name``, ``to_json``.
    """

    UNKNOWN = "Unknown"
    INVALID_INPUT = "InvalidInput"
    NOT_FOUND = "NotFound"
    CONFLICT = "Conflict"
    TIMEOUT = "Timeout"
    UNAUTHENTICATED = "Unauthenticated"
    PERMISSION_DENIED = "PermissionDenied"
    RATE_LIMITED = "RateLimited"
    UNAVAILABLE = "Unavailable"
    INTERNAL = "Internal"

    @property
    def serde_name(self) -> str:
        """The code as serde writes it: ``not_found``, ``invalid_input``..."""
        return self.name.lower()

    def to_json(self) -> str:
        """serde_json's text for this code: ``"not_found"``."""
        return serdejson.dumps(self.serde_name)

    @classmethod
    def from_json(cls, text: str | bytes) -> ErrorCode:
        """Parse serde's spelling; ``InvalidInputError`` for anything else (``"NotFound"`` too)."""
        try:
            value = serdejson.loads(text)
        except (ValueError, RecursionError, TypeError) as error:
            raise InvalidInputError(
                f"error code: not valid JSON: {error}", field="code", rule="valid JSON"
            ) from None
        for code in cls:
            if value == code.serde_name:
                return code
        raise InvalidInputError(
            f"error code: {value!r} is not one of {', '.join(code.serde_name for code in cls)}"[:300],
            field="code",
            rule="a snake_case ErrorCode",
        )


class FilestoreError(Exception):
    """Root of every filestore exception; ``code`` is greentic's error code.

    ``str()`` is greentic-types' ``GreenticError`` Display, ``"{code:?}: {message}"``:
    the Rust variant name, a colon, the message (``InvalidInput: key: empty``).
    ``message`` is the message alone.
    """

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self._fields = fields
        for name, value in fields.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        # Defined here, not left to the bases: KeyError's own __str__ would repr() the message.
        return f"{self.code}: {self.message}"

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # Keyword fields are not in self.args, so default pickling would lose them.
        return functools.partial(type(self), self.message, **self._fields), ()


def message_of(error: BaseException) -> str:
    """The text of ``error`` to put inside another message: a ``FilestoreError``'s bare
    ``message`` (its code is the outer error's business), anything else's ``str()``."""
    return error.message if isinstance(error, FilestoreError) else str(error)


class SessionNotFoundError(FilestoreError, KeyError):
    """The session key is not in the store."""

    code = ErrorCode.NOT_FOUND
    key: str

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message, key=key)


class InvalidInputError(FilestoreError, ValueError):
    """Input that breaks a rule: a bad id, an oversized record, a malformed document.

    ``field`` names what was wrong (``"tenant_ctx.env"``, ``"key"``...) and
    ``rule`` the rule it broke. Nothing is stored when this is raised.
    """

    code = ErrorCode.INVALID_INPUT
    field: str
    rule: str

    def __init__(self, message: str, *, field: str = "", rule: str = "") -> None:
        super().__init__(message, field=field, rule=rule)


class TenantMismatchError(InvalidInputError):
    """The context fence: ``ctx`` and the session data disagree on who owns it.

    ``part`` is ``"env/tenant"``, ``"team"`` or ``"user"``.
    """

    part: str

    def __init__(self, message: str, *, part: str, field: str = "", rule: str = "") -> None:
        FilestoreError.__init__(self, message, part=part, field=field, rule=rule)


class CorruptionError(FilestoreError):
    """A store file is damaged where it cannot be repaired silently.

    ``path`` and ``offset`` say where; ``filestore fsck`` says more and repairs.
    On Redis, ``path`` is the key holding a value that does not decode, ``offset`` 0.
    """

    code = ErrorCode.INTERNAL
    path: str
    offset: int

    def __init__(self, message: str, *, path: str, offset: int) -> None:
        super().__init__(message, path=path, offset=offset)


class LockTimeoutError(FilestoreError, TimeoutError):
    """Waiting for a store lock took longer than the configured timeout."""

    code = ErrorCode.TIMEOUT
    path: str
    timeout: float

    def __init__(self, message: str, *, path: str, timeout: float) -> None:
        super().__init__(message, path=path, timeout=timeout)


class StoreClosedError(FilestoreError):
    """The store handle was closed (or was used from a forked child)."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)


class StorePoisonedError(FilestoreError):
    """A write, fsync or rename failed; this handle refuses writes until reopened.

    The call that raised it did not store its record (the subclass
    ``WriteInDoubtError`` says when it may have). ``cause`` is the text of the
    original error. Never retry an fsync: reopen, which re-reads and
    re-verifies the log tail.
    """

    code = ErrorCode.UNAVAILABLE
    path: str
    cause: str

    def __init__(self, message: str, *, path: str, cause: str) -> None:
        super().__init__(message, path=path, cause=cause)


class WriteInDoubtError(StorePoisonedError):
    """A write's record was written whole but the sync that would make it durable failed.

    The call cannot know whether the record survives: a reopen may show it
    (the page cache held it) or not (a power loss came first). Read the
    session back after reopening before retrying, or a retried create may
    store a second session. Unlike its base class, which means "not stored",
    this one means "may be stored". The handle is poisoned, as with the base.
    """


class StoreFullError(FilestoreError):
    """A write found no room on the disk (ENOSPC, EDQUOT): nothing of it was stored.

    The log is exactly as it was, so the handle is not poisoned: once there is
    room again the same handle writes. ``cause`` is the text of the original error.
    """

    code = ErrorCode.UNAVAILABLE
    path: str
    cause: str

    def __init__(self, message: str, *, path: str, cause: str) -> None:
        super().__init__(message, path=path, cause=cause)


class StoreInUseError(FilestoreError):
    """An offline tool needs the store to itself but other handles have it open."""

    code = ErrorCode.CONFLICT
    path: str

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)


class UnsupportedFilesystemError(FilestoreError):
    """The store directory is on a network file system, where locks are unreliable."""

    code = ErrorCode.UNAVAILABLE
    path: str
    fstype: str

    def __init__(self, message: str, *, path: str, fstype: str) -> None:
        super().__init__(message, path=path, fstype=fstype)


class UnsupportedPlatformError(FilestoreError):
    """The operating system is not one whose syncs the store's durability promises rest on.

    Only Linux is supported and tested: on macOS ``fsync`` returns before the
    data reaches the disk, so a store there would promise more than it keeps.
    Raised before anything is made or read; ``platform`` is ``sys.platform``.
    """

    code = ErrorCode.UNAVAILABLE
    path: str
    platform: str

    def __init__(self, message: str, *, path: str, platform: str) -> None:
        super().__init__(message, path=path, platform=platform)


class UntrustedDirectoryError(FilestoreError, PermissionError):
    """The store directory, or a store file in it, is owned by another uid or writable by others.

    Whoever else may write there could plant a session this store would
    serve, or read the ones it writes. ``path`` is what was refused, ``uid``
    its owner, ``mode`` its permission bits; the message says what to fix.
    ``trust_directory=True`` opts out, for a deliberately shared directory.
    """

    code = ErrorCode.PERMISSION_DENIED
    path: str
    uid: int
    mode: int

    def __init__(self, message: str, *, path: str, uid: int, mode: int) -> None:
        super().__init__(message, path=path, uid=uid, mode=mode)


class StoreReadOnlyError(FilestoreError, PermissionError):
    """The store cannot be written by this process, and what was asked needs to write it.

    Its directory or files are read-only to this account, or its file system
    is mounted read-only. ``path`` is the file that could not be opened or
    made for writing. Checking and reading need no write access: ``fsck``
    without ``repair`` and ``stats`` work on a read-only store.
    """

    code = ErrorCode.PERMISSION_DENIED
    path: str

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message, path=path)


class BackendUnavailableError(FilestoreError):
    """A store's server (Redis) is unreachable or failing; ``address`` says which.

    A write that raised this may or may not have been applied, never half.
    """

    code = ErrorCode.UNAVAILABLE
    address: str

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message, address=address)
