"""The engine's batch hook for the async store (``Writing._append_calls`` and ``_sync_through``):
write calls appended together under one lock, each with its own outcome, none synced until asked."""

from __future__ import annotations

from pathlib import Path

from filestore import FileSessionStore, ReplyScope, SessionNotFoundError, StorePoisonedError
from filestore.engine.groupcommit import LogPosition

from .support import ctx, data
from .support.fileio import Call, FailingIO, HookedIO


def test_a_batch_appends_each_call_and_syncs_only_when_asked(tmp_path: Path) -> None:
    """Each call's result or error is its own; only calls that wrote say so; no fdatasync until
    ``_sync_through``, which then makes the whole batch durable with one."""
    io = HookedIO()
    with FileSessionStore(tmp_path / "s", durability="group", io=io) as store:
        key = store.create_session(ctx(), data())
        syncs = io.calls["sync_data"]
        outcomes, position = store._append_calls(
            [
                lambda: store.update_session(key, data(step=1)),
                lambda: store.update_session("no-such-key", data()),
                lambda: store.create_session(ctx(), data(step=2)),
                lambda: store.clear_wait(ctx(), "u1", ReplyScope(conversation="c")),
            ]
        )
        assert [outcome.wrote for outcome in outcomes] == [True, False, True, False]
        assert isinstance(outcomes[1].error, SessionNotFoundError)
        assert [outcome.error for outcome in (outcomes[0], outcomes[2], outcomes[3])] == [None, None, None]
        created = outcomes[2].result
        assert isinstance(created, str)
        assert io.calls["sync_data"] == syncs
        assert position is not None
        assert position.seq == 3
        store._sync_through(position)
        assert io.calls["sync_data"] == syncs + 1
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(key) == data(step=1)
        assert reopened.get_session(created) == data(step=2)


def test_a_batch_of_nothing_to_write_has_no_position(tmp_path: Path) -> None:
    """A batch whose calls all wrote nothing has no position to sync through."""
    with FileSessionStore(tmp_path / "s", durability="group") as store:
        outcomes, position = store._append_calls([lambda: store.get_session("k")])
        assert outcomes[0].result is None
        assert not outcomes[0].wrote
        assert position is None
        store._sync_through(LogPosition(0, 0))


def test_calls_after_one_that_poisoned_are_refused_unwritten(tmp_path: Path) -> None:
    """A call whose write fails poisons the handle: it and every later call of the batch raise
    StorePoisonedError, and nothing of theirs is stored; the earlier call's record stays."""
    io = FailingIO()
    with FileSessionStore(tmp_path / "s", durability="group", io=io) as store:
        key = store.create_session(ctx(), data())
        writes = 0

        def fail_second_write(call: Call) -> None:
            nonlocal writes
            if call.operation == "pwrite":
                writes += 1
                if writes == 1:  # the first call's record is written: the next write fails
                    io.fail_on = "pwrite"

        io.after = fail_second_write  # type: ignore[method-assign]
        outcomes, _position = store._append_calls(
            [
                lambda: store.update_session(key, data(step=1)),
                lambda: store.update_session(key, data(step=2)),
                lambda: store.update_session(key, data(step=3)),
            ]
        )
        assert outcomes[0].error is None
        assert outcomes[0].wrote
        assert isinstance(outcomes[1].error, StorePoisonedError)
        assert isinstance(outcomes[2].error, StorePoisonedError)
        assert not outcomes[2].wrote
        later, _nothing = store._append_calls([lambda: store.update_session(key, data(step=4))])
        assert isinstance(later[0].error, StorePoisonedError)
    with FileSessionStore(tmp_path / "s") as reopened:
        assert reopened.get_session(key) == data(step=1)
