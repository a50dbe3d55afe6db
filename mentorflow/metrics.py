"""Prometheus metrics: Temporal's own and mentorflow's, on one endpoint.

With `MENTORFLOW_METRICS_PORT` set, the worker's Temporal client runs on a `Runtime` whose
Prometheus exporter serves `http://MENTORFLOW_METRICS_HOST:PORT/metrics`. Temporal's SDK
metrics (`temporal_workflow_task_execution_latency`, `temporal_activity_execution_failed`,
`temporal_request`, … — names prefixed `temporal_`) appear there, and ours are recorded
through the same runtime's metric meter, so there is one endpoint to scrape:

- `mentorflow_notifications_sent` (counter; labels `channel`, `template`, `outcome`): one
  per delivery a `send_notifications` attempt handled. `outcome="sent"` is a message that
  went out; `settled` one found already delivered or refused by an earlier attempt;
  `rejected` refused for good; `failed`, `busy`, `waiting` are retried.
- `mentorflow_commands_rejected` (counter; label `command`): signalled commands recorded as
  `CommandRejected`, counted when the event is stored (so exactly once per rejection,
  however often the task runs). Rejected updates never reach history or the store; the
  caller gets the error.
- `mentorflow_relationships` (gauge; label `phase`): running relationships per phase, a
  visibility count every `MENTORFLOW_METRICS_PHASE_INTERVAL` seconds. Every worker reports
  the same numbers: aggregate with `max by (phase)`, not `sum`.

Recording is free without an endpoint: the runtime's meter is then a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from mentorflow.config import ConfigurationError, Settings

log = logging.getLogger("mentorflow.metrics")

NOTIFICATIONS_SENT = "mentorflow_notifications_sent"
COMMANDS_REJECTED = "mentorflow_commands_rejected"
RELATIONSHIPS = "mentorflow_relationships"

# The phases of events.state.Phase, spelt out so this module needs nothing from the core.
PHASES = ("matching", "agreement", "active", "review", "closing", "closed")


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting Prometheus metrics on the configured port; None when metrics are off.

    Made once per process: the exporter binds its port when the runtime is created.
    """
    if settings.metrics_port is None:
        return None
    address = bind_address(settings.metrics_host, settings.metrics_port)
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except Exception as error:  # the core reports a port in use as a plain exception
        raise ConfigurationError(
            f"MENTORFLOW_METRICS_PORT: cannot serve metrics on {address}: {error}"
        ) from None


def runtime_of(client: Client) -> Runtime:
    return client.service_client.config.runtime or Runtime.default()


# -- ours, recorded where they happen ----------------------------------------------------


def count_notifications(outcomes: Iterable[tuple[str, str, str]]) -> None:
    """(channel, template, outcome) of every delivery one `send_notifications` attempt handled."""
    if not activity.in_activity():  # called directly, as in unit tests
        return
    counter = activity.metric_meter().create_counter(
        NOTIFICATIONS_SENT, "Notification deliveries by channel, template and outcome"
    )
    for channel, template, outcome in outcomes:
        counter.add(1, {"channel": channel, "template": template, "outcome": outcome})


class MetricsInterceptor(Interceptor):
    """Counts rejected commands once their `CommandRejected` events are stored."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountRejections(next)


class _CountRejections(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await super().execute_activity(input)
        kind = activity.info().activity_type
        if kind in ("append_events", "append_events_and_notify") and input.args:
            # An AppendRequest, or one inside an AppendAndNotifyRequest.
            batch = getattr(input.args[0], "append", input.args[0])
            rejected = [
                getattr(event, "command_name", "unknown")
                for event in getattr(batch, "events", ())
                if getattr(event, "type", None) == "CommandRejected"
            ]
            if rejected:
                counter = activity.metric_meter().create_counter(
                    COMMANDS_REJECTED, "Signalled commands recorded as rejected, by command"
                )
                for command in rejected:
                    counter.add(1, {"command": command})
        return result


# -- relationships by phase, counted in visibility ---------------------------------------


def phase_query(phase: str) -> str:
    return f"WorkflowType = 'Relationship' AND ExecutionStatus = 'Running' AND MentoringPhase = '{phase}'"


async def count_relationships_by_phase(client: Client) -> dict[str, int]:
    return {phase: (await client.count_workflows(phase_query(phase))).count for phase in PHASES}


async def report_relationships_by_phase(client: Client, meter: MetricMeter, interval: float) -> None:
    """Set the `mentorflow_relationships` gauge every `interval` seconds, until cancelled."""
    gauge = meter.create_gauge(RELATIONSHIPS, "Running relationships by phase (a visibility count)")
    warned = False
    while True:
        try:
            counts = await count_relationships_by_phase(client)
        except Exception as error:  # the gauge must never take the worker down
            if not warned:
                message = error.message if isinstance(error, RPCError) else repr(error)
                log.warning("cannot count relationships by phase (will keep trying): %s", message)
                warned = True
        else:
            warned = False
            for phase, count in counts.items():
                gauge.set(count, {"phase": phase})
        await asyncio.sleep(interval)
