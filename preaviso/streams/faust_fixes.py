"""The one place where Preaviso changes faust-streaming's behaviour: seek before resume.

faust-streaming 0.15.3 ends a table recovery (``Recovery.on_recovery_completed``,
or ``Recovery._resume_streams`` when there is nothing to restore) by *first*
resuming the stream partitions, *then* awaiting ``perform_seek()`` to rewind them to
the committed offsets, and *then* calling ``app.flow_control.resume()``, which
clears every agent queue. While the seek is awaited the fetcher is running (flow
was resumed to read the changelogs), so records of the stream partitions are
fetched, put into the agents' queues and recorded as read. The queues are then
cleared, and the re-fetched copies fall below the recorded read offset and are
dropped ("DROPPED MESSAGE ROFF"). The commit then either freezes at the hole (a
stalled partition) or, when Faust treats the jump as a gap, moves past it: the
notices are lost. Write-up and reproducer: docs/faust-recovery-bug.md.

The fix keeps Faust's steps and changes their order: seek while the stream
partitions are still paused (nothing of theirs can be in flight), clear the
queues (only records from before the rebalance can be there), and only then
resume the partitions, so the first record fetched is the committed one.
"""

from __future__ import annotations

from typing import Any

from faust.tables.recovery import Recovery

__all__ = ["applied", "apply", "revert"]

_ORIGINAL = {
    "on_recovery_completed": Recovery.on_recovery_completed,
    "_resume_streams": Recovery._resume_streams,
}


async def _seek_then_resume(recovery: Any) -> None:
    """Rewind the paused stream partitions, drop stale queued records, then fetch."""
    app = recovery.app
    consumer = app.consumer
    assignment = consumer.assignment()
    streams = {tp for tp in assignment if not recovery._is_changelog_tp(tp)}
    if assignment:
        recovery.log.info("Seek stream partitions to committed offsets (paused).")
        await recovery._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    recovery.completed.set()
    app.flow_control.resume()  # clears the queues: nothing fetched since the seek is there
    consumer.resume_partitions(streams)
    consumer.resume_flow()
    await app._fetcher.maybe_start()


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed`` with the seek moved before the resume."""
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    for table in self.tables.values():
        await table.on_recovery_completed(
            self.actives_for_table[table], self.standbys_for_table[table]
        )
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again: generation %r", generation_id)
        return
    await _seek_then_resume(self)
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery._resume_streams`` (nothing to restore) with the same order."""
    await self.app.on_rebalance_complete.send()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again: generation %r", generation_id)
        return
    await _seek_then_resume(self)
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def apply() -> None:
    """Install the fix (idempotent); ``create_app`` calls it for every app."""
    setattr(Recovery, "on_recovery_completed", on_recovery_completed)  # noqa: B010
    setattr(Recovery, "_resume_streams", _resume_streams)  # noqa: B010


def revert() -> None:
    """Restore Faust's own order: the regression test uses it to show the bug."""
    for name, original in _ORIGINAL.items():
        setattr(Recovery, name, original)


def applied() -> bool:
    return getattr(Recovery, "on_recovery_completed", None) is on_recovery_completed
