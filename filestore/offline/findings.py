"""What fsck reports: a finding (kind, file, offset, detail), its severity, and what repair did."""

from __future__ import annotations

import enum

import attrs


class FsckSeverity(enum.StrEnum):
    ERROR = "error"
    NOTE = "note"


class FsckAction(enum.StrEnum):
    """What repair did about a finding; anything but ``NONE`` corrected it."""

    NONE = "none"  # nothing (no --repair, or nothing repair can do)
    CUT = "cut"  # bytes at the log's end cut, kept in a side file
    REWROTE_LOG = "rewrote-log"  # the log rewritten as a new generation, the old one kept
    REWROTE_IDENTITY = "rewrote-identity"  # from the log header, the old file kept
    WROTE_SNAPSHOT = "wrote-snapshot"  # from the log
    REMOVED = "removed"  # a temp file


@attrs.define
class FsckFinding:
    """One thing fsck found: what, where, and what repair did about it.

    ``outcome`` says the ``action`` in words, naming the file that keeps the
    evidence (side file, old log) where there is one.
    """

    kind: str
    severity: FsckSeverity
    file: str
    offset: int | None
    detail: str
    action: FsckAction = FsckAction.NONE
    outcome: str = ""

    def resolve(self, action: FsckAction, outcome: str) -> None:
        """Record that repair took ``action`` (described by ``outcome``)."""
        self.action, self.outcome = action, outcome

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity.value,
            "file": self.file,
            "offset": self.offset,
            "detail": self.detail,
            "action": self.action.value,
            "outcome": self.outcome,
        }
