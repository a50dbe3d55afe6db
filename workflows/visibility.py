"""What operators see of a relationship's run: its search attributes (filters in the Web UI
and `temporal workflow list`) and its current details (the Web UI's summary of the run)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from events.deadlines import next_due_at
    from events.operator_view import current_details
    from events.state import RelationshipState

from workflows import search_attributes as sa


class Visibility:
    """Remembers what the run last showed, so that only changes are written."""

    def __init__(self) -> None:
        self._search_attributes: dict[str, Any] = {}
        self._current_details = ""

    def show(self, state: RelationshipState) -> None:
        self._sync_search_attributes(state)
        self._show_current_details(state)

    def _show_current_details(self, state: RelationshipState) -> None:
        # Kept in the worker's memory and read by the Web UI through a query: no history
        # event, so it may change on every flush. After continue-as-new it is all a run
        # shows of itself (start summary and details are not carried over).
        details = current_details(state, continued_from_run=workflow.info().continued_run_id)
        if details != self._current_details:
            workflow.set_current_details(details)
            self._current_details = details

    def _sync_search_attributes(self, state: RelationshipState) -> None:
        # Each upsert is a history event (and costs the visibility store): only on change.
        due = next_due_at(state)
        wanted: dict[str, Any] = {
            sa.MENTORING_PHASE.name: state.phase.value,
            sa.MENTORING_HEALTH.name: state.health.value,
            sa.MENTORING_PROGRAMME.name: state.programme_id,
            sa.MENTEE_ID.name: state.mentee_id,
            sa.MENTOR_ID.name: state.mentor_id or (state.candidate.mentor_id if state.candidate else None),
            sa.NEXT_DUE_AT.name: due,
            sa.MEETINGS_HELD.name: state.meetings_held,
        }
        if due is None:
            # Keep the last value: the SDK cannot read back an unset datetime attribute, and
            # operators filter on ExecutionStatus = 'Running' anyway.
            del wanted[sa.NEXT_DUE_AT.name]
        updates: list[SearchAttributeUpdate[Any]] = []
        for key in sa.ALL_KEYS:
            if key.name not in wanted:
                continue
            value = wanted[key.name]
            if self._search_attributes.get(key.name, "<unset>") != value:
                updates.append(key.value_set(value) if value is not None else key.value_unset())
        if updates:
            workflow.upsert_search_attributes(updates)
            self._search_attributes = wanted
