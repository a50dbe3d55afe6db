"""Deliberate changes to the Relationship workflow, for the replay tests.

Each variant registers as "Relationship", like the real one, and adds one step before every
append to the event store (a point every phase passes through): a timer or an activity.
Unguarded, old histories do not contain that step, so replaying them must fail with a
non-determinism error; behind `workflow.patched(...)`, replaying old histories skips it and
must succeed, while new workflows take it. Kept in a module of their own because the
workflow sandbox re-imports the module a workflow class is defined in.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from events.model import RelationshipSummary
    from events.store import ReadStreamRequest, StreamOwner
    from workflows.relationship import Relationship, StartInput

PATCH_ID = "pause-before-append"


async def _extra_timer() -> None:
    await workflow.sleep(timedelta(seconds=1), summary="A new pause before storing events")


async def _extra_activity(relationship: Relationship) -> None:
    await workflow.execute_activity(
        "read_stream",
        ReadStreamRequest(
            stream_id=relationship.current.relationship_id,
            after_version=0,
            owner=StreamOwner(programme_id=relationship.current.programme_id, workflow_id=workflow.info().workflow_id),
        ),
        start_to_close_timeout=timedelta(seconds=30),
        summary="A new read before storing events",
    )


@workflow.defn(name="Relationship")
class UnpatchedTimer(Relationship):
    """Incompatible: a timer before every flush, for old and new workflows alike."""

    @workflow.run
    async def run(self, input: StartInput) -> RelationshipSummary:
        return await super().run(input)

    async def _flush(self) -> None:
        if self._outbox:
            await _extra_timer()
        await super()._flush()


@workflow.defn(name="Relationship")
class UnpatchedActivity(Relationship):
    """Incompatible: an activity before every flush."""

    @workflow.run
    async def run(self, input: StartInput) -> RelationshipSummary:
        return await super().run(input)

    async def _flush(self) -> None:
        if self._outbox:
            await _extra_activity(self)
        await super()._flush()


@workflow.defn(name="Relationship")
class PatchedTimer(Relationship):
    """The same change as UnpatchedTimer, shipped safely: only workflows that reach this
    point on the new code take the new step."""

    @workflow.run
    async def run(self, input: StartInput) -> RelationshipSummary:
        return await super().run(input)

    async def _flush(self) -> None:
        if self._outbox and workflow.patched(PATCH_ID):
            await _extra_timer()
        await super()._flush()


@workflow.defn(name="Relationship")
class PatchedActivity(Relationship):
    @workflow.run
    async def run(self, input: StartInput) -> RelationshipSummary:
        return await super().run(input)

    async def _flush(self) -> None:
        if self._outbox and workflow.patched(PATCH_ID):
            await _extra_activity(self)
        await super()._flush()
