"""People act from their inbox, against real servers: a Temporal dev server, PostgreSQL, a
worker that mails through a real SMTP server (aiosmtpd) with links to the API's pages, and
the API serving them. Every link is taken from a captured email.

- GET and HEAD of a link change nothing (state version, event store, audit);
- a POST from the page, with its CSRF pair, sends the command once (a second POST is a
  replay) and is audited with the link's person and purpose; a POST without it is refused;
- a link edited to another person, relationship or purpose, an expired one, one whose
  person left and one of a forgotten relationship are refused with nothing changed; a key
  rotation keeps older links working;
- a scanner fetching (HEAD, GET) every link of every email changes nothing;
- in headless Chromium at 375 px: each page passes axe-core, fits the width, and its button
  is reached and pressed with the keyboard (screenshots in tests/artifacts/pages/).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.directory import Directory
from events.people import Participant
from mentorflow.action_links import Purpose, new_link, sign, verify
from mentorflow.config import Settings
from mentorflow.forgetting import TemporalRuns, forget_relationship
from mentorflow.keyring import Keyring, format_key, generate_key
from mentorflow.pages.access import csrf_cookie_name
from tests.support.api_support import COORDINATOR, ApiStack, api_stack
from tests.support.session import TEST_KEYRING, project_root
from tests.support.helpers import RecordingChannel
from tests.support.peers import SmtpServer, eventually
from tests.support.system_packages import CHROMIUM, UI_SCRIPTS
from worker import build_worker

pytestmark = pytest.mark.timeout(300)

MENTEE, MENTOR = "emp-ada", "emp-grace"
PEOPLE = [
    Participant(participant_id=MENTEE, display_name="Ada Lovelace", email="ada@example.org", timezone="Europe/Berlin"),
    Participant(participant_id=MENTOR, display_name="Grace Hopper", email="grace@example.org", timezone="America/New_York"),
]
LINK_LINE = re.compile(r"^(?P<label>[^:\n]+): (?P<url>https?://\S+/p/[A-Za-z0-9_.=?-]+)", re.MULTILINE)


def client_of(stack: ApiStack, key: str | None = None) -> httpx.AsyncClient:
    """An HTTP client that opens a connection per request: between requests the test waits for
    emails and browsers for seconds, and uvicorn closes idle connections after 5 s (a request
    racing that close fails with a ReadError)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    client = httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=60,
                               limits=httpx.Limits(max_keepalive_connections=0))  # fmt: skip
    stack._http.append(client)  # closed with the stack
    return client


def form_csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found[1]


class Inbox:
    """The API with a worker that mails its links, the SMTP server catching the mail, and a
    relationship of Ada (mentee) and Grace (mentor) in a programme with no quiet hours."""

    def __init__(self, stack: ApiStack, smtp: SmtpServer, programme: str, relationship: str, key: str) -> None:
        self.stack, self.smtp, self.programme, self.relationship = stack, smtp, programme, relationship
        self.api = client_of(stack, key)
        self.browser = client_of(stack)  # a person's browser: keeps the pages' cookies
        self.path = f"/v1/relationships/{programme}/{relationship}"

    async def command(self, message: str, **payload: Any) -> dict[str, Any]:
        answer = await self.api.post(f"{self.path}/commands/{message}", json={"command_id": f"t-{uuid.uuid4().hex}", **payload})
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def state(self) -> dict[str, Any]:
        answer = await self.api.get(self.path)
        state: dict[str, Any] = answer.json()
        return state

    async def snapshot(self) -> tuple[int, int, int]:
        """What any action would change: the state's version, the stored events, the audit rows."""
        pool = self.stack.pool
        events = await pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", self.relationship)
        audit = await pool.fetchval("SELECT count(*) FROM api_audit WHERE relationship_id = $1", self.relationship)
        return (await self.state())["version"], events, audit

    def mails(self, address: str) -> list[tuple[str, str]]:
        """(subject, plain text) of every email to `address`, in order."""
        found = []
        for received in self.smtp.inbox.messages:
            if address in received.rcpt_tos:
                body = received.message.get_body(("plain",))
                assert body is not None
                found.append((str(received.message["Subject"]), body.get_content()))
        return found

    async def links(self, address: str, subject: str) -> dict[str, str]:
        """The links (label → URL) of the newest email to `address` with `subject`."""
        texts = await eventually(lambda: [text for s, text in self.mails(address) if s == subject], f"{subject} to {address}")
        return {match["label"]: match["url"] for match in LINK_LINE.finditer(texts[-1])}

    async def open(self, url: str, status: int = 200) -> str:
        page = await self.browser.get(url)
        assert page.status_code == status, page.text
        assert page.headers["content-type"].startswith("text/html")
        return page.text

    async def press(self, url: str, page: str, status: int = 200, **form: str) -> str:
        """Press a button on `page`: its form's CSRF value, with the browser's cookie."""
        answer = await self.browser.post(url.split("?")[0], data={"csrf": form_csrf(page), **form})
        assert answer.status_code == status, answer.text
        return answer.text


@pytest.fixture
async def inbox(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer) -> AsyncIterator[Inbox]:
    async with api_stack(dev_env.client, pool, worker=False) as stack:
        await Directory(pool).upsert_participants(PEOPLE)
        programme = await stack.programme_with(delivery_window=None, feedback_every_sessions=1)
        task_queue = stack.context.settings.task_queue
        settings = Settings(task_queue=task_queue, smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security="none",
                            smtp_from="Mentoring <mentoring@example.org>", public_url=stack.url)  # fmt: skip
        key = await stack.key("portal", programmes=[programme], may_act_as=("participants", "coordinators"))
        async with build_worker(dev_env.client, pool, task_queue, settings=settings, channels=[RecordingChannel()]):
            relationship = f"r-{uuid.uuid4().hex[:8]}"
            started = await stack.http(key).post("/v1/relationships", json={
                "programme_id": programme, "relationship_id": relationship, "mentee_id": MENTEE})  # fmt: skip
            assert started.status_code == 201, started.text
            yield Inbox(stack, smtp_server, programme, relationship, key)


async def test_people_answer_their_emails_and_each_press_counts_once(inbox: Inbox) -> None:
    await inbox.command("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    links = await inbox.links("ada@example.org", "Mentoring match proposed")
    assert set(links) == {"Accept or decline the match", "My relationship", "Raise a concern privately"}
    url = links["Accept or decline the match"]

    # Looking changes nothing: GET, HEAD, again.
    before = await inbox.snapshot()
    page = await inbox.open(url)
    assert "Grace Hopper has been proposed as your mentor." in page and MENTOR not in page
    assert (await inbox.browser.head(url)).status_code == 200
    page = await inbox.open(url)
    assert await inbox.snapshot() == before

    # A POST without the page's CSRF pair: refused, nothing changed (but audited).
    stranger = client_of(inbox.stack)
    refused = await stranger.post(url, data={"choice": "accept"})
    assert refused.status_code == 403
    forged = await stranger.post(url, data={"choice": "accept", "csrf": "0" * 64})
    assert forged.status_code == 403
    version, events, audit = await inbox.snapshot()
    assert (version, events) == before[:2] and audit == before[2] + 2

    # The button: applied once; the same press again is a replay.
    done = await inbox.press(url, page, choice="accept")
    assert "You accepted the match" in done
    again = await inbox.press(url, page, choice="accept")
    assert "This was done already" in again
    state = await inbox.state()
    assert state["candidate"]["accepted_by"] == ["mentee"]
    assert state["version"] == before[0] + 1
    rows = await inbox.stack.pool.fetch(
        "SELECT credential_kind, credential_id, credential_name, message, actor_id, outcome, command_id FROM api_audit "
        "WHERE relationship_id = $1 AND credential_kind = 'link' AND outcome IN ('applied', 'replay') ORDER BY audit_id",
        inbox.relationship)  # fmt: skip
    assert [tuple(row)[:6] for row in rows] == [
        ("link", MENTEE, "match_answer", "accept_match", MENTEE, "applied"),
        ("link", MENTEE, "match_answer", "accept_match", MENTEE, "replay")]  # fmt: skip
    assert rows[0]["command_id"] == rows[1]["command_id"]

    # Grace accepts from her email; Ada writes the agreement from the match's email, Grace signs from hers.
    links = await inbox.links("grace@example.org", "Mentoring match proposed")
    page = await inbox.open(links["Accept or decline the match"])
    await inbox.press(links["Accept or decline the match"], page, choice="accept")
    await write_the_agreement(inbox)
    await inbox.command("sign_agreement", actor_id=MENTEE, agreement_version=1)
    links = await inbox.links("grace@example.org", "Mentoring agreement to review")
    page = await inbox.open(links["Read and sign the agreement"])
    assert "Grow into a tech lead" in page and "Run a design review" in page and "Tell each other first." in page
    await inbox.press(links["Read and sign the agreement"], page, choice="sign:1")
    assert (await inbox.state())["phase"] == "active"

    # "We moved it": a new time in Grace's own zone (New York), from the scheduled meeting's email.
    links = await inbox.links("grace@example.org", "Mentoring meeting 1 scheduled")
    moved = links["We moved it"]
    page = await inbox.open(moved)
    assert "(America/New_York)" in page
    new_york = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    soon = (new_york + timedelta(days=2)).replace(hour=10, minute=30, second=0, microsecond=0)
    await inbox.press(moved, page, choice="moved", starts_at=soon.strftime("%Y-%m-%dT%H:%M"))
    state = await inbox.state()
    assert datetime.fromisoformat(state["next_meeting"]["starts_at"]) == soon

    # "We met", once the meeting's time has come (moved to a moment from now through the API).
    await inbox.command("reschedule_meeting", actor_id=MENTEE, meeting_number=1,
                        starts_at=(datetime.now(UTC) + timedelta(seconds=3)).isoformat())  # fmt: skip
    await asyncio.sleep(3.5)
    page = await inbox.open(moved)
    assert "We met" in page
    assert "recorded as held" in await inbox.press(moved, page, choice="met")
    assert (await inbox.state())["meetings_held"] == 1

    # Feedback: the score chosen in the email, confirmed on the page, with a comment.
    links = await inbox.links("ada@example.org", "Time for mentoring feedback")
    assert [label for label in links if "of 5" in label] == [f"{n} of 5" for n in range(1, 6)]
    page = await inbox.open(links["4 of 5"])
    assert "You chose 4 in the email" in page
    await inbox.press(links["4 of 5"], page, choice="feedback", score="4", comment="Very useful")
    assert [(s["party"], s["score"]) for s in (await inbox.state())["feedback_scores"]] == [("mentee", 4)]

    # A concern, privately; "My relationship" and its calendar entry.
    links = await inbox.links("ada@example.org", "Time for mentoring feedback")
    page = await inbox.open(links["Raise a concern privately"])
    await inbox.press(links["Raise a concern privately"], page, choice="concern", text="We keep running out of time.")
    assert (await inbox.state())["concerns_raised"] == 1
    mine = await inbox.open(links["My relationship"])
    assert "Grace Hopper" in mine and "(Europe/Berlin)" in mine and "Meetings held" in mine
    assert inbox.relationship not in mine and MENTOR not in mine
    ics = await inbox.browser.get(links["My relationship"] + "/meeting.ics")
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert b"BEGIN:VEVENT" in ics.content

    await change_a_goal(inbox, links["My relationship"])
    await scanner_changes_nothing(inbox)


async def test_a_form_open_in_a_tab_still_works_after_its_link_is_opened_again(inbox: Inbox) -> None:
    await inbox.command("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    links = await inbox.links("ada@example.org", "Mentoring match proposed")
    url = links["Accept or decline the match"]
    first = await inbox.browser.get(url)
    cookie = csrf_cookie_name(url.split("/p/")[1].split("?")[0])
    assert [c for c in first.headers.get_list("set-cookie") if c.startswith(f"{cookie}=")]
    old_tab = first.text

    # The same browser opens the link again (another tab, a reload), another link, and a HEAD:
    # the browser's nonce stays, so the page's CSRF value does too. A HEAD never sets a cookie.
    again = await inbox.browser.get(url)
    assert "set-cookie" not in again.headers and form_csrf(again.text) == form_csrf(old_tab)
    concern = await inbox.browser.get(links["Raise a concern privately"])
    assert concern.status_code == 200 and cookie not in concern.headers.get("set-cookie", "")
    assert "set-cookie" not in (await inbox.browser.head(url)).headers
    assert "set-cookie" not in (await client_of(inbox.stack).head(url)).headers

    # Still refused: no field, another browser's field with this cookie, this field with another's cookie.
    before = await inbox.snapshot()
    stranger = client_of(inbox.stack)
    theirs = form_csrf((await stranger.get(url)).text)
    assert theirs != form_csrf(old_tab)
    for browser, form in ((inbox.browser, {}), (inbox.browser, {"csrf": theirs}), (stranger, {"csrf": form_csrf(old_tab)})):
        refused = await browser.post(url, data={"choice": "accept", **form})
        assert refused.status_code == 403 and "Please press the button on the page" in refused.text
    version, events, audit = await inbox.snapshot()
    assert (version, events) == before[:2] and audit == before[2] + 3

    # The first tab's form: applied, and so is the concern page's, opened in between.
    assert "You accepted the match" in await inbox.press(url, old_tab, choice="accept")
    assert "went to the programme coordinators" in await inbox.press(links["Raise a concern privately"], concern.text,
                                                                      choice="concern", text="Just checking.")  # fmt: skip
    assert (await inbox.state())["candidate"]["accepted_by"] == ["mentee"]


class FormBoxes(HTMLParser):
    """What a browser sends for one form of a page: its inputs (a checkbox or radio button only
    when checked) and text boxes, as filled in."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []
        self.textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({})
        elif tag == "input" and self.forms and (found.get("type") not in ("checkbox", "radio") or "checked" in found):
            self.forms[-1][found["name"]] = found.get("value", "")
        elif tag == "textarea" and self.forms:
            self.textarea = found["name"]
            self.forms[-1][self.textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self.textarea = None

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.forms[-1][self.textarea] += data


def boxes(page: str, choice: str) -> dict[str, Any]:
    parser = FormBoxes()
    parser.feed(page)
    form = next(f for f in parser.forms if f.get("choice") == choice)
    return {name: value for name, value in form.items() if name != "csrf"}


AGREEMENT: dict[str, Any] = {"objective": "Grow into a tech lead", "goal1:title": "Run a design review", "meeting_frequency": "weekly",
             "meeting_minutes": "60", "term_months": "6", "early_exit_plan": "Tell each other first."}  # fmt: skip


async def proposals(inbox: Inbox, event_type: str) -> list[str]:
    """The command ids of the relationship's stored events of `event_type`."""
    rows = await inbox.stack.pool.fetch("SELECT command_id FROM events WHERE stream_id = $1 AND event_type = $2",
                                        inbox.relationship, event_type)  # fmt: skip
    return [row["command_id"] for row in rows]


async def write_the_agreement(inbox: Inbox) -> None:
    """Ada writes the agreement from "Write the agreement" in the match's email: a bad form is
    refused in words with everything kept and nothing changed; sent twice, it counts once."""
    write = (await inbox.links("ada@example.org", "Mentoring match confirmed"))["Write the agreement"]
    page = await inbox.open(write)
    assert "Write your mentoring agreement" in page and "every two weeks" in page and "We meet by video" in page
    before = await inbox.snapshot()
    bad = {**boxes(page, "propose"), **AGREEMENT, "goal2:measure": "two reviews led", "meeting_minutes": "300"}
    refused = await inbox.press(write, page, 422, **bad)
    assert "Goal 2 has no words for the goal itself" in refused and "15 to 120 minutes" in refused
    kept = boxes(refused, "propose")
    assert (kept["goal2:measure"], kept["objective"], kept["meeting_frequency"]) == ("two reviews led", "Grow into a tech lead",
                                                                                       "weekly")  # fmt: skip
    assert await inbox.snapshot() == before and await proposals(inbox, "AgreementProposed") == []
    sent = {**kept, "goal2:measure": "", "meeting_minutes": "60"}  # fixed on the page that refused it (its CSRF pair)
    assert "You proposed the agreement" in await inbox.press(write, refused, **sent)
    assert "This was done already" in await inbox.press(write, refused, **sent)
    agreement = (await inbox.state())["agreement"]
    assert agreement["agreement_version"] == 1 and agreement["proposed_by"] == MENTEE
    assert [g["title"] for g in agreement["terms"]["goals"]] == ["Run a design review"]
    stored = await proposals(inbox, "AgreementProposed")
    assert len(stored) == 1 and stored[0].startswith("link-")
    assert "You proposed version 1" in await inbox.open(write)


async def change_a_goal(inbox: Inbox, mine: str) -> None:
    """Ada proposes a change to a goal from "My relationship"; sent twice, it counts once; Grace
    acknowledges it from her email."""
    found = re.search(r'<a href="(/p/[^"]+)">Propose a change to a goal</a>', await inbox.open(mine))
    assert found is not None
    change = found[1]
    page = await inbox.open(change)
    sent = {**boxes(page, "change:g1"), "title": "Run two design reviews", "rationale": "The first went well"}
    assert "You proposed the change" in await inbox.press(change, page, **sent)
    assert "This was done already" in await inbox.press(change, page, **sent)
    assert len(await proposals(inbox, "GoalRevisionProposed")) == 1
    acknowledge = (await inbox.links("grace@example.org", "A goal change to acknowledge"))["Read and acknowledge the change"]
    page = await inbox.open(acknowledge)
    assert "Run two design reviews" in page and "Why, in Ada Lovelace&#39;s words" in page and "The first went well" in page
    await inbox.press(acknowledge, page, choice="acknowledge")
    assert (await inbox.state())["goals"]["g1"]["goal"]["title"] == "Run two design reviews"


async def scanner_changes_nothing(inbox: Inbox) -> None:
    """A mail scanner fetches every link of every email (HEAD, then GET) with a fresh client:
    nothing changes."""
    before = await inbox.snapshot()
    urls = [m["url"] for _, text in inbox.mails("ada@example.org") + inbox.mails("grace@example.org")
            for m in LINK_LINE.finditer(text)]  # fmt: skip
    assert len(urls) > 20
    scanner = client_of(inbox.stack)
    for url in urls:
        assert (await scanner.head(url)).status_code in (200, 409), url
        assert (await scanner.get(url)).status_code in (200, 409), url
    assert await inbox.snapshot() == before


def reclaimed(url: str, **claims: Any) -> str:
    """The link with some claims replaced, its signature kept: a forgery."""
    base, token = url.split("/p/")
    body, signature = token.split("?")[0].split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{base}/p/{forged}.{signature}"


async def test_links_that_must_not_work_change_nothing(inbox: Inbox, dev_env: WorkflowEnvironment) -> None:
    await inbox.command("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    url = (await inbox.links("ada@example.org", "Mentoring match proposed"))["Accept or decline the match"]
    before = await inbox.snapshot()
    for forged in (reclaimed(url, p=MENTOR), reclaimed(url, r="r-other"), reclaimed(url, u="sign_agreement"),
                   reclaimed(url, u="propose_agreement", s="0"), reclaimed(url, u="change_goal", s=""),
                   reclaimed(url, e=int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()))):  # fmt: skip
        assert "was changed after it was sent" in await inbox.open(forged, 403)
        assert (await inbox.browser.post(forged, data={"choice": "accept"})).status_code == 403
    assert "incomplete" in await inbox.open(url.rsplit(".", 1)[0], 400)
    expired = new_link(MENTEE, inbox.programme, inbox.relationship, Purpose.MATCH_ANSWER,
                       now=datetime.now(UTC) - timedelta(days=15), subject=MENTOR)  # fmt: skip
    assert "has expired" in await inbox.open(f"/p/{sign(TEST_KEYRING, expired)}", 410)
    unknown_key = Keyring.generate("retired-key")  # a key no longer in the keyring
    assert "no longer valid" in await inbox.open(f"/p/{sign(unknown_key, verify(TEST_KEYRING, url.split('/p/')[1].split('?')[0], now=datetime.now(UTC)))}", 403)
    assert await inbox.snapshot() == before

    # A new active key: links signed with the old one work until they expire; new ones use the new key.
    context = inbox.stack.context
    rotated = Keyring.parse(f"{format_key('test-2', generate_key())} {TEST_KEYRING.format()}")
    context.keyring = rotated
    try:
        page = await inbox.open(url)
        await inbox.press(url, page, choice="accept")
        fresh = new_link(MENTOR, inbox.programme, inbox.relationship, Purpose.MY_RELATIONSHIP, now=datetime.now(UTC))
        token = sign(rotated, fresh)
        assert verify(rotated, token, now=datetime.now(UTC)).person_id == MENTOR and json.loads(
            base64.urlsafe_b64decode(token.split(".")[0] + "==="))["k"] == "test-2"
        await inbox.open(f"/p/{token}")
    finally:
        context.keyring = TEST_KEYRING

    # Grace leaves the organisation: her links stop working at once.
    grace = (await inbox.links("grace@example.org", "Mentoring match proposed"))["My relationship"]
    await inbox.open(grace)
    await Directory(inbox.stack.pool).mark_left(MENTOR)
    assert "no longer in the programme" in await inbox.open(grace, 410)

    # A forgotten relationship: closed, forgotten, and its links refused.
    ada = (await inbox.links("ada@example.org", "Mentoring match proposed"))["My relationship"]
    closed = await inbox.api.post(f"{inbox.path}/commands/close_relationship",
                                  json={"command_id": "t-close", "actor_id": COORDINATOR})  # fmt: skip
    assert closed.status_code in (200, 409), closed.text  # 409: Grace's leaving closed it first
    for _ in range(200):
        if (await inbox.state())["phase"] == "closed":
            break
        await asyncio.sleep(0.1)
    keyless = Client(dev_env.client.service_client, namespace=dev_env.client.namespace)  # forget decodes nothing
    temporal = TemporalRuns(keyless, wait=60, poll_interval=0.1)
    await forget_relationship(inbox.stack.pool, inbox.relationship, forgotten_by="ops-7", temporal=temporal)
    assert "has been removed" in await inbox.open(ada, 410)


# -- in a real browser -----------------------------------------------------------------------------

ARTIFACTS = project_root() / "tests" / "artifacts" / "pages"


async def in_browser(pages: list[dict[str, Any]], screenshots: Path) -> list[dict[str, Any]]:
    """tests/ui/pages.mjs over `pages` at 375 px: each page's status, axe-core violations,
    width and text, and the same for the page its button led to."""
    node = shutil.which("node")
    assert node is not None
    config = {"chromium": str(CHROMIUM), "axe": str(UI_SCRIPTS / "node_modules" / "axe-core" / "axe.min.js"),
              "screenshots": str(screenshots), "width": 375, "pages": pages}  # fmt: skip
    process = await asyncio.create_subprocess_exec(node, str(UI_SCRIPTS / "pages.mjs"), json.dumps(config), cwd=UI_SCRIPTS,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
    lines = stdout.decode().strip().splitlines()
    assert lines, f"pages.mjs printed nothing (exit {process.returncode}):\n{stderr.decode()[-3000:]}"
    results: list[dict[str, Any]] = json.loads(lines[-1])["pages"]
    assert not any("error" in result for result in results), results[-1]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in screenshots.glob("*.png"):
        shutil.copy(shot, ARTIFACTS / shot.name)
    for result in results:
        if "page" not in result:  # scanned only
            continue
        seen = [result["page"], *([result["answer"]] if "answer" in result else [])]
        assert result["status"] == 200, result
        for checked in seen:
            assert checked["violations"] == [], (result["name"], checked["violations"])
            assert checked["width"] <= 375, (result["name"], checked["width"])
        if "answer" in result:
            assert result["reachedByKeyboard"], result["name"]
    return results


async def test_the_pages_on_a_phone_pass_an_accessibility_check(page_browser: Path, inbox: Inbox, tmp_path: Path) -> None:
    await inbox.command("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    ada = await inbox.links("ada@example.org", "Mentoring match proposed")
    await in_browser([
        {"name": "match", "url": ada["Accept or decline the match"], "press": "Accept the match",
         "expect": "You accepted the match"},
        {"name": "concern", "url": ada["Raise a concern privately"], "fill": {"textarea[name=text]": "We never meet."},
         "press": "Send to the coordinators", "expect": "Your concern went to the programme coordinators"},
    ], tmp_path)  # fmt: skip
    state = await inbox.state()
    assert state["candidate"]["accepted_by"] == ["mentee"] and state["concerns_raised"] == 1

    await inbox.command("accept_match", actor_id=MENTOR)
    # Ada writes the agreement: a goal without its words is refused on the page, changing nothing; then it is sent.
    write = (await inbox.links("ada@example.org", "Mentoring match confirmed"))["Write the agreement"]
    typed = {"textarea[name=objective]": "Grow into a tech lead", "input[name='goal1:title']": "Run a design review",
             "input[name='goal1:measure']": "two reviews led", "textarea[name='goal1:milestones']": "Shadow one",
             "input[name=meeting_minutes]": "45", "input[name=term_months]": "6"}  # fmt: skip
    version, events, audit = await inbox.snapshot()
    await in_browser([
        {"name": "agreement-refused", "url": write, "fill": {**typed, "input[name='goal2:measure']": "a second review"},
         "check": ["input[value=biweekly]"], "press": "Propose the agreement", "expect": "Goal 2 has no words"},
        {"name": "agreement-write", "url": write, "fill": typed, "check": ["input[value=biweekly]"],
         "press": "Propose the agreement", "expect": "You proposed the agreement"},
    ], tmp_path)  # fmt: skip
    # One command, one event, one audit row: the refused press changed nothing.
    assert await inbox.snapshot() == (version + 1, events + 1, audit + 1)
    terms = (await inbox.state())["agreement"]["terms"]
    assert (terms["objective"], terms["meeting_frequency"], terms["meeting_minutes"], terms["term_months"]) == (
        "Grow into a tech lead", "biweekly", 45, 6)  # fmt: skip
    assert terms["goals"] == [{"goal_id": "g1", "title": "Run a design review", "measure": "two reviews led",
                               "target_date": None, "milestones": [{"milestone_id": "m1", "title": "Shadow one"}]}]  # fmt: skip
    assert len(await proposals(inbox, "AgreementProposed")) == 1
    await inbox.command("sign_agreement", actor_id=MENTEE, agreement_version=1)
    grace = await inbox.links("grace@example.org", "Mentoring agreement to review")
    await in_browser([
        {"name": "agreement", "url": grace["Read and sign the agreement"], "press": "Sign version 1",
         "expect": "You signed the agreement"},
    ], tmp_path)  # fmt: skip
    moved = (await inbox.links("grace@example.org", "Mentoring meeting 1 scheduled"))["We moved it"]
    later = (datetime.now(UTC).astimezone(ZoneInfo("America/New_York")) + timedelta(days=3)).replace(
        hour=16, minute=15, second=0, microsecond=0)  # fmt: skip
    # Grace proposes a goal change from "My relationship" (its link "Propose a change to a goal").
    found = re.search(r'<a href="(/p/[^"]+)">Propose a change to a goal</a>', await inbox.open(grace["My relationship"]))
    assert found is not None
    results = await in_browser([
        {"name": "meeting", "url": moved, "fill": {"input[name=starts_at]": later.strftime("%Y-%m-%dT%H:%M")},
         "press": "We moved it", "expect": "The meeting is moved"},
        {"name": "my-relationship", "url": grace["My relationship"]},
        {"name": "goal-propose", "url": inbox.stack.url + found[1], "fill": {"input[name=title]": "Run two design reviews",
         "textarea[name=rationale]": "The first went well."}, "press": "Propose this change",
         "expect": "You proposed the change"},
    ], tmp_path)  # fmt: skip
    state = await inbox.state()
    assert state["phase"] == "active" and datetime.fromisoformat(state["next_meeting"]["starts_at"]) == later
    assert "Ada Lovelace" in results[1]["page"]["text"] and "(America/New_York)" in results[1]["page"]["text"]
    assert "Propose a change to a goal" in results[1]["page"]["text"]
    assert len(await proposals(inbox, "GoalRevisionProposed")) == 1

    # The meeting's time comes; Ada acknowledges the goal change; a review is asked for.
    await inbox.command("reschedule_meeting", actor_id=MENTEE, meeting_number=1,
                        starts_at=(datetime.now(UTC) + timedelta(seconds=2)).isoformat())  # fmt: skip
    await asyncio.sleep(2.5)
    met = (await inbox.links("ada@example.org", "Mentoring meeting 1 moved"))["We moved it"]
    change = (await inbox.links("ada@example.org", "A goal change to acknowledge"))["Read and acknowledge the change"]
    await in_browser([
        {"name": "meeting-held", "url": met, "press": "We met", "expect": "recorded as held"},
        {"name": "goal-change", "url": change, "press": "Acknowledge the change", "expect": "You acknowledged the change"},
    ], tmp_path)  # fmt: skip
    feedback = (await inbox.links("ada@example.org", "Time for mentoring feedback"))["4 of 5"]
    await inbox.command("request_review", actor_id=COORDINATOR)
    review = (await inbox.links("ada@example.org", "Mentoring review requested"))["Write your review"]
    await in_browser([
        {"name": "feedback", "url": feedback, "fill": {"textarea[name=comment]": "Very useful"}, "press": "Score 4 of 5",
         "expect": "Thank you for your feedback"},
        {"name": "review", "url": review, "check": ["input[value=continue]"], "press": "Submit my review",
         "expect": "your review is in"},
    ], tmp_path)  # fmt: skip
    await inbox.command("submit_review", actor_id=MENTOR, outcome="continue")
    await inbox.command("close_relationship", actor_id=MENTEE)
    reflection = (await inbox.links("grace@example.org", "Reflect on your mentoring"))["Write your closing reflection"]
    await in_browser([
        {"name": "reflection", "url": reflection, "fill": {"textarea[name=text]": "A rewarding year."},
         "press": "Send my reflection", "expect": "Thank you for your reflection"},
    ], tmp_path)  # fmt: skip
    state = await inbox.state()
    assert state["meetings_held"] == 1 and [(s["party"], s["score"]) for s in state["feedback_scores"]] == [("mentee", 4)]
    assert state["goals"]["g1"]["goal"]["title"] == "Run two design reviews" and state["reflections_from"] == ["mentor"]
    assert state["reviews_completed"] == ["on_demand"]

    # A mail scanner's browser opens every link of every email, running what the pages run: nothing changes.
    before = await inbox.snapshot()
    urls = [m["url"] for _, text in inbox.mails("ada@example.org") + inbox.mails("grace@example.org")
            for m in LINK_LINE.finditer(text)]  # fmt: skip
    scanned = await in_browser([{"name": f"scan-{n}", "url": url, "scan": True} for n, url in enumerate(urls)], tmp_path)
    assert len(scanned) == len(urls) > 20 and {result["status"] for result in scanned} <= {200, 409}
    assert await inbox.snapshot() == before
