"""Calls to Temporal with a bounded wait, and their failures as problems.

A relationship answers only while a worker runs. Without one, an update or a query would
wait for a long time; the API waits `command_timeout` seconds (MENTORFLOW_API_COMMAND_TIMEOUT)
and answers 503 with Retry-After, never a hung connection. The command may still be
applied later (Temporal keeps an admitted update until a worker takes it); sending the
same command id again is safe either way: the relationship answers `replay: true` for a
command it already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from events.refusals import FieldProblem, RefusalCode
from mentorflow.api.problems import ApiProblem

log = logging.getLogger("mentorflow.api")

T = TypeVar("T")

RETRY_AFTER_SECONDS = 5


def unavailable(detail: str) -> ApiProblem:
    return ApiProblem("unavailable", detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def refusal_of(error: WorkflowUpdateFailedError) -> ApiProblem:
    """The refusal an update failed with, as the same code and problems."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type in {code.value for code in RefusalCode}:
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        problems = [
            FieldProblem.model_validate(problem)
            for problem in details.get("problems", [])
            if isinstance(problem, dict) and {"field", "message"} <= problem.keys()
        ]
        return ApiProblem(cause.type, str(details.get("reason") or cause.message), problems)
    log.error("an update failed without a refusal code: %s", type(cause).__name__ if cause else error)
    return ApiProblem(RefusalCode.INTERNAL_ERROR, "the relationship could not process the command (internal error)")


async def bounded(call: Awaitable[T], timeout: float, what: str) -> T:
    """`call`'s answer, or the problem it amounts to: 503 after `timeout` seconds."""
    try:
        # asyncio.timeout, not wait_for: no task of its own per call.
        async with asyncio.timeout(timeout):
            return await call
    except (asyncio.TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise unavailable(f"{what} did not answer within {timeout:g} s; send the same request again later") from None
    except WorkflowUpdateFailedError as error:
        raise refusal_of(error) from None
    except WorkflowQueryRejectedError:
        raise ApiProblem(RefusalCode.INTERNAL_ERROR, f"{what} refused the query") from None
    except WorkflowQueryFailedError as error:
        log.error("a query failed: %s", error)
        raise ApiProblem(RefusalCode.INTERNAL_ERROR, f"{what} could not answer (internal error)") from None
    except RPCError as error:
        raise rpc_problem(error, what) from None


def rpc_problem(error: RPCError, what: str) -> ApiProblem:
    if error.status == RPCStatusCode.NOT_FOUND:
        if "completed" in error.message or "closed" in error.message:
            return ApiProblem(RefusalCode.WRONG_PHASE, f"{what} has ended and takes no more commands")
        return ApiProblem(RefusalCode.NOT_FOUND, f"{what} does not exist")
    if error.status == RPCStatusCode.INVALID_ARGUMENT:
        return ApiProblem(RefusalCode.INVALID_PAYLOAD, f"Temporal refused the request for {what} as invalid")
    if error.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED):
        return unavailable(f"Temporal is unavailable ({error.status.name.lower()}); try again later")
    if error.status == RPCStatusCode.FAILED_PRECONDITION and "task" in error.message.lower():
        return unavailable(f"{what} cannot take commands right now (its workflow task is failing); try again later")
    log.error("Temporal refused a call for %s: %s %s", what, error.status, error.message)
    return ApiProblem(RefusalCode.INTERNAL_ERROR, f"Temporal refused the call ({error.status.name.lower()})")
