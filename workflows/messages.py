"""The Relationship workflow's messages as they arrive: one signal and one update per
command, untyped payloads read into commands (or refusals), and refusals as update errors.

Payloads arrive untyped and are validated inside, so a malformed one is answered with the
offending field (update) or recorded as a rejected command (signal) instead of being dropped
by the data converter.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from events.commands import Command, Identifier, command_digest, payload_digest, read_command
    from events.refusals import FieldProblem, RefusalCode, Rejection, refused_as_plain
    from events.relationship_io import CommandResult

class ArgumentCount:
    """Stands in for the payload of a message sent with no argument or with several: every
    message takes exactly one, a JSON object. Validating it fails like a malformed payload
    (a rejection, never a failed workflow task)."""

    def __init__(self, count: int) -> None:
        self.count = count


def one_payload(payloads: tuple[Any, ...]) -> Any:
    return payloads[0] if len(payloads) == 1 else ArgumentCount(len(payloads))


def read_message(model: type[Command], payload: Any) -> Command | Rejection:
    if isinstance(payload, ArgumentCount):
        problem = FieldProblem(field="payload", message=f"expected one argument, a JSON object; got {payload.count}")
        return Rejection(code=RefusalCode.INVALID_PAYLOAD, reason=f"invalid payload: {problem.message}", problems=(problem,))
    return refused_as_plain(payload) or read_command(model, payload)


def digest_of(model: type[Command], payload: Any, command: Command | None) -> str:
    if command is not None:
        return command_digest(command)
    return payload_digest(model.message_name, payload.count if isinstance(payload, ArgumentCount) else payload)


def refusal_error(rejection: Rejection) -> ApplicationError:
    """How a refusal reaches update callers: its code as the error's type, never retryable."""
    return ApplicationError(rejection.reason, rejection.details(), type=rejection.code.value, non_retryable=True)


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def command_id_of(payload: Any) -> str | None:
    """The command id of a payload that failed validation, if it is a well-formed id."""
    if isinstance(payload, dict):
        try:
            return _IDENTIFIER.validate_python(payload.get("command_id"))
        except ValidationError:
            return None
    return None


SignalHandler = Callable[[Any, Any], Coroutine[Any, Any, None]]
UpdateHandler = workflow.UpdateMethodMultiParam[[Any, Any], Coroutine[Any, Any, CommandResult]]


def message_handlers(model: type[Command]) -> tuple[SignalHandler, UpdateHandler]:
    """A signal and an update, both named after the command's message name.

    The handlers take any number of arguments: a signal sent without one (`temporal workflow
    signal` without `--input`) would otherwise raise a TypeError in the handler and fail
    every workflow task from then on.
    """
    name = model.message_name

    async def signal(self: Any, *payloads: Any) -> None:
        await self._receive_signal(model, one_payload(payloads))

    async def update(self: Any, *payloads: Any) -> CommandResult:
        result: CommandResult = await self._receive_update(model, one_payload(payloads))
        return result

    def validate(self: Any, *payloads: Any) -> None:
        self._validate_update(model, one_payload(payloads))

    # `self` is Any: the class is not defined yet when Temporal reads these type hints.
    for function, suffix in ((signal, "signal"), (update, "update"), (validate, "validate")):
        function.__name__ = function.__qualname__ = f"{name}_{suffix}"
    update_handler = workflow.update(name=name)(update)
    update_handler.validator(validate)
    return workflow.signal(name=name)(signal), update_handler
