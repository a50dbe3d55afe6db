"""The worker: wires the workflows to their activities and runs them on one task queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import (
    PollerBehaviorAutoscaling,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkerDeploymentConfig,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.digest import DigestActivities
from activities.directory import Directory, DirectoryActivities
from activities.event_store import EventStoreActivities, PostgresEventStore
from activities.matching import MatchingActivities
from activities.notifications import DirectoryContacts, NotificationActivities, channels_from_settings
from activities.notifications_channels import NotificationChannel
from activities.notifications_daytime import Clock, StoredDeliveryWindows
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.projections import ProjectionFollower
from activities.store_and_notify import StoreAndNotifyActivities
from mentorflow.action_links import LinkMaker
from mentorflow.codec import EncryptionCodec
from mentorflow.config import ConfigurationError, Settings
from mentorflow.keyring import Keyring
from mentorflow.metrics import MetricsInterceptor, report_relationships_by_phase, runtime_of
from workflows.digest import CoordinatorDigests, ensure_digest_schedule
from workflows.matching_round import MatchingRound
from workflows.relationship import Relationship

log = logging.getLogger("mentorflow.worker")


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    task_queue: str,
    *,
    channels: Sequence[NotificationChannel] | None = None,
    settings: Settings | None = None,
    workflows: Sequence[type] = (Relationship, MatchingRound, CoordinatorDigests),
    notification_clock: Clock | None = None,
) -> Worker:
    """`channels` see every notification besides the recipients' own channels (tests record with one).

    `workflows`: tests run other implementations of the same workflow types (tests/support/workflow_variants.py).
    `notification_clock`: when a notification attempt runs, for daytime delivery (tests pass the
    time-skipping server's clock)."""
    settings = settings or Settings.from_env()
    store = EventStoreActivities(PostgresEventStore(pool, store_keyring(client, settings)))
    stored_settings = StoredDeliveryWindows(pool)  # each relationship's delivery window and links' lifetime
    notifications = NotificationActivities(
        deliveries=PostgresDeliveryLog(pool),
        contacts=DirectoryContacts(Directory(pool)),
        channels=channels_from_settings(settings),
        taps=channels or (),
        windows=stored_settings,
        clock=notification_clock,
        links=action_links(client, settings),
        lifetimes=stored_settings,
    )
    together = StoreAndNotifyActivities(
        store, notifications, notify_within=timedelta(seconds=settings.notify_first_try_seconds)
    )
    directory = DirectoryActivities(Directory(pool), trust_start_settings=settings.trust_start_settings)
    matching = MatchingActivities(pool, client, task_queue, tiled_above_pairs=settings.round_tiled_above_pairs)
    return Worker(
        worker_client(client, settings),
        task_queue=task_queue,
        workflows=list(workflows),
        workflow_runner=workflow_runner(settings),
        # As many workflow-task polls as the server's backlog calls for, instead of a fixed 5:
        # under load, with 5, the workflow tasks of signals waited in the backlog up to
        # seconds while updates' went straight through (p99 9.4 s, autoscaled 2.7 s: bench/README.md).
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        # MENTORFLOW_WORKFLOW_TASK_SLOTS: no more workflow tasks at once than the worker
        # finishes within the task timeout; the rest wait at the server, on this worker's
        # sticky queue, up to MENTORFLOW_STICKY_SCHEDULE_TO_START_SECONDS (with 100 slots and
        # Temporal's 10 s, 350 tasks timed out under load, with 10 and 60 s one did:
        # docs/deploying.md "Tuning a worker", bench/README.md).
        max_concurrent_workflow_tasks=settings.workflow_task_slots,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_schedule_to_start_seconds),
        activities=[
            store.append_events,
            store.read_stream,
            notifications.send_notifications,
            together.append_events_and_notify,
            directory.load_programme,
            directory.check_participants,
            *matching.all_activities(),
            *DigestActivities(pool).all_activities(),
        ],
        interceptors=[MetricsInterceptor()],
        deployment_config=deployment_config(settings),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """Temporal's sandbox only with MENTORFLOW_WORKFLOW_SANDBOX (the test suite turns it on).

    The sandbox re-imports a workflow's module for every workflow it loads into the worker's
    cache and runs its import and call checks around every activation and every payload:
    about a third of the worker's CPU under load (bench/README.md, the load section). What it
    catches, a non-deterministic call in workflow code, the test suite catches with it on;
    the workflow modules keep no state of their own between runs, the one thing the sandbox's
    re-import also protected against."""
    return SandboxedWorkflowRunner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner()


def refuses_plain_payloads(settings: Settings) -> bool:
    """MENTORFLOW_REFUSE_PLAIN_PAYLOADS; unset, on (`mentorflow dev` sets it off when unset)."""
    return settings.refuse_plain_payloads is not False


def worker_client(client: Client, settings: Settings) -> Client:
    """The client the worker polls with: `client`'s connection and data converter, its codec
    refusing payloads that arrive unencrypted unless MENTORFLOW_REFUSE_PLAIN_PAYLOADS is off.

    Only the worker decodes this way (workflow inputs, signals, updates, queries): `client`
    itself, which the activities use and the CLI and the codec server are built like, keeps
    showing plain payloads as they are. A client without our codec (a test's plain one) is
    left as it is unless the setting asks for it explicitly."""
    codec = client.data_converter.payload_codec
    if not refuses_plain_payloads(settings) or (isinstance(codec, EncryptionCodec) and codec.refuse_plain):
        return client
    if not isinstance(codec, EncryptionCodec):
        if settings.refuse_plain_payloads is None:
            return client
        raise ConfigurationError("MENTORFLOW_REFUSE_PLAIN_PAYLOADS needs a client with mentorflow's encrypting codec")
    config = client.config()
    config["data_converter"] = dataclasses.replace(client.data_converter, payload_codec=codec.refusing_plain())
    return Client(**config)


def action_links(client: Client, settings: Settings) -> LinkMaker | None:
    """Signed links in emails, to the pages under MENTORFLOW_PUBLIC_URL (docs/people.md)."""
    keyring = store_keyring(client, settings) if settings.public_url else None
    return LinkMaker(keyring, settings.public_url) if keyring is not None and settings.public_url else None


def store_keyring(client: Client, settings: Settings) -> Keyring | None:
    """The keys that wrap the event store's per-relationship data keys: the ones the client
    encrypts Temporal payloads with, else MENTORFLOW_ENCRYPTION_KEYS (None: neither)."""
    codec = client.data_converter.payload_codec
    if isinstance(codec, EncryptionCodec):
        return codec.keyring
    return settings.keyring() if settings.encryption_keys is not None else None


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """Worker Deployment Versioning when a build id is configured (docs/deploying.md).

    AUTO_UPGRADE: a running relationship moves to whichever version is current at its next
    workflow task, so every change to workflow code must replay old histories (patched()).
    """
    if settings.build_id is None:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=settings.deployment_name, build_id=settings.build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


async def run_worker(
    client: Client,
    pool: asyncpg.Pool,
    task_queue: str,
    *,
    ready: asyncio.Event | None = None,
    settings: Settings | None = None,
) -> None:
    """Run until cancelled; sets `ready` once polling has started.

    With metrics on (MENTORFLOW_METRICS_PORT, and `client` connected on the metrics
    runtime), also keeps the relationships-by-phase gauge up to date."""
    settings = settings or Settings.from_env()
    worker = build_worker(client, pool, task_queue, settings=settings)
    async with worker, asyncio.TaskGroup() as tasks:
        if settings.build_id is None:
            log.info("worker polling task queue %s (unversioned)", task_queue)
        else:
            log.info(
                "worker polling task queue %s as version %s.%s (tasks arrive once it is current or ramping)",
                task_queue, settings.deployment_name, settings.build_id,
            )  # fmt: skip
        if settings.metrics_port is not None:
            meter = runtime_of(client).metric_meter
            tasks.create_task(report_relationships_by_phase(client, meter, settings.metrics_phase_interval))
        # Read models for `mentorflow report`; workers take turns (activities/projections.py).
        tasks.create_task(ProjectionFollower(pool).follow(), name="projection follower")
        # The coordinators' digest runs from one schedule; whichever worker starts first creates it.
        await ensure_digest_schedule(client, task_queue)
        if ready is not None:
            ready.set()
        await asyncio.Future()  # until cancelled

