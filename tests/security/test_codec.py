"""Encrypted payloads: the codec, the size limit, key rotation, and the codec server over real HTTP.

The history checks run on a real Temporal dev server and read it back with a raw client
(no codec), as anyone with access to the server or its database would see it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

from events.settings import ProgrammeSettings
from mentorflow.cli import app
from mentorflow.client import converter_for, data_converter
from events.refusals import PLAIN_PAYLOAD_REFUSED
from mentorflow.codec import ENCODING, KEY_ID_METADATA, EncryptionCodec, PayloadTooLargeError
from mentorflow import codec_server as codec_server_module
from mentorflow.codec_server import CodecServerConfig, RunningCodecServer, start_codec_server
from mentorflow.config import ConfigurationError, Settings
from mentorflow.keyring import Keyring, UnknownKeyError, format_key, generate_key
from tests.support.session import TEST_KEYRING
from tests.support.helpers import AGREEMENT, cmd, new_worker, start_relationship, state_of
from worker import worker_client
from workflows.relationship import Relationship, RelationshipInput

SENTINEL = "Zebra-sentinel-7f3a"
NAMESPACE = "mentorflow"


def plain(value: Any) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


# -- the codec ---------------------------------------------------------------------------


async def test_payloads_round_trip_and_plain_payloads_pass_through() -> None:
    codec = EncryptionCodec(TEST_KEYRING)
    original = plain({"note": SENTINEL})
    [encrypted] = await codec.encode([original])
    assert encrypted.metadata["encoding"] == ENCODING
    assert encrypted.metadata[KEY_ID_METADATA] == b"test-1"
    assert SENTINEL.encode() not in encrypted.SerializeToString()
    assert await codec.decode([encrypted]) == [original]
    # A plain-JSON client (another language, no codec) can still send commands.
    assert await codec.decode([original]) == [original]


async def test_an_unknown_key_id_is_named() -> None:
    [encrypted] = await EncryptionCodec(Keyring.generate("retired")).encode([plain("x")])
    with pytest.raises(UnknownKeyError, match="'retired'"):
        await EncryptionCodec(TEST_KEYRING).decode([encrypted])


async def test_the_size_limit_names_size_and_limit_and_only_clients_have_it() -> None:
    codec = EncryptionCodec(TEST_KEYRING, max_payload_bytes=2048)
    await codec.encode([plain("x" * 1000)])
    with pytest.raises(PayloadTooLargeError) as raised:
        await codec.encode([plain("x" * 3000)])
    assert raised.value.limit == 2048 and raised.value.size > 3000
    assert f"payload of {raised.value.size} bytes is over the limit of 2048 bytes" in str(raised.value)

    settings = Settings.from_env({"MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format()})
    client_codec = converter_for(settings, sends_commands=True).payload_codec
    worker_codec = converter_for(settings, sends_commands=False).payload_codec
    assert isinstance(client_codec, EncryptionCodec) and client_codec.max_payload_bytes == 256 * 1024
    assert isinstance(worker_codec, EncryptionCodec) and worker_codec.max_payload_bytes is None


async def test_a_codec_that_refuses_plain_payloads_hands_over_a_marker_instead_and_never_raises() -> None:
    codec = EncryptionCodec(TEST_KEYRING).refusing_plain()
    assert codec.refuse_plain and codec.keyring is TEST_KEYRING and codec.max_payload_bytes is None
    original = plain({"note": SENTINEL})
    [encrypted] = await codec.encode([original])
    nothing = pydantic_data_converter.payload_converter.to_payloads([None])[0]  # binary/null
    raw = Payload(metadata={"encoding": b"binary/plain"}, data=SENTINEL.encode())
    broken = Payload(metadata={"encoding": b"json/plain"}, data=b"{not json")
    decoded = await codec.decode([original, encrypted, nothing, raw, broken, Payload()])
    assert decoded[1] == original
    # The marker carries the original JSON (the workflow goes on with it where a run accepted
    # plain payloads before refusing began); anything else travels as null.
    assert pydantic_data_converter.payload_converter.from_payload(decoded[0]) == {
        PLAIN_PAYLOAD_REFUSED: True, "payload": {"note": SENTINEL}
    }
    for marker in decoded[2:]:
        assert marker.metadata["encoding"] == b"json/plain" and SENTINEL.encode() not in marker.data
        assert pydantic_data_converter.payload_converter.from_payload(marker) == {PLAIN_PAYLOAD_REFUSED: True, "payload": None}
    # Encrypted payloads are checked as before: a missing key still fails loudly.
    [retired] = await EncryptionCodec(Keyring.generate("retired")).encode([original])
    with pytest.raises(UnknownKeyError):
        await codec.decode([retired])


async def test_only_the_worker_refuses_plain_payloads_and_only_while_the_setting_is_on(
    dev_env: WorkflowEnvironment,
) -> None:
    keys = {"MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format()}
    for value, refused in (("", True), ("true", True), ("false", False)):
        settings = Settings.from_env({**keys, "MENTORFLOW_REFUSE_PLAIN_PAYLOADS": value})
        for sends_commands in (True, False):  # the CLI's, a worker's connection
            codec = converter_for(settings, sends_commands=sends_commands).payload_codec
            assert isinstance(codec, EncryptionCodec) and not codec.refuse_plain
        polling = worker_client(dev_env.client, settings)
        codec = polling.data_converter.payload_codec
        assert isinstance(codec, EncryptionCodec) and codec.refuse_plain is refused
        assert (polling is dev_env.client) is not refused
        assert polling.service_client is dev_env.client.service_client and polling.namespace == dev_env.client.namespace
        assert polling.data_converter.payload_converter_class is dev_env.client.data_converter.payload_converter_class
        assert polling.data_converter.failure_converter_class is dev_env.client.data_converter.failure_converter_class
    # The client the worker was given (its activities use it) is left as it was.
    assert isinstance(dev_env.client.data_converter.payload_codec, EncryptionCodec)
    assert not dev_env.client.data_converter.payload_codec.refuse_plain
    # A test's client without our codec: left alone by default, refused when asked for.
    unencrypted = Client(dev_env.client.service_client, namespace=NAMESPACE)
    assert worker_client(unencrypted, Settings()) is unencrypted
    with pytest.raises(ConfigurationError, match="MENTORFLOW_REFUSE_PLAIN_PAYLOADS"):
        worker_client(unencrypted, Settings(refuse_plain_payloads=True))


# -- on a real Temporal server, read back without the codec ------------------------------


def raw_client(env: WorkflowEnvironment) -> Client:
    """What anyone with access to the server sees: no codec, no failure decoding."""
    return Client(env.client.service_client, namespace=NAMESPACE)


def client_with(env: WorkflowEnvironment, keyring: Keyring, *, max_payload_bytes: int | None = None) -> Client:
    return Client(
        env.client.service_client,
        namespace=NAMESPACE,
        data_converter=data_converter(keyring, max_payload_bytes=max_payload_bytes),
    )


# Payloads Temporal never passes to a codec: search attributes (indexed by the server).
UNENCODED_FIELDS = {"search_attributes"}


def payloads_in(message: Message) -> list[Payload]:
    """Every Payload inside a protobuf message (history event, description), however deep."""
    if isinstance(message, Payload):
        return [message]
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None or field.name in UNENCODED_FIELDS:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        found += [payload for item in items if isinstance(item, Message) for payload in payloads_in(item)]
    return found


LOCAL_ACTIVITY_MARKER_KEYS = {
    "seq", "attempt", "activity_id", "activity_type", "complete_time", "backoff", "original_schedule_time",
    "activation_index",
}  # fmt: skip
# A workflow.patched() marker: the patch id, and whether it is deprecated.
PATCH_MARKER_KEYS = {"id", "deprecated"}


def _is_marker_data(payload: Payload) -> bool:
    value = json.loads(payload.data)
    return isinstance(value, dict) and (set(value) <= LOCAL_ACTIVITY_MARKER_KEYS or set(value) == PATCH_MARKER_KEYS)


@activity.defn(name="codec_test_fail")
async def failing_activity(text: str) -> None:
    raise ApplicationError(f"activity failed on {text}", non_retryable=True)


@workflow.defn(name="CodecTestFailure")
class FailingWorkflow:
    @workflow.run
    async def run(self, text: str) -> None:
        try:
            await workflow.execute_activity(
                failing_activity, text, start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )  # fmt: skip
        except ActivityError:
            raise ApplicationError(f"workflow failed on {text}", non_retryable=True) from None


async def test_history_memo_summaries_and_failures_are_unreadable_without_the_codec(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    client = dev_env.client
    async with new_worker(client, pool) as worker:
        relationship = RelationshipInput(
            relationship_id=f"rel-{uuid.uuid4().hex[:10]}", programme_id="prog-1", mentee_id="mentee-1",
            settings=ProgrammeSettings(coordinator_ids=("coord-1",)),
        )  # fmt: skip
        handle = await client.start_workflow(
            Relationship.run,
            relationship,
            id=f"relationship/prog-1/{relationship.relationship_id}",
            task_queue=worker.task_queue,
            memo={"note": f"memo {SENTINEL}"},
            static_summary=f"summary {SENTINEL}",
            static_details=f"details {SENTINEL}",
        )
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        terms = {**AGREEMENT, "objective": f"Objective {SENTINEL}"}
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=terms))
        # Positive controls: with the keys, all of it reads back.
        assert SENTINEL in (await state_of(handle)).model_dump_json()
        description = await handle.describe()
        assert await description.static_summary() == f"summary {SENTINEL}"
        assert await description.static_details() == f"details {SENTINEL}"
        assert await description.memo_value("note") == f"memo {SENTINEL}"

        failing_queue = f"{worker.task_queue}-failing"
        async with Worker(
            client, task_queue=failing_queue, workflows=[FailingWorkflow], activities=[failing_activity],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):  # fmt: skip
            failing = await client.start_workflow(
                FailingWorkflow.run, SENTINEL, id=f"codec-failing-{uuid.uuid4().hex[:8]}", task_queue=failing_queue
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await failing.result()
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.message == f"workflow failed on {SENTINEL}"
        await handle.terminate()

    raw = raw_client(dev_env)
    for workflow_id in (handle.id, failing.id):
        history = await raw.get_workflow_handle(workflow_id).fetch_history()
        described = (await raw.get_workflow_handle(workflow_id).describe()).raw_description
        everything = b"".join(event.SerializeToString() for event in history.events) + described.SerializeToString()
        assert SENTINEL.encode() not in everything, workflow_id
        payloads = [payload for event in history.events for payload in payloads_in(event)] + payloads_in(described)
        # The SDK writes its local-activity and patch bookkeeping in plain JSON, past the
        # codec: only sequence numbers, attempts, activity types, times and patch ids.
        bookkeeping = [p for p in payloads if p.metadata.get("encoding") == b"json/plain" and _is_marker_data(p)]
        payloads = [p for p in payloads if p not in bookkeeping]
        assert {payload.metadata.get("encoding") for payload in payloads} == {ENCODING}, workflow_id
        assert {payload.metadata.get(KEY_ID_METADATA) for payload in payloads} == {b"test-1"}
        if workflow_id == handle.id:
            metadata = described.execution_config.user_metadata
            assert metadata.summary.metadata["encoding"] == metadata.details.metadata["encoding"] == ENCODING
            assert described.workflow_execution_info.memo.fields["note"].metadata["encoding"] == ENCODING
    # Failures: Temporal's placeholder message; the text is in the encrypted attributes.
    failure = history.events[-1].workflow_execution_failed_event_attributes.failure
    assert failure.message == "Encoded failure" and not failure.stack_trace
    decoded = await EncryptionCodec(TEST_KEYRING).decode([failure.encoded_attributes])
    assert SENTINEL.encode() in decoded[0].data  # the positive control, from the raw bytes


async def test_history_written_with_an_old_key_still_reads_after_rotation(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    old_key, new_key = generate_key(), generate_key()
    before = client_with(dev_env, Keyring.parse(format_key("k1", old_key)))
    after = client_with(dev_env, Keyring.parse(f"{format_key('k2', new_key)} {format_key('k1', old_key)}"))
    task_queue = f"tq-{uuid.uuid4()}"
    async with new_worker(before, pool, task_queue=task_queue) as worker:
        handle = await start_relationship(before, worker)
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await handle.execute_update("accept_match", cmd("mentee-1"))

    # A new worker (empty cache) replays the k1 history from the start, then writes with k2.
    async with new_worker(after, pool, task_queue=task_queue):
        rotated = after.get_workflow_handle(handle.id)
        result = await rotated.execute_update("accept_match", cmd("mentor-1"))
        assert result["phase"] == "agreement"
        assert (await state_of(rotated)).version == result["version"]
        await rotated.terminate()

    history = await raw_client(dev_env).get_workflow_handle(handle.id).fetch_history()
    payloads = [p for event in history.events for p in payloads_in(event) if p.metadata.get("encoding") == ENCODING]
    assert {p.metadata[KEY_ID_METADATA] for p in payloads} == {b"k1", b"k2"}
    # Dropping k1 too early: the error names the key that is missing.
    with pytest.raises(UnknownKeyError, match="'k1'"):
        await EncryptionCodec(Keyring.parse(format_key("k2", new_key))).decode(payloads)


async def test_an_oversized_command_is_refused_locally_and_the_relationship_goes_on(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    limit = 4096
    limited = client_with(dev_env, TEST_KEYRING, max_payload_bytes=limit)
    async with new_worker(dev_env.client, pool) as worker:  # the worker's converter has no limit
        handle = limited.get_workflow_handle((await start_relationship(limited, worker)).id)
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        oversized = {**AGREEMENT, "objective": "o" * 3000, "early_exit_plan": "e" * 3000}
        with pytest.raises(PayloadTooLargeError, match=f"over the limit of {limit} bytes"):
            await handle.execute_update("propose_agreement", cmd("mentee-1", terms=oversized))
        with pytest.raises(PayloadTooLargeError):
            await handle.signal("propose_agreement", cmd("mentee-1", terms=oversized))
        # Nothing reached Temporal.
        assert "propose_agreement" not in await messages_in_history(handle)

        # What the worker writes is not limited: state larger than the client's limit (here
        # from a client without the limit) still flows through activities and queries.
        unlimited = dev_env.client.get_workflow_handle(handle.id)
        result = await unlimited.execute_update("propose_agreement", cmd("mentee-1", terms=oversized))
        assert result["phase"] == "agreement"
        assert "propose_agreement" in await messages_in_history(handle)  # the check above can fail
        state = await state_of(handle)
        assert len(state.model_dump_json()) > limit and state.version == result["version"]
        await handle.terminate()


async def messages_in_history(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The names of the updates and signals that reached the workflow's history."""
    names = []
    for event in (await handle.fetch_history()).events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            names.append(event.workflow_execution_update_accepted_event_attributes.accepted_request.input.name)
        if event.HasField("workflow_execution_signaled_event_attributes"):
            names.append(event.workflow_execution_signaled_event_attributes.signal_name)
    return names


# -- the codec server, over real HTTP ----------------------------------------------------

TOKEN = "t" * 20 + uuid.uuid4().hex
UI_ORIGIN = "http://localhost:8233"


@pytest.fixture
async def codec_server() -> AsyncIterator[RunningCodecServer]:
    config = CodecServerConfig(
        keyring=TEST_KEYRING, namespace=NAMESPACE, tokens=[TOKEN], cors_origins=[UI_ORIGIN], max_payload_bytes=4096
    )
    running = await start_codec_server(config, "127.0.0.1", 0)
    yield running
    await running.stop()


def body(payloads: list[Payload]) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def headers(namespace: str = NAMESPACE, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    sent = {"Content-Type": "application/json", "X-Namespace": namespace, **extra}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return sent


async def test_the_codec_server_decodes_only_for_authenticated_callers_of_its_namespace(
    codec_server: RunningCodecServer,
) -> None:
    original = plain({"note": SENTINEL})
    [encrypted] = await EncryptionCodec(TEST_KEYRING).encode([original])
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        decoded = await http.post("/decode", content=body([encrypted]), headers=headers())
        assert decoded.status_code == 200, decoded.text
        assert list(json_format.Parse(decoded.text, Payloads()).payloads) == [original]
        # A plain client's payload is shown as it was sent (only workers refuse those).
        shown = await http.post("/decode", content=body([original]), headers=headers())
        assert list(json_format.Parse(shown.text, Payloads()).payloads) == [original]
        # The Web UI's form: the token is the endpoint's path; the UI appends /decode.
        via_path = await http.post(f"/{TOKEN}/decode", content=body([encrypted]), headers=headers(token=None))
        assert via_path.status_code == 200 and SENTINEL in base64.b64decode(via_path.json()["payloads"][0]["data"]).decode()

        for refused, status in [
            (await http.post("/decode", content=body([encrypted]), headers=headers(token=None)), 401),
            (await http.post("/decode", content=body([encrypted]), headers=headers(token="x" * 40)), 401),
            (await http.post("/wrong-token/decode", content=body([encrypted]), headers=headers(token=None)), 401),
            (await http.post("/decode", content=body([encrypted]), headers=headers(namespace="other")), 403),
            (await http.post(f"/{TOKEN}/decode", content=body([encrypted]), headers=headers("other", None)), 403),
        ]:
            assert refused.status_code == status, refused.text
            assert SENTINEL not in refused.text and TOKEN not in refused.text

        # Encode (the UI uses it to send signals) applies the size limit; decode does not.
        encoded = await http.post("/encode", content=body([original]), headers=headers())
        assert encoded.status_code == 200
        [again] = json_format.Parse(encoded.text, Payloads()).payloads
        assert again.metadata["encoding"] == ENCODING and await EncryptionCodec(TEST_KEYRING).decode([again]) == [original]
        too_large = await http.post("/encode", content=body([plain("x" * 5000)]), headers=headers())
        assert too_large.status_code == 413 and "over the limit of 4096 bytes" in too_large.json()["error"]
        [retired] = await EncryptionCodec(Keyring.generate("retired")).encode([original])
        unknown = await http.post("/decode", content=body([retired]), headers=headers())
        assert unknown.status_code == 422 and "'retired'" in unknown.json()["error"]
        bad = await http.post("/decode", content="{not json", headers=headers())
        assert bad.status_code == 400


async def test_the_codec_server_answers_browsers_only_on_the_web_ui_origin(codec_server: RunningCodecServer) -> None:
    [encrypted] = await EncryptionCodec(TEST_KEYRING).encode([plain({"note": SENTINEL})])
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        allowed = await http.options(f"/{TOKEN}/decode", headers={"Origin": UI_ORIGIN, **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        assert "x-namespace" in allowed.headers["Access-Control-Allow-Headers"].lower()
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]

        evil = await http.options(f"/{TOKEN}/decode", headers={"Origin": "http://evil.example", **preflight})
        assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers

        from_ui = await http.post(f"/{TOKEN}/decode", content=body([encrypted]), headers=headers(token=None, Origin=UI_ORIGIN))
        assert from_ui.status_code == 200 and from_ui.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
        # Even with the token, another page in the browser gets nothing.
        stolen = await http.post(
            f"/{TOKEN}/decode", content=body([encrypted]), headers=headers(Origin="http://evil.example")
        )
        assert stolen.status_code == 403 and SENTINEL not in stolen.text
        assert "Access-Control-Allow-Origin" not in stolen.headers
        # Not a browser (no Origin): no CORS headers at all.
        cli = await http.post("/decode", content=body([encrypted]), headers=headers())
        assert cli.status_code == 200 and "Access-Control-Allow-Origin" not in cli.headers


async def test_the_codec_server_answers_what_is_not_its_protocol_with_json_errors(
    codec_server: RunningCodecServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_server_module, "MAX_REQUEST_BYTES", 10_000)
    [encrypted] = await EncryptionCodec(TEST_KEYRING).encode([plain({"note": SENTINEL})])

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 1000

    async with httpx.AsyncClient(base_url=codec_server.url) as http:
        # A body over the server's own cap (declared, or sent in chunks): 413 before decoding.
        declared = await http.post("/decode", content=b" " * 20_000 + body([encrypted]).encode(), headers=headers())
        chunked = await http.post("/decode", content=chunks(), headers=headers())
        for refused in (declared, chunked):
            assert refused.status_code == 413 and "larger than 10000 bytes" in refused.json()["error"], refused.text
        # Only POST (and the preflight), only …/decode and …/encode; errors are JSON too.
        wrong_method = await http.get("/decode", headers=headers())
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]
        elsewhere = await http.post("/convert", content=body([encrypted]), headers=headers())
        assert elsewhere.status_code == 404 and "…/decode" in elsewhere.json()["error"]
        not_a_preflight = await http.options("/decode")
        assert not_a_preflight.status_code == 400
        # Under the cap, the same server decodes.
        decoded = await http.post("/decode", content=body([encrypted]), headers=headers())
        assert decoded.status_code == 200 and SENTINEL.encode() in base64.b64decode(decoded.json()["payloads"][0]["data"])


def test_the_codec_server_command_says_in_one_line_that_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {"MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(), "MENTORFLOW_CODEC_TOKENS": TOKEN,
               "MENTORFLOW_CODEC_PORT": str(taken.getsockname()[1])}  # fmt: skip
        result = CliRunner().invoke(app, ["codec-server"], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: configuration: the codec server cannot listen on 127.0.0.1:{env['MENTORFLOW_CODEC_PORT']}: "
        "Address already in use (MENTORFLOW_CODEC_HOST, MENTORFLOW_CODEC_PORT)"
    ]


async def test_the_temporal_cli_reads_history_through_the_codec_server(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, codec_server: RunningCodecServer, temporal_binary: str
) -> None:
    async with new_worker(dev_env.client, pool) as worker:
        handle = await start_relationship(dev_env.client, worker)
        await handle.execute_update("propose_match", cmd("coord-1", mentor_id="mentor-1"))
        await handle.execute_update("accept_match", cmd("mentee-1"))
        await handle.execute_update("accept_match", cmd("mentor-1"))
        terms = {**AGREEMENT, "objective": f"Objective {SENTINEL}"}
        await handle.execute_update("propose_agreement", cmd("mentee-1", terms=terms))
        await handle.terminate()

    show = [
        temporal_binary, "workflow", "show", "--workflow-id", handle.id, "--namespace", NAMESPACE,
        "--address", dev_env.client.service_client.config.target_host, "--output", "json",
    ]  # fmt: skip

    def run(*extra: str) -> str:
        result = subprocess.run([*show, *extra], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    without_codec = await asyncio.to_thread(run)
    with_codec = await asyncio.to_thread(run, "--codec-endpoint", codec_server.url, "--codec-auth", f"Bearer {TOKEN}")
    assert ENCODING in payload_bytes(json.loads(without_codec))
    assert SENTINEL.encode() not in payload_bytes(json.loads(without_codec))
    assert SENTINEL.encode() in payload_bytes(json.loads(with_codec))


def payload_bytes(value: Any) -> bytes:
    """Every payload's metadata and data in `temporal … --output json` (base64 there), decoded."""
    if isinstance(value, list):
        return b"".join(payload_bytes(item) for item in value)
    if not isinstance(value, dict):
        return b""
    if isinstance(value.get("data"), str) and isinstance(value.get("metadata"), dict):
        return b"".join(base64.b64decode(v) for v in [*value["metadata"].values(), value["data"]])
    return b"".join(payload_bytes(item) for item in value.values())


async def test_the_cli_refuses_an_oversized_command_and_names_a_missing_key(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    env = {
        "MENTORFLOW_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "MENTORFLOW_TEMPORAL_NAMESPACE": NAMESPACE,
        "MENTORFLOW_STATE_DIR": str(tmp_path),
        "MENTORFLOW_ENCRYPTION_KEYS": TEST_KEYRING.format(),
        "MENTORFLOW_MAX_PAYLOAD_BYTES": "4096",
    }
    async with new_worker(dev_env.client, pool) as worker:
        handle = await start_relationship(dev_env.client, worker)
        big = json.dumps(cmd("mentee-1", terms={**AGREEMENT, "objective": "o" * 3000, "early_exit_plan": "e" * 3000}))
        refused = await asyncio.to_thread(
            CliRunner().invoke, app, ["relationship", "send", handle.id, "propose_agreement", big], env=env
        )
        assert refused.exit_code == 2, refused.output
        assert "over the limit of 4096 bytes" in refused.stderr and "Traceback" not in refused.stderr
        assert "propose_agreement" not in await messages_in_history(handle)

        other_keys = {**env, "MENTORFLOW_ENCRYPTION_KEYS": format_key("k9", generate_key())}
        unreadable = await asyncio.to_thread(CliRunner().invoke, app, ["relationship", "show", handle.id], env=other_keys)
        assert unreadable.exit_code == 1, unreadable.output
        assert "'test-1' is not configured" in unreadable.stderr and "Traceback" not in unreadable.stderr
        await handle.terminate()


def test_compose_wires_the_web_ui_to_the_codec_server() -> None:
    # docker-compose.yml: the browser reaches the codec server through the gateway, which
    # adds the token (tests/security/test_compose_security.py checks the gateway and the secrets).
    from tests.support.compose_files import effective_command, environment, service, variables_read_from_files

    codec, ui, worker = service("mentorflow-codec"), service("temporal-ui"), service("mentorflow-worker")
    assert effective_command(codec) == ["mentorflow", "codec-server"]
    codec_env, ui_env = environment(codec), environment(ui)
    assert codec_env["MENTORFLOW_ENCRYPTION_KEYS_FILE"] == environment(worker)["MENTORFLOW_ENCRYPTION_KEYS_FILE"]
    assert {"MENTORFLOW_ENCRYPTION_KEYS", "MENTORFLOW_CODEC_TOKENS"} <= set(variables_read_from_files(codec))
    # The UI's endpoint is /codec on its own origin (the gateway's), the origin the codec server allows.
    endpoint = ui_env["TEMPORAL_CODEC_ENDPOINT"]
    assert endpoint.endswith("/codec") and endpoint.removesuffix("/codec") == codec_env["MENTORFLOW_CODEC_CORS_ORIGINS"]
    assert not codec.get("ports"), "the codec server is reached through the gateway only"
    assert codec_env["MENTORFLOW_TEMPORAL_NAMESPACE"] == ui_env["TEMPORAL_DEFAULT_NAMESPACE"]
    assert "MENTORFLOW_DATABASE_URL" not in codec_env  # it needs the keys, nothing else


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MENTORFLOW_CODEC_TOKENS", "short-token", "at least 32 characters"),
        ("MENTORFLOW_CODEC_CORS_ORIGINS", "https://ui.example.org/", "is not an origin"),
        ("MENTORFLOW_CODEC_CORS_ORIGINS", "ui.example.org", "is not an origin"),
        ("MENTORFLOW_MAX_PAYLOAD_BYTES", "10", "MENTORFLOW_MAX_PAYLOAD_BYTES"),
    ],
)
def test_codec_settings_are_checked_at_start(variable: str, value: str, message: str) -> None:
    from mentorflow.config import ConfigurationError

    with pytest.raises(ConfigurationError, match=message) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value) and (variable != "MENTORFLOW_CODEC_TOKENS" or value not in str(raised.value))
