"""Every email carries a link to stop that kind of message (issue #15), and its links live as
long as the programme's `link_lifetime_days` says — against real servers: a Temporal dev
server, PostgreSQL, a worker mailing through aiosmtpd with links to the API's pages.

- the link is taken from a captured email; GET and HEAD change nothing; a POST without the
  page's CSRF pair is refused; the button mutes that kind in the directory (audited with the
  link's person and purpose); the next email of that kind is not sent, others are; the same
  link gets them back;
- a coordinator (not a party) uses theirs too, and the coordinators' digest carries one;
- messages nobody may mute carry none, and a mute link for one is refused with a page;
- a relationship's links live as its stored settings say, the digest's as its programme's;
- the digest carries a coordinator's "nudge" link per relationship that waits for its parties:
  GET changes nothing, the button sends `nudge_relationship` once, audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.directory import Directory, merge_participant
from activities.notifications import DirectoryContacts, NotificationActivities
from activities.notifications_daytime import StoredDeliveryWindows
from activities.notifications_delivery_log import PostgresDeliveryLog
from activities.notifications_email import EmailChannel, SmtpConfig
from activities.template_texts import TEMPLATES
from events.digest import CoordinatorDigest, DigestItem, digest_notification
from events.people import Participant, Programme
from events.settings import ProgrammeSettings
from mentorflow.action_links import (
    KIND_WORDS,
    MUST_HEAR,
    ActionLink,
    LinkMaker,
    Purpose,
    link_scope,
    links_for,
    mute_link_for,
    new_link,
    sign,
    verify,
)
from mentorflow.config import Settings
from mentorflow.pages.access import csrf_cookie_name, csrf_field
from mentorflow.pages.mute import mute_page
from tests.support.api_support import COORDINATOR, ApiStack, api_stack
from tests.support.peers import SmtpServer, eventually
from tests.support.system_packages import CHROMIUM, UI_SCRIPTS
from tests.support.session import TEST_KEYRING, project_root
from worker import build_worker

pytestmark = pytest.mark.timeout(300)

MENTEE, MENTOR, OTHER_MENTOR = "emp-ada", "emp-grace", "emp-linus"
PEOPLE = [
    Participant(participant_id=MENTEE, display_name="Ada Lovelace", email="ada@example.org", timezone="Europe/Berlin"),
    Participant(participant_id=MENTOR, display_name="Grace Hopper", email="grace@example.org", timezone="America/New_York"),
    Participant(participant_id=OTHER_MENTOR, display_name="Linus Pauling", email="linus@example.org"),
    Participant(participant_id=COORDINATOR, display_name="Cora Ordinator", email="cora@example.org"),
]
URL_LINE = re.compile(r"^(?P<label>[^:\r\n]+): (?P<url>https?://[^\s/]+/p/[\w.=?-]+)", re.MULTILINE)
STOP = "Stop getting these emails"
LIFETIME_DAYS = 3


# -- without servers ------------------------------------------------------------------------------


def test_every_kind_of_message_has_plain_words_and_the_must_hear_ones_no_link() -> None:
    assert set(TEMPLATES) | {"coordinator_digest"} <= set(KIND_WORDS)
    assert MUST_HEAR <= set(KIND_WORDS)
    for template in KIND_WORDS:
        spec = mute_link_for(template)
        if template in MUST_HEAR:
            assert spec is None, template
        else:
            assert spec is not None and spec.purpose is Purpose.MUTE and spec.subject == template
            assert spec.label == f"{STOP} ({KIND_WORDS[template]})" and ":" not in spec.label


def test_the_mute_page_toggles_and_refuses_what_must_be_heard() -> None:
    ada = PEOPLE[0]
    page = mute_page("meeting_reminder", ada)
    assert page.intro[0] == f"{STOP}: reminders of your next meeting." and [f.choice for f in page.forms] == ["mute"]
    muted = mute_page("meeting_reminder", ada.model_copy(update={"muted_templates": ("meeting_reminder",)}))
    assert muted.title == "Get these emails again" and [f.choice for f in muted.forms] == ["unmute"]
    kept = mute_page("concern_raised", ada)
    assert kept.status == 403 and not kept.forms and "cannot be turned off" in kept.title


def test_the_lifetime_is_a_programme_setting_of_1_to_90_days() -> None:
    assert ProgrammeSettings().link_lifetime_days == 14
    assert ProgrammeSettings(link_lifetime_days=90).link_lifetime_days == 90
    for wrong in (0, 91):
        with pytest.raises(ValidationError, match="link_lifetime_days"):
            ProgrammeSettings(link_lifetime_days=wrong)


def test_an_import_that_names_no_mutes_keeps_them_and_one_that_does_replaces_them() -> None:
    now = datetime.now(UTC)
    stored = PEOPLE[0].model_copy(update={"muted_templates": ("nudge",)})
    again = Participant(participant_id=MENTEE, display_name="Ada King", email="ada@example.org")
    assert merge_participant(stored, again, now) == stored.model_copy(update={"display_name": "Ada King", "timezone": "UTC"})
    named = Participant.model_validate({**again.model_dump(), "muted_templates": []})
    merged = merge_participant(stored, named, now)
    assert merged is not None and merged.muted_templates == ()


def test_links_of_a_programme_message_name_the_programme() -> None:
    assert link_scope("programme/spring", "coordinator-digests/run") == ("spring", "programme/spring")
    assert link_scope("r-1", "relationship/spring/r-1") == ("spring", "r-1")
    assert link_scope("r-1", "relationship/spring/r-2") is None


def test_the_digest_links_a_nudge_per_relationship_that_waits_for_its_parties() -> None:
    items = (
        DigestItem(kind="at_risk", relationship_id="r-1", mentee_id=MENTEE, mentor_id=MENTOR, reasons=("quiet",)),
        DigestItem(kind="concerns", relationship_id="r-1", mentee_id=MENTEE, count=1, days=2),
        DigestItem(kind="waiting_for_mentor", relationship_id="r-2", mentee_id=MENTEE, days=3),
        DigestItem(kind="review_due", relationship_id="r-3", mentee_id=MENTEE, waiting_for=("mentor",)),
    )
    notification = digest_notification("spring", "Spring", date(2027, 3, 1), ProgrammeSettings(),
                                       CoordinatorDigest(coordinator_id=COORDINATOR, items=items))  # fmt: skip
    specs = links_for("coordinator_digest", notification.data)
    assert [(s.label, s.purpose, s.subject, s.relationship_id) for s in specs] == [
        ("Nudge relationship r-1", Purpose.NUDGE, "2027-03-01", "r-1"),
        ("Nudge relationship r-3", Purpose.NUDGE, "2027-03-01", "r-3")]  # fmt: skip


# -- against real servers ----------------------------------------------------------------------------


@dataclass
class Mail:
    stack: ApiStack
    smtp: SmtpServer
    programme: str
    relationship: str
    key: str

    def client(self) -> httpx.AsyncClient:
        """A browser of its own (cookies kept), one connection per request (uvicorn drops idle ones)."""
        client = httpx.AsyncClient(base_url=self.stack.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        self.stack._http.append(client)
        return client

    async def send(self, message: str, **payload: Any) -> None:
        answer = await self.stack.http(self.key).post(
            f"/v1/relationships/{self.programme}/{self.relationship}/commands/{message}",
            json={"command_id": f"t-{uuid.uuid4().hex}", **payload},
        )
        assert answer.status_code == 200, answer.text

    def texts(self, address: str, subject: str) -> list[str]:
        return [
            body.get_content()
            for received in self.smtp.inbox.messages
            if address in received.rcpt_tos and str(received.message["Subject"]) == subject
            if (body := received.message.get_body(("plain",))) is not None
        ]

    async def links(self, address: str, subject: str, count: int = 1) -> dict[str, str]:
        """label → URL of the `count`-th email to `address` with `subject` (waiting for it)."""
        texts = await eventually(lambda: (t := self.texts(address, subject))[count - 1:] and t, f"{subject} to {address}")
        return {m["label"]: m["url"] for m in URL_LINE.finditer(texts[count - 1])}

    async def muted(self, person: str) -> tuple[str, ...]:
        found = await Directory(self.stack.pool).get_participant(person)
        assert found is not None
        return found.muted_templates

    async def audit(self) -> list[tuple[Any, ...]]:
        rows = await self.stack.pool.fetch(
            "SELECT credential_kind, credential_id, credential_name, message, actor_id, outcome FROM api_audit "
            "WHERE credential_name = 'mute' ORDER BY audit_id"
        )
        return [tuple(row) for row in rows]


@pytest.fixture
async def mail(dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_server: SmtpServer) -> AsyncIterator[Mail]:
    async with api_stack(dev_env.client, pool, worker=False) as stack:
        await Directory(pool).upsert_participants(PEOPLE)
        programme = await stack.programme_with(delivery_window=None, link_lifetime_days=LIFETIME_DAYS)
        task_queue = stack.context.settings.task_queue
        settings = Settings(task_queue=task_queue, smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security="none",
                            smtp_from="Mentoring <mentoring@example.org>", public_url=stack.url)  # fmt: skip
        key = await stack.key("portal", programmes=[programme], may_act_as=("participants", "coordinators"))
        async with build_worker(dev_env.client, pool, task_queue, settings=settings):
            relationship = f"r-{uuid.uuid4().hex[:8]}"
            started = await stack.http(key).post("/v1/relationships", json={
                "programme_id": programme, "relationship_id": relationship, "mentee_id": MENTEE})  # fmt: skip
            assert started.status_code == 201, started.text
            yield Mail(stack, smtp_server, programme, relationship, key)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found[1]


def expires_in(url: str) -> timedelta:
    link = verify(TEST_KEYRING, url.split("/p/")[1].split("?")[0], now=datetime.now(UTC))
    return link.expires_at - datetime.now(UTC)


DIGEST = "Mentoring digest for API: 1 thing to look at"


async def send_digest(mail: Mail, item: DigestItem, day: date) -> int:
    """The programme's digest of `day` with one item to its coordinator, through the activity
    every notification takes, with links (as a worker with MENTORFLOW_PUBLIC_URL sends it)."""
    directory = Directory(mail.stack.pool)
    programme = await directory.get_programme(mail.programme)
    assert programme is not None
    sender = NotificationActivities(
        deliveries=PostgresDeliveryLog(mail.stack.pool), contacts=DirectoryContacts(directory),
        channels=[EmailChannel(SmtpConfig("127.0.0.1", "Mentoring <mentoring@example.org>", mail.smtp.port, "none"))],
        links=LinkMaker(TEST_KEYRING, mail.stack.url), lifetimes=StoredDeliveryWindows(mail.stack.pool),
    )  # fmt: skip
    digest = CoordinatorDigest(coordinator_id=COORDINATOR, items=(item,))
    sent: int = await ActivityEnvironment().run(
        sender.send_notifications, [digest_notification(mail.programme, "API", day, programme.settings, digest)]
    )
    return sent


def unanswered(mail: Mail, mentor: str) -> DigestItem:
    return DigestItem(kind="proposal_unanswered", relationship_id=mail.relationship, mentee_id=MENTEE, mentor_id=mentor,
                      days=4, waiting_for=("mentee", "mentor"), due=datetime.now(UTC) + timedelta(days=3))  # fmt: skip


async def test_a_mute_link_stops_that_kind_of_email_and_only_that(mail: Mail, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mentorflow.notifications")
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    proposed = await mail.links("ada@example.org", "Mentoring match proposed")
    assert not [label for label in proposed if label.startswith(STOP)]  # a match to answer: always heard
    await mail.send("decline_match", actor_id=MENTOR)
    links = await mail.links("ada@example.org", "Mentoring match declined")
    url = links[f"{STOP} (news that a proposed match was declined)"]
    assert abs(expires_in(url) - timedelta(days=LIFETIME_DAYS)) < timedelta(minutes=2)  # the programme's setting

    # Looking changes nothing: GET, HEAD, GET.
    browser = mail.client()
    page = await browser.get(url)
    assert page.status_code == 200 and f"{STOP}: news that a proposed match was declined." in page.text
    assert "Stop these emails" in page.text and MENTEE not in page.text
    assert (await browser.head(url)).status_code == 200
    page = await browser.get(url)
    assert await mail.muted(MENTEE) == () and await mail.audit() == []

    # Without the page's CSRF pair: refused, nothing muted, audited.
    refused = await mail.client().post(url, data={"choice": "mute", "csrf": csrf_of(page.text)})
    assert refused.status_code == 403 and await mail.muted(MENTEE) == ()

    # The button mutes (once: the second press changes nothing more).
    done = await browser.post(url, data={"choice": "mute", "csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "You will no longer get these emails" in done.text
    assert "Changed your mind? Get these emails again" in done.text
    again = await browser.post(url, data={"choice": "mute", "csrf": csrf_of(page.text)})
    assert again.status_code == 200
    assert await mail.muted(MENTEE) == ("match_declined",)
    assert await mail.audit() == [
        ("link", MENTEE, "mute", "(page)", MENTEE, "csrf_refused"),
        ("link", MENTEE, "mute", "mute_emails", MENTEE, "applied"),
        ("link", MENTEE, "mute", "mute_emails", MENTEE, "replay"),
    ]

    # The next decline reaches the mentor and the coordinator, not Ada; other kinds still reach her.
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=OTHER_MENTOR)
    await mail.links("ada@example.org", "Mentoring match proposed", count=2)
    await mail.send("decline_match", actor_id=OTHER_MENTOR)
    await mail.links("linus@example.org", "Mentoring match declined")
    coordinator = await mail.links("cora@example.org", "Mentoring match declined", count=2)
    await eventually(lambda: f"{MENTEE} muted match_declined; skipped" in caplog.text, "the muted decline skipped")
    assert len(mail.texts("ada@example.org", "Mentoring match declined")) == 1

    # A coordinator is not one of the two people, and still uses theirs.
    page = await mail.client().get(coordinator[f"{STOP} (news that a proposed match was declined)"])
    assert page.status_code == 200 and "Stop these emails" in page.text and "My relationship" not in page.text

    # The same link gets them back.
    page = await browser.get(url)
    assert "You no longer get these emails: news that a proposed match was declined." in page.text
    back = await browser.post(url, data={"choice": "unmute", "csrf": csrf_of(page.text)})
    assert back.status_code == 200 and "You will get these emails again" in back.text
    assert await mail.muted(MENTEE) == () and (await mail.audit())[-1][3:] == ("unmute_emails", MENTEE, "applied")

    # Every email has a plain-text part (the body itself, or the first part beside an invite).
    assert mail.smtp.inbox.messages
    for received in mail.smtp.inbox.messages:
        assert received.message.get_content_type() in ("text/plain", "multipart/mixed")
        body = received.message.get_body(("plain",))
        assert body is not None and body.get_content_type() == "text/plain" and body.get_content().strip()


async def test_must_hear_kinds_are_refused_and_lifetimes_follow_the_settings(mail: Mail) -> None:
    # A mute link for a match to answer (no email carries one): a page that says why; a POST,
    # even with a valid CSRF pair, changes nothing.
    kept = new_link(MENTEE, mail.programme, mail.relationship, Purpose.MUTE, now=datetime.now(UTC), subject="match_proposed")
    token = sign(TEST_KEYRING, kept)
    page = await mail.client().get(f"/p/{token}")
    assert page.status_code == 403 and "These emails cannot be turned off" in page.text and "<form" not in page.text
    refused = await mail.client().post(f"/p/{token}", headers={"Cookie": f"{csrf_cookie_name(token)}=nonce-1"},
                                       data={"choice": "mute", "csrf": csrf_field(mail.stack.context, token, "nonce-1")})
    assert refused.status_code == 403 and "cannot be turned off" in refused.text
    assert await mail.muted(MENTEE) == () and await mail.audit() == [
        ("link", MENTEE, "mute", "mute_emails", MENTEE, "not_allowed")]  # fmt: skip

    # The programme now says 9 days: the relationship keeps the 3 it started with...
    directory = Directory(mail.stack.pool)
    settings = ProgrammeSettings(coordinator_ids=(COORDINATOR,), delivery_window=None, link_lifetime_days=9)
    await directory.create_or_update_programme(Programme(programme_id=mail.programme, name="API", settings=settings))
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    links = await mail.links("grace@example.org", "Mentoring match proposed")
    assert abs(expires_in(links["My relationship"]) - timedelta(days=LIFETIME_DAYS)) < timedelta(minutes=2)

    # ...and the digest, a message of the whole programme, takes the programme's 9.
    waiting = DigestItem(kind="waiting_for_mentor", relationship_id=mail.relationship, mentee_id=MENTEE, days=3)
    today = date.today()
    assert await send_digest(mail, waiting, today) == 1
    links = await mail.links("cora@example.org", DIGEST)
    url = links[f"{STOP} (the coordinators' digest of what needs you)"]
    assert abs(expires_in(url) - timedelta(days=9)) < timedelta(minutes=2)
    link: ActionLink = verify(TEST_KEYRING, url.split("/p/")[1], now=datetime.now(UTC))
    assert (link.person_id, link.relationship_id, link.subject) == (COORDINATOR, f"programme/{mail.programme}", "coordinator_digest")

    # The coordinator mutes it from the digest itself: the next day's is not sent.
    browser = mail.client()
    page = await browser.get(url)
    done = await browser.post(url, data={"choice": "mute", "csrf": csrf_of(page.text)})
    assert done.status_code == 200 and await mail.muted(COORDINATOR) == ("coordinator_digest",)
    assert await send_digest(mail, waiting, today + timedelta(days=1)) == 0



async def test_a_coordinator_nudges_from_the_digest(mail: Mail) -> None:
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    await mail.links("ada@example.org", "Mentoring match proposed")
    assert await send_digest(mail, unanswered(mail, MENTOR), date.today()) == 1
    url = (await mail.links("cora@example.org", DIGEST))[f"Nudge relationship {mail.relationship}"]

    async def events() -> list[str]:
        rows = await mail.stack.pool.fetch("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY version",
                                           mail.relationship)  # fmt: skip
        return [row["event_type"] for row in rows]

    before = await events()
    browser = mail.client()
    assert (await browser.head(url)).status_code == 200
    page = await browser.get(url)
    assert page.status_code == 200 and "Ada Lovelace and Grace Hopper: the proposed match waits for an answer." in page.text
    assert "This sends the reminder again to Ada Lovelace and Grace Hopper." in page.text and "My relationship" not in page.text
    assert await events() == before and await mail.audit() == []
    done = await browser.post(url, data={"choice": "nudge", "csrf": csrf_of(page.text)})
    assert done.status_code == 200 and "The reminder went out to them again." in done.text
    again = await browser.post(url, data={"choice": "nudge", "csrf": csrf_of(page.text)})
    assert again.status_code == 200 and "done already" in again.text
    assert await events() == [*before, "RelationshipNudged"]
    await mail.links("ada@example.org", "Mentoring match proposed", count=2)  # the reminder, again
    rows = await mail.stack.pool.fetch(
        "SELECT credential_id, credential_name, message, actor_id, outcome FROM api_audit WHERE credential_kind = 'link' "
        "ORDER BY audit_id")  # fmt: skip
    assert [tuple(row) for row in rows] == [(COORDINATOR, "nudge", "nudge_relationship", COORDINATOR, "applied"),
                                            (COORDINATOR, "nudge", "nudge_relationship", COORDINATOR, "replay")]  # fmt: skip
    # The page now says it was done; a party's link of the same kind is refused.
    assert "can be nudged once a day" in (await browser.get(url)).text
    parties = new_link(MENTEE, mail.programme, mail.relationship, Purpose.NUDGE, now=datetime.now(UTC))
    assert (await mail.client().get(f"/p/{sign(TEST_KEYRING, parties)}")).status_code == 410


# -- in a real browser --------------------------------------------------------------------------------

async def test_the_mute_and_nudge_pages_on_a_phone(page_browser: Path, mail: Mail, tmp_path: Path) -> None:
    """tests/ui/pages.mjs at 375 px: axe-core finds nothing, each fits, its button is reached
    and pressed with the keyboard (screenshots kept in tests/artifacts/pages/)."""
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=MENTOR)
    await mail.send("decline_match", actor_id=MENTOR)
    mute = (await mail.links("ada@example.org", "Mentoring match declined"))[f"{STOP} (news that a proposed match was declined)"]
    await mail.send("propose_match", actor_id=COORDINATOR, mentor_id=OTHER_MENTOR)
    assert await send_digest(mail, unanswered(mail, OTHER_MENTOR), date.today()) == 1
    nudge = (await mail.links("cora@example.org", DIGEST))[f"Nudge relationship {mail.relationship}"]
    kept = new_link(MENTEE, mail.programme, mail.relationship, Purpose.MUTE, now=datetime.now(UTC), subject="concern_raised")
    steps = [
        {"name": "people-mute", "url": mute, "press": "Stop these emails", "expect": "You will no longer get these emails"},
        {"name": "people-mute-kept", "url": f"{mail.stack.url}/p/{sign(TEST_KEYRING, kept)}"},
        {"name": "people-nudge", "url": nudge, "press": "Send the reminder again", "expect": "The reminder went out"},
    ]
    config = {"chromium": str(CHROMIUM), "axe": str(UI_SCRIPTS / "node_modules" / "axe-core" / "axe.min.js"),
              "screenshots": str(tmp_path), "width": 375, "pages": steps}  # fmt: skip
    node = await asyncio.create_subprocess_exec("node", str(UI_SCRIPTS / "pages.mjs"), json.dumps(config), cwd=UI_SCRIPTS,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(node.communicate(), 180)
    assert out.strip(), err.decode()[-3000:]
    results = {result.get("name"): result for result in json.loads(out.decode().splitlines()[-1])["pages"]}
    assert set(results) == {"people-mute", "people-mute-kept", "people-nudge"}, results
    assert [results[name]["status"] for name in ("people-mute", "people-mute-kept", "people-nudge")] == [200, 403, 200]
    for result in results.values():
        for seen in (result["page"], result.get("answer", result["page"])):
            assert seen["violations"] == [] and seen["width"] <= 375, (result["name"], seen)
        assert result.get("reachedByKeyboard", "press" not in result), result["name"]
    assert "cannot be turned off" in results["people-mute-kept"]["page"]["text"]
    assert await mail.muted(MENTEE) == ("match_declined",)
    artifacts = project_root() / "tests" / "artifacts" / "pages"
    artifacts.mkdir(parents=True, exist_ok=True)
    for shot in tmp_path.glob("*.png"):
        shutil.copy(shot, artifacts / shot.name)
