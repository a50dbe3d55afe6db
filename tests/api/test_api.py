"""The HTTP API end to end: a real uvicorn server on loopback, a real Temporal dev server, a
real worker and PostgreSQL. A relationship's whole life through the API alone, every refusal
code with its HTTP status, every way a credential is refused (and that nothing changed),
idempotent retries, and a stopped worker (503, then completion on retry)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.support.api_support import COORDINATOR, ApiStack, api_stack
from tests.support.helpers import new_worker

MENTEE, MENTOR = "emp-1042", "emp-311"

TERMS = {
    "objective": "Grow into a tech lead",
    "goals": [
        {"goal_id": "design", "title": "Lead two design reviews",
         "milestones": [{"milestone_id": "first-review", "title": "First review led"}]},
        {"title": "Meet three staff engineers"},
    ],
    "meeting_frequency": "biweekly",
    "meeting_minutes": 60,
    "term_months": 6,
}  # fmt: skip


def new_id(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Driver:
    """Sends commands through the API and checks each answer."""

    def __init__(self, stack: ApiStack, programme: str, relationship: str, http: dict[str, httpx.AsyncClient]):
        self.stack, self.programme, self.relationship, self.http = stack, programme, relationship, http
        self.path = f"/v1/relationships/{programme}/{relationship}"
        self.applied = 0

    async def send(self, as_: str, message: str, body: dict[str, Any], *, status: int = 200, **headers: str) -> Any:
        if "Idempotency-Key" not in headers:
            body = {"command_id": new_id("c"), **body}
        response = await self.http[as_].post(f"{self.path}/commands/{message}", json=body, headers=headers)
        assert response.status_code == status, (message, response.status_code, response.text)
        self.applied += status == 200
        return response.json()

    async def state(self, as_: str = "coordinator") -> dict[str, Any]:
        response = await self.http[as_].get(self.path)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def start(stack: ApiStack, http: httpx.AsyncClient, relationship: str | None = None, mentee: str = MENTEE) -> str:
    relationship = relationship or new_id()
    response = await http.post(
        "/v1/relationships",
        json={"programme_id": stack.programme, "relationship_id": relationship, "mentee_id": mentee},
    )
    assert response.status_code == 201, response.text
    assert response.json()["workflow_id"] == f"relationship/{stack.programme}/{relationship}"
    return relationship


async def to_agreement(driver: Driver) -> None:
    await driver.send("coordinator", "propose_match", {"actor_id": COORDINATOR, "mentor_id": MENTOR})
    await driver.send("participants", "accept_match", {"actor_id": MENTEE})
    answer = await driver.send("participants", "accept_match", {"actor_id": MENTOR})
    assert answer["phase"] == "agreement"


async def to_active(driver: Driver) -> None:
    await to_agreement(driver)
    await driver.send("participants", "propose_agreement", {"actor_id": MENTEE, "terms": TERMS})
    version = (await driver.state())["agreement"]["agreement_version"]
    await driver.send("participants", "sign_agreement", {"actor_id": MENTEE, "agreement_version": version})
    answer = await driver.send("participants", "sign_agreement", {"actor_id": MENTOR, "agreement_version": version})
    assert answer["phase"] == "active"


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> Any:
    async with api_stack(dev_env.client, pool) as stack:
        yield stack


async def clients(stack: ApiStack) -> dict[str, httpx.AsyncClient]:
    return {
        "coordinator": stack.http(await stack.key("coordinator-tool", may_act_as=("coordinators",))),
        "participants": stack.http(await stack.key("hr-portal", may_act_as=("participants",))),
        "reader": stack.http(await stack.key("dashboard")),
    }


# -- the seed lifecycle -------------------------------------------------------------------------------


async def test_a_relationship_lives_its_whole_life_through_the_api(stack: ApiStack) -> None:
    http = await clients(stack)
    relationship = await start(stack, http["coordinator"])
    driver = Driver(stack, stack.programme, relationship, http)
    await to_active(driver)

    state = await driver.state()
    activated = datetime.fromisoformat(state["activated_at"])
    recorders = [MENTOR, MENTEE]
    meeting = 0
    while state["feedback_round"] == 0:
        assert meeting < state["settings"]["feedback_every_sessions"], "no feedback round was requested"
        held_at = max(datetime.now(UTC), activated + timedelta(milliseconds=1)).isoformat()
        await driver.send("participants", "record_meeting", {
            "actor_id": recorders[meeting % 2], "held_at": held_at, "duration_minutes": 60,
            "meeting_number": state["next_meeting"]["meeting_number"], "notes": f"secret session notes {meeting}",
        })  # fmt: skip
        meeting += 1
        state = await driver.state()
    await driver.send("participants", "record_goal_progress",
                      {"actor_id": MENTEE, "goal_id": "design", "progress_percent": 50, "milestones_reached": ["first-review"]})
    round_ = state["feedback_round"]
    await driver.send("participants", "submit_feedback", {"actor_id": MENTEE, "feedback_round": round_, "score": 4})
    await driver.send("participants", "submit_feedback", {"actor_id": MENTOR, "feedback_round": round_, "score": 5})
    await driver.send("coordinator", "request_review", {"actor_id": COORDINATOR})
    await driver.send("participants", "submit_review", {"actor_id": MENTEE, "outcome": "continue"})
    answer = await driver.send("participants", "submit_review", {"actor_id": MENTOR, "outcome": "continue"})
    assert answer["phase"] == "active"
    await driver.send("participants", "close_relationship", {"actor_id": MENTEE, "note": "changed teams"})
    await driver.send("participants", "submit_reflection", {"actor_id": MENTEE, "text": "I run design reviews now."})
    answer = await driver.send("participants", "submit_reflection", {"actor_id": MENTOR, "text": "A rewarding half year."})
    assert answer["phase"] == "closed"
    assert (await driver.state("reader"))["phase"] == "closed"

    # The event store, paged; confidential text decrypted for acting keys only.
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = (await http["participants"].get(f"{driver.path}/events", params={"after_version": after, "limit": 7})).json()
        events += page["events"]
        if page["next_after_version"] is None:
            break
        after = page["next_after_version"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    held = [e for e in events if e["type"] == "MeetingHeld"]
    assert [e["notes"] for e in held] == [f"secret session notes {n}" for n in range(meeting)]
    sealed = (await http["reader"].get(f"{driver.path}/events", params={"limit": 1000})).json()["events"]
    assert [e["notes"] for e in sealed if e["type"] == "MeetingHeld"] == ["[encrypted]"] * meeting

    # The audit record: every command, with the key behind it.
    audit = (await http["coordinator"].get(f"{driver.path}/audit", params={"limit": 1000})).json()["audit"]
    assert len(audit) == driver.applied + 1  # and the start
    assert {row["credential_name"] for row in audit} == {"coordinator-tool", "hr-portal"}
    assert audit[-1]["message"] == "start" and audit[-1]["outcome"] == "started"
    assert all(row["outcome"] in ("applied", "started") for row in audit)
    forbidden = await http["participants"].get(f"{driver.path}/audit")
    assert forbidden.status_code == 403


async def test_list_reads_visibility_and_is_scoped_to_the_key(stack: ApiStack) -> None:
    http = await clients(stack)
    mine = await start(stack, http["coordinator"], mentee="emp-list-1")
    other_programme = await stack.programme_with()
    other_key = stack.http(await stack.key("other", [other_programme], ("coordinators",)))
    response = await other_key.post("/v1/relationships", json={
        "programme_id": other_programme, "relationship_id": new_id(), "mentee_id": "emp-list-2"})  # fmt: skip
    assert response.status_code == 201
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # eventually consistent: the search attributes arrive after the first flush
        page = (await http["reader"].get("/v1/relationships", params={"mentee_id": "emp-list-1"})).json()
        if page["relationships"]:
            break
        assert asyncio.get_running_loop().time() < deadline, page
        await asyncio.sleep(0.3)
    assert page["consistency"] == "eventual"
    assert [row["workflow_id"] for row in page["relationships"]] == [f"relationship/{stack.programme}/{mine}"]
    # A key never sees another programme's relationships, even unfiltered.
    everything = (await http["reader"].get("/v1/relationships", params={"page_size": 1000})).json()["relationships"]
    assert {row["programme_id"] for row in everything} <= {stack.programme}
    refused = await http["reader"].get("/v1/relationships", params={"programme_id": other_programme})
    assert refused.status_code == 403 and refused.json()["code"] == "not_allowed"
    bad = await http["reader"].get("/v1/relationships", params={"phase": "nonsense"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    # What visibility itself refuses is the caller's mistake too, never a 5xx (found by Schemathesis).
    odd = await http["reader"].get("/v1/relationships", params={"due_before": "0827-09-24T05:29:56Z"})
    assert odd.status_code in (200, 422), odd.text

    # Pages: a token the API gave out, for the same filters only.
    for n in range(2):
        await start(stack, http["coordinator"], mentee=f"emp-page-{n}")
    filters = {"programme_id": stack.programme, "include_closed": "true"}
    while len((await http["reader"].get("/v1/relationships", params=filters)).json()["relationships"]) < 3:
        assert asyncio.get_running_loop().time() < deadline + 30
        await asyncio.sleep(0.3)
    first = (await http["reader"].get("/v1/relationships", params=filters | {"page_size": 2})).json()
    assert len(first["relationships"]) == 2 and first["next_page_token"]
    rest = (await http["reader"].get("/v1/relationships", params=filters | {"page_size": 2, "page_token": first["next_page_token"]})).json()
    seen = {row["workflow_id"] for row in first["relationships"] + rest["relationships"]}
    assert len(seen) == 3
    started = asyncio.get_running_loop().time()
    for token in ("AAAA", "%%%", first["next_page_token"][:-4] + "AAAA"):
        refused = await http["reader"].get("/v1/relationships", params=filters | {"page_size": 2, "page_token": token})
        assert refused.status_code == 422 and refused.json()["problems"][0]["field"] == "query.page_token"
    other_filters = await http["reader"].get("/v1/relationships", params={"page_token": first["next_page_token"]})
    assert other_filters.status_code == 422
    assert asyncio.get_running_loop().time() - started < 2  # refused here, not after Temporal's retries


# -- refusals ----------------------------------------------------------------------------------------


async def test_every_refusal_code_has_its_http_status(stack: ApiStack) -> None:
    http = await clients(stack)
    both = stack.http(await stack.key("both", may_act_as=("participants", "coordinators")))
    relationship = await start(stack, http["coordinator"])
    driver = Driver(stack, stack.programme, relationship, http | {"both": both})

    def check(answer: dict[str, Any], code: str, status: int) -> None:
        assert answer["code"] == code and answer["status"] == status, answer
        assert answer["type"] == f"/v1/problems/{code}"

    # invalid_payload 422, every field named
    answer = await driver.send("coordinator", "propose_match", {"actor_id": COORDINATOR, "mentor_id": 42, "oops": 1}, status=422)
    check(answer, "invalid_payload", 422)
    assert {p["field"] for p in answer["problems"]} == {"mentor_id", "(unknown field)"}
    # unknown_message 404
    check(await driver.send("coordinator", "propose_nothing", {"actor_id": COORDINATOR}, status=404), "unknown_message", 404)
    # wrong_phase 409
    check(await driver.send("participants", "sign_agreement", {"actor_id": MENTEE, "agreement_version": 1}, status=409),
          "wrong_phase", 409)
    # not_allowed 403 (by the relationship's rules: a stranger is no party)
    check(await driver.send("both", "raise_concern", {"actor_id": "emp-stranger", "text": "x"}, status=403),
          "not_allowed", 403)
    await driver.send("coordinator", "propose_match", {"actor_id": COORDINATOR, "mentor_id": MENTOR})
    # conflict 409
    await driver.send("participants", "accept_match", {"actor_id": MENTEE})
    check(await driver.send("participants", "accept_match", {"actor_id": MENTEE}, status=409), "conflict", 409)
    # command_id_reused 409
    first = await driver.send("participants", "raise_concern", {"command_id": "c-reused", "actor_id": MENTEE, "text": "a"})
    assert first["applied"] is True
    check(await driver.send("participants", "raise_concern", {"command_id": "c-reused", "actor_id": MENTEE, "text": "b"},
                            status=409), "command_id_reused", 409)  # fmt: skip
    await driver.send("participants", "accept_match", {"actor_id": MENTOR})
    # not_found 404
    check(await driver.send("participants", "sign_agreement", {"actor_id": MENTEE, "agreement_version": 1}, status=404),
          "not_found", 404)
    # limit 422
    too_long = TERMS | {"meeting_minutes": 400, "term_months": 30}
    answer = await driver.send("participants", "propose_agreement", {"actor_id": MENTEE, "terms": too_long}, status=422)
    check(answer, "limit", 422)
    assert {p["field"] for p in answer["problems"]} == {"terms.meeting_minutes", "terms.term_months"}
    # not_found for a relationship that does not exist
    missing = await http["coordinator"].post(f"/v1/relationships/{stack.programme}/nobody/commands/request_review",
                                             json={"command_id": "c1", "actor_id": COORDINATOR})  # fmt: skip
    check(missing.json(), "not_found", 404)
    # a body that is no JSON object
    not_json = await http["participants"].post(f"{driver.path}/commands/accept_match", content=b"[1, 2")
    check(not_json.json(), "invalid_payload", 422)
    # the meaning of each code is served where `type` points
    meaning = (await http["reader"].get("/v1/problems/wrong_phase")).json()
    assert meaning["status"] == 409 and "phase" in meaning["meaning"]


async def test_internal_error_answers_500(stack: ApiStack) -> None:
    """A refusal the relationship reports as its own fault maps to 500 (see temporal.refusal_of)."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    from mentorflow.api.temporal import refusal_of

    error = WorkflowUpdateFailedError(ApplicationError(
        "x could not be processed (internal error)", {"code": "internal_error", "reason": "x could not be processed", "problems": []},
        type="internal_error", non_retryable=True))  # fmt: skip
    problem = refusal_of(error)
    assert (problem.status, problem.code) == (500, "internal_error")
    assert (refusal_of(WorkflowUpdateFailedError(ApplicationError("boom", type="ValueError"))).status) == 500


# -- idempotency --------------------------------------------------------------------------------------


async def test_retries_with_the_same_key_are_safe(stack: ApiStack) -> None:
    http = await clients(stack)
    relationship = await start(stack, http["coordinator"])
    driver = Driver(stack, stack.programme, relationship, http)
    body = {"actor_id": COORDINATOR, "mentor_id": MENTOR}
    first = await driver.send("coordinator", "propose_match", body, **{"Idempotency-Key": "hr-1"})
    again = await driver.send("coordinator", "propose_match", body, **{"Idempotency-Key": "hr-1"})
    assert first["command_id"] == again["command_id"] == "hr-1"
    assert (first["applied"], first["replay"]) == (True, False)
    assert (again["applied"], again["replay"]) == (False, True)
    assert again["version"] == first["version"] and again["events"] == first["events"]
    # Both given and different: refused, nothing sent.
    differ = await http["coordinator"].post(f"{driver.path}/commands/request_review",
                                            json={"command_id": "a", "actor_id": COORDINATOR},
                                            headers={"Idempotency-Key": "b"})  # fmt: skip
    assert differ.status_code == 422 and differ.json()["problems"][0]["field"] == "command_id"
    # The same start twice: 200, created false.
    response = await http["coordinator"].post("/v1/relationships", json={
        "programme_id": stack.programme, "relationship_id": relationship, "mentee_id": MENTEE})  # fmt: skip
    assert response.status_code == 200 and response.json()["created"] is False
    response = await http["coordinator"].post("/v1/relationships", json={
        "programme_id": stack.programme, "relationship_id": relationship, "mentee_id": "someone-else"})  # fmt: skip
    assert response.status_code == 409 and response.json()["code"] == "conflict"


# -- authentication and authorization -------------------------------------------------------------------


async def stored_events(pool: asyncpg.Pool, relationship: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", relationship)
    return count


async def test_refused_credentials_change_nothing(stack: ApiStack) -> None:
    http = await clients(stack)
    relationship = await start(stack, http["coordinator"])
    driver = Driver(stack, stack.programme, relationship, http)
    await driver.send("coordinator", "propose_match", {"actor_id": COORDINATOR, "mentor_id": MENTOR})
    handle = stack.client.get_workflow_handle(f"relationship/{stack.programme}/{relationship}")
    before_history = len((await handle.fetch_history()).events)
    before_events = await stored_events(stack.pool, relationship)
    path = f"{driver.path}/commands/accept_match"
    body = {"command_id": "c-auth", "actor_id": MENTEE}

    revoked = await stack.key("revoked", may_act_as=("participants",))
    await stack.store.revoke((await stack.store.list())[-1].key_id)
    expired = await stack.key("expired", may_act_as=("participants",),
                              expires_at=datetime.now(UTC) - timedelta(seconds=1))  # fmt: skip
    other_programme = await stack.key("elsewhere", ["another-programme"], ("participants", "coordinators"))
    cases: list[tuple[str, dict[str, str], dict[str, Any], int]] = [
        ("no credential", {}, body, 401),
        ("not a key", {"Authorization": "Bearer mfk_0123456789abcdef_" + "x" * 43}, body, 401),
        ("garbage", {"Authorization": "Basic Zm9vOmJhcg=="}, body, 401),
        ("revoked key", {"Authorization": f"Bearer {revoked}"}, body, 401),
        ("expired key", {"Authorization": f"Bearer {expired}"}, body, 401),
        ("a token with no single sign-on configured", {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}, body, 401),
        ("other programme", {"Authorization": f"Bearer {other_programme}"}, body, 403),
        ("read-only key", {"Authorization": f"Bearer {stack.keys['dashboard']}"}, body, 403),
        ("participants key as a coordinator", {"Authorization": f"Bearer {stack.keys['hr-portal']}"},
         {"command_id": "c-auth", "actor_id": COORDINATOR}, 403),
        ("coordinators key as a participant", {"Authorization": f"Bearer {stack.keys['coordinator-tool']}"}, body, 403),
        ("an internal actor", {"Authorization": f"Bearer {stack.keys['coordinator-tool']}"},
         {"command_id": "c-auth", "actor_id": "matching-engine"}, 403),
        ("the directory", {"Authorization": f"Bearer {stack.keys['hr-portal']}"},
         {"command_id": "c-auth", "actor_id": "directory"}, 403),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=stack.url) as anonymous:
        for name, headers, payload, status in cases:
            response = await anonymous.post(path, json=payload, headers=headers)
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"].startswith("application/problem+json"), name
            assert response.json()["code"] == ("unauthenticated" if status == 401 else "not_allowed"), name
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Bearer"), name
            # reads are refused the same way
            if name in ("no credential", "revoked key", "other programme"):
                read = await anonymous.get(driver.path, headers=headers)
                assert read.status_code == status, (name, read.text)
    assert len((await handle.fetch_history()).events) == before_history
    assert await stored_events(stack.pool, relationship) == before_events
    # A start by a refused credential starts nothing.
    refused = await http["reader"].post("/v1/relationships", json={
        "programme_id": stack.programme, "relationship_id": "never", "mentee_id": MENTEE})  # fmt: skip
    assert refused.status_code == 403
    described = await http["reader"].get(f"/v1/relationships/{stack.programme}/never")
    assert described.status_code == 404
    # The refusals after authentication are in the audit record, with the key behind them.
    audit = (await http["coordinator"].get(f"{driver.path}/audit", params={"limit": 100})).json()["audit"]
    denied = {(row["credential_name"], row["outcome"]) for row in audit if row["command_id"] == "c-auth"}
    assert ("elsewhere", "not_allowed") in denied and ("dashboard", "not_allowed") in denied


async def test_key_rotation_keeps_both_keys_valid_until_the_grace_ends(stack: ApiStack) -> None:
    old = await stack.key("rotating")
    key_id = (await stack.store.list())[-1].key_id
    new_record, new, old_record = await stack.store.rotate(key_id, grace=timedelta(hours=1))
    assert new_record.rotated_from == key_id and old_record.expires_at is not None
    for credential in (old, new):
        assert (await stack.http(credential).get(f"/v1/programmes/{stack.programme}")).status_code == 200
    # Rotated out by another process (here another store, as `mentorflow api-keys` would):
    # refused once the replica's trust in the key it verified runs out (key_cache_seconds).
    await stack.store.rotate(new_record.key_id, grace=timedelta(0))
    loop = asyncio.get_running_loop()
    rotated_at, bound = loop.time(), stack.context.api.key_cache_seconds
    while (await stack.http(new).get(f"/v1/programmes/{stack.programme}")).status_code == 200:
        assert loop.time() - rotated_at < bound + 1, "a rotated-out key was still accepted past the bound"
        await asyncio.sleep(0.2)
    assert (await stack.http(new).get(f"/v1/programmes/{stack.programme}")).status_code == 401
    assert (await stack.store.get(key_id)).last_used_at is not None  # type: ignore[union-attr]


async def test_rate_limit_and_body_cap(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    async with api_stack(dev_env.client, pool, rate_limit=1, rate_burst=3) as stack:
        reader = stack.http(await stack.key("busy"))
        statuses = [(await reader.get(f"/v1/programmes/{stack.programme}")).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[-1] == 429
        limited = await reader.get(f"/v1/programmes/{stack.programme}")
        assert limited.json()["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
        # Another credential has its own bucket.
        other = stack.http(await stack.key("calm", may_act_as=("participants",)))
        assert (await other.get(f"/v1/programmes/{stack.programme}")).status_code == 200
        big = await other.post(f"/v1/relationships/{stack.programme}/r-1/commands/raise_concern",
                               content=b'{"text": "' + b"x" * (300 * 1024) + b'"}',
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert big.status_code == 413 and big.json()["code"] == "payload_too_large"

        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 10_000

        chunked = await other.post(f"/v1/relationships/{stack.programme}/r-1/commands/raise_concern", content=chunks())
        assert chunked.status_code == 413
        # No CORS unless configured.
        preflight = await other.options("/v1/relationships", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert "access-control-allow-origin" not in preflight.headers


# -- a stopped worker ------------------------------------------------------------------------------------


async def test_a_stopped_worker_answers_503_then_a_retry_completes(dev_env: WorkflowEnvironment, pool: asyncpg.Pool) -> None:
    async with api_stack(dev_env.client, pool, worker=False, command_timeout=2) as stack:
        http = await clients(stack)
        both = stack.http(await stack.key("both", may_act_as=("participants", "coordinators")))
        task_queue = stack.context.settings.task_queue
        async with new_worker(stack.client, pool, task_queue=task_queue):
            relationship = await start(stack, http["coordinator"])
            driver = Driver(stack, stack.programme, relationship, http | {"both": both})
            await driver.send("both", "propose_match", {"actor_id": COORDINATOR, "mentor_id": MENTOR})
        # No worker now: a bounded wait, then 503 with Retry-After, never a hung connection.
        started = asyncio.get_running_loop().time()
        body = {"command_id": "accept-1", "actor_id": MENTEE}
        response = await both.post(f"{driver.path}/commands/accept_match", json=body)
        waited = asyncio.get_running_loop().time() - started
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "unavailable" and int(response.headers["retry-after"]) > 0
        assert waited < 10
        state = await http["reader"].get(driver.path)
        assert state.status_code == 503
        async with new_worker(stack.client, pool, task_queue=task_queue):
            retried = await both.post(f"{driver.path}/commands/accept_match", json=body)
            assert retried.status_code == 200, retried.text
            answer = retried.json()
            assert answer["command_id"] == "accept-1"
            # Applied once: by this retry, or by the first send once the worker came back.
            current = (await http["reader"].get(driver.path)).json()
            assert current["candidate"]["accepted_by"] == ["mentee"]
            events = (await http["participants"].get(f"{driver.path}/events", params={"limit": 1000})).json()["events"]
            assert len([e for e in events if e["type"] == "MatchAccepted"]) == 1


# -- ./run dev ---------------------------------------------------------------------------------------------


async def test_the_dev_stack_serves_the_api_with_a_key_in_the_state_folder(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    from contextlib import AsyncExitStack

    from mentorflow.api.serving import start_dev_api
    from mentorflow.config import Settings
    from tests.support.session import TEST_KEYRING

    settings = Settings(encryption_keys=TEST_KEYRING.format(), state_dir=tmp_path)  # type: ignore[arg-type]
    for _ in range(2):  # a second start keeps the key
        async with AsyncExitStack() as stack:
            api = await start_dev_api(stack, settings, dev_env.client, pool, tmp_path)
            key = api.key_file.read_text().strip()
            async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as http:
                assert (await http.get("/v1/programmes")).status_code == 200
            assert api.key_file.stat().st_mode & 0o777 == 0o600
    assert len(await pool.fetch("SELECT 1 FROM api_keys")) == 1
