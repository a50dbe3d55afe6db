"""Worker Deployment Versioning: which build of the worker gets the workflow tasks.

A worker with `MENTORFLOW_BUILD_ID` polls as version `MENTORFLOW_DEPLOYMENT_NAME.BUILD_ID`
(worker.deployment_config). The server registers a version when its first worker polls,
but routes tasks to it only once it is the deployment's *current* version (or its ramping
one, for a percentage): until then its workers sit idle, and tasks wait — nothing is lost.
`mentorflow deployment set-current` (and `mentorflow dev` by itself) makes a version
current; `temporal worker deployment set-current-version` does the same.

Relationships use AUTO_UPGRADE: at its next workflow task a running relationship moves to
the current version, so a new version must replay every open history (docs/deploying.md).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("mentorflow.deployment")

IDENTITY = "mentorflow"
UNVERSIONED = "__unversioned__"
# Until a worker of the version has polled, the server answers NOT_FOUND; FAILED_PRECONDITION
# while it has not seen pollers on every task queue of the deployment; ABORTED on a
# concurrent change of the routing config.
_NOT_YET = {RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.ABORTED}


class DeploymentError(RuntimeError):
    """The version could not be made current; the message says why."""


@dataclass(frozen=True)
class VersionView:
    build_id: str
    status: str  # current, ramping, draining, drained, inactive, created
    created_at: datetime | None


@dataclass(frozen=True)
class DeploymentView:
    name: str
    current_build_id: str | None  # None: unversioned workers get the tasks
    ramping_build_id: str | None
    ramping_percentage: float
    versions: tuple[VersionView, ...]


async def set_current_version(
    client: Client, deployment_name: str, build_id: str, *, wait: float = 60.0
) -> str | None:
    """Make `deployment_name.build_id` the current version, waiting up to `wait` seconds for
    its workers to register it. Returns the build id that was current before (None:
    unversioned). Safe to repeat."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=deployment_name, build_id=build_id, identity=IDENTITY
    )
    while True:
        try:
            response = await client.workflow_service.set_worker_deployment_current_version(request)
        except RPCError as error:
            if error.status not in _NOT_YET:
                raise DeploymentError(f"cannot make {deployment_name}.{build_id} current: {error.message}") from None
            if loop.time() >= deadline:
                raise DeploymentError(
                    f"cannot make {deployment_name}.{build_id} current within {wait:.0f} s: {error.message} "
                    "(is a worker with this MENTORFLOW_BUILD_ID running against this namespace?)"
                ) from None
            await asyncio.sleep(0.5)
            continue
        previous = response.previous_deployment_version.build_id
        log.info("%s.%s is now the current version (was %s)", deployment_name, build_id, previous or "unversioned")
        return previous or None


async def describe_deployment(client: Client, deployment_name: str) -> DeploymentView | None:
    """The deployment's routing and versions; None if no versioned worker ever polled."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment_name)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.worker_deployment_info
    routing = info.routing_config
    versions = tuple(
        VersionView(
            build_id=summary.deployment_version.build_id,
            status=WorkerDeploymentVersionStatus.Name(summary.status)
            .removeprefix("WORKER_DEPLOYMENT_VERSION_STATUS_")
            .lower(),
            created_at=summary.create_time.ToDatetime() if summary.HasField("create_time") else None,
        )
        for summary in info.version_summaries
    )
    return DeploymentView(
        name=info.name,
        current_build_id=routing.current_deployment_version.build_id or None,
        ramping_build_id=routing.ramping_deployment_version.build_id or None,
        ramping_percentage=routing.ramping_version_percentage,
        versions=versions,
    )
