"""Every run of a workflow that continued as new (tests and benches read them all)."""

from __future__ import annotations

from temporalio.client import Client, WorkflowHistory


async def every_run(client: Client, workflow_id: str) -> list[tuple[str, WorkflowHistory]]:
    """The run id and history of the latest run of `workflow_id` and of every run it
    continued as new from, newest first: the chain walked back through each run's first
    event (visibility lists the runs only a moment later; the chain is there at once)."""
    runs: list[tuple[str, WorkflowHistory]] = []
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append((run_id, history))
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
    return runs
