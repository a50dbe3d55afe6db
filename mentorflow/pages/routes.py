"""The pages under /p/: GET and HEAD show, only a POST from a button press acts.

- `GET|HEAD /p/{token}` checks the link (`access.open_link`) and shows its page. It changes
  nothing anywhere: no command, no audit row, nothing written but a cookie. A GET sets the
  form's CSRF cookie (a random nonce, `SameSite=Strict`, `HttpOnly`, one per link) unless the
  browser has one already, which it keeps (a HEAD never sets one): opening the link again, in
  another tab or from another email, leaves a form already open valid. Each form carries
  `HMAC(key, token + nonce)`: the standard double submit, bound to the link.
- `POST /p/{token}` checks the link again, then the CSRF pair, then turns the pressed button
  into the relationship's command (`actions.command_for`) and sends it as the HTTP API does:
  `read_command` validation, the workflow update of the same name, the same refusal codes.
  Its `command_id` is `link.command_id(<the command's content>)`: a double click or a form
  sent again is the same command, applied once. Every POST on a valid link is audited in
  `api_audit` with credential kind `link` (the link's person and purpose).
- `GET /p/{token}/meeting.ics`: the next meeting as a calendar entry.
- A link to stop one kind of email (`Purpose.MUTE`, `mute.py`) takes the same road: GET shows,
  a POST with the CSRF pair mutes (or unmutes) it in the directory, audited the same way.

No page carries a script; forms are plain HTML, so a mail scanner that fetches or renders a
link (even running scripts) submits nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from activities.api_audit import AuditEntry
from activities.templates import MeetingInvite, calendar_invite
from events.commands import COMMAND_TYPES, read_command
from events.model import GoalRevisionProposed
from events.refusals import Rejection
from events.relationship_io import CommandResult
from mentorflow.action_links import ActionLink, Purpose, sign
from mentorflow.api.app import ApiContext, context_of
from mentorflow.api.problems import ApiProblem
from mentorflow.api.temporal import bounded
from mentorflow.pages.access import (
    Opened,
    OpenedMute,
    Refusal,
    csrf_cookie_name,
    csrf_field,
    csrf_valid,
    kept_nonce,
    new_nonce,
    open_any,
)
from mentorflow.pages.actions import command_for, page_for, with_reason
from mentorflow.pages.forms import FormProblem
from mentorflow.pages.mute import AUDITED, may_mute, mute_choice, mute_done, mute_page
from mentorflow.pages.views import Page, refilled

log = logging.getLogger("mentorflow.pages")

router = APIRouter(prefix="/p", include_in_schema=False)
_templates = Environment(loader=PackageLoader("mentorflow.pages", "templates"), autoescape=select_autoescape(["html"]))
CSS = resources.files("mentorflow.pages").joinpath("templates/pages.css").read_text(encoding="utf-8")
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    # The token is in the URL: never send it on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}
FORM_COOKIE_SECONDS = 12 * 3600

DONE_WORDS = {
    "accept_match": "You accepted the match. When the other person accepts too, you will both get an email.",
    "decline_match": "You declined the match. Your programme coordinator will be in touch.",
    "sign_agreement": "You signed the agreement.",
    "record_meeting": "Thank you: the meeting is recorded as held.",
    "reschedule_meeting": "The meeting is moved. You will both get an updated calendar invitation.",
    "report_meeting_not_held": "Thank you: the meeting is recorded as not held. Agree on a new time soon.",
    "correct_meeting_report": "Thank you: the meeting's record is corrected.",
    "submit_feedback": "Thank you for your feedback.",
    "acknowledge_goal_revision": "You acknowledged the change; it is now part of your plan.",
    "submit_review": "Thank you: your review is in.",
    "submit_reflection": "Thank you for your reflection.",
    "raise_concern": "Your concern went to the programme coordinators; the other person is not told.",
    "record_goal_progress": "Thank you: your goal's progress is saved.",
    "nudge_relationship": "The reminder went out to them again.",
    "propose_agreement": "You proposed the agreement. The other person gets an email to read and sign it; sign it "
                         "yourself too (\"My relationship\" leads there).",
    "propose_goal_revision": "You proposed the change. The other person gets an email to acknowledge it; until then "
                             "the goal stays as it was.",
}
REFUSED_WORDS = {
    "invalid_payload": "That did not work: please check what you entered.",
    "limit": "That did not work: please check what you entered (a new time must be in the future and within your term).",
    "not_allowed": "This is not something you can do in this relationship.",
    "wrong_phase": "This can no longer be done: your relationship has moved on. \"My relationship\" shows where it stands.",
    "conflict": "This was answered already. \"My relationship\" shows where things stand.",
    "not_found": "This is no longer open. \"My relationship\" shows what is waiting for you.",
    "command_id_reused": "This was answered already, differently. \"My relationship\" shows where things stand.",
}


def _html(template: str, status: int, **values: Any) -> HTMLResponse:
    body = _templates.get_template(template).render(css=CSS, **values)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _link_url(context: ApiContext, link: ActionLink, purpose: Purpose, subject: str = "") -> str:
    """A sibling link of the same person and relationship, expiring with this one."""
    assert context.keyring is not None
    sibling = ActionLink(link.person_id, link.programme_id, link.relationship_id, purpose, link.expires_at, subject)
    return f"/p/{sign(context.keyring, sibling)}"


def _footer(context: ApiContext, opened: Opened | OpenedMute | None, *, every: bool = False) -> dict[str, str | None]:
    """ "My relationship" and "Raise a concern privately", for the two people of a relationship
    (not on the page of a mute link, which a coordinator may open); `every`: even the page's own."""
    if not isinstance(opened, Opened) or opened.link.purpose is Purpose.NUDGE:
        return {"mine_url": None, "concern_url": None}
    purpose = opened.link.purpose
    mine = None if purpose is Purpose.MY_RELATIONSHIP and not every else _link_url(context, opened.link, Purpose.MY_RELATIONSHIP)
    concern = None if purpose is Purpose.CONCERN and not every else _link_url(context, opened.link, Purpose.CONCERN)
    return {"mine_url": mine, "concern_url": concern}


def _message(context: ApiContext, opened: Opened | OpenedMute | None, title: str, message: str, status: int,
             kind: str = "note", back: bool = False, back_label: str = "Back to the page") -> HTMLResponse:  # fmt: skip
    back_url = f"/p/{opened.token}" if back and opened is not None else None
    return _html("message.html", status, title=title, message=message, kind=kind, back_url=back_url,
                 back_label=back_label, **_footer(context, opened, every=True))  # fmt: skip


def _refused(context: ApiContext, request: Request, refusal: Refusal) -> HTMLResponse:
    if refusal.reason in ("malformed", "bad_signature", "unknown_key"):
        # Guessing at links: limited per address, as failed authentications are.
        client = request.client.host if request.client else "unknown"
        try:
            context.failures.check(f"address:{client}")
        except ApiProblem:
            return _html("message.html", 429, title="Too many attempts", message="Please wait a minute.", kind="problem")
    return _html("message.html", refusal.status, title=refusal.title, message=refusal.message, kind="problem")


def _show(context: ApiContext, request: Request, opened: Opened | OpenedMute, page: Page, problem: str = "",
          status: int | None = None) -> HTMLResponse:  # fmt: skip
    # The browser's nonce for this link, when it has one: a new one would make every form of
    # the link already open in that browser (another tab) fail its CSRF check.
    kept = kept_nonce(request.cookies.get(csrf_cookie_name(opened.token)))
    nonce = kept or new_nonce()
    downloads = [(label, f"/p/{opened.token}{suffix}") for label, suffix in page.downloads]
    links = [(label, _link_url(context, opened.link, purpose, subject)) for label, purpose, subject in page.links]
    response = _html(
        "page.html", status or page.status, title=page.title, page=page, problem=problem, downloads=downloads, links=links,
        action=f"/p/{opened.token}", csrf=csrf_field(context, opened.token, nonce), **_footer(context, opened),
    )  # fmt: skip
    if page.forms and kept is None and request.method != "HEAD":
        response.set_cookie(
            csrf_cookie_name(opened.token), nonce, max_age=FORM_COOKIE_SECONDS, path="/p/", httponly=True,
            samesite="strict", secure=_secure(context),
        )  # fmt: skip
    return response


def _secure(context: ApiContext) -> bool:
    """Secure cookies when people reach the pages over HTTPS (MENTORFLOW_PUBLIC_URL)."""
    public = context.settings.public_url
    return bool(public and public.startswith("https://"))


async def _opened(request: Request, token: str, now: datetime) -> Opened | OpenedMute | Response:
    """The link's relationship and reader (a mute link's person), or the page saying why the
    link cannot be used."""
    context = context_of(request)
    try:
        return await open_any(context, token, now)
    except Refusal as refusal:
        return _refused(context, request, refusal)


@router.api_route("/{token}", methods=["GET", "HEAD"])
async def show(request: Request, token: str) -> Response:
    """What the link's person is about to confirm. Never acts."""
    now = datetime.now(UTC)
    if isinstance(opened := await _opened(request, token, now), Response):
        return opened
    if isinstance(opened, OpenedMute):
        return _show(context_of(request), request, opened, mute_page(opened.link.subject, opened.person))
    query = {key: value for key, value in request.query_params.items()}
    return _show(context_of(request), request, opened, await _page(context_of(request), opened, query, now))


async def _page(context: ApiContext, opened: Opened, query: Mapping[str, str], now: datetime) -> Page:
    """The link's page. One that asks to acknowledge a goal change says why it was proposed: that
    is confidential text, which only the event store keeps (decrypted here, for this party)."""
    page = page_for(opened.link, opened.state, opened.reader, query, now)
    if opened.link.purpose is not Purpose.GOAL_REVISION or not page.forms:
        return page
    events = await context.event_store(decrypting=True).read_stream(opened.link.relationship_id)
    proposed = (e for e in events if isinstance(e, GoalRevisionProposed) and e.revision_id == opened.link.subject)
    return with_reason(page, opened.link, opened.state, opened.reader, next((e.rationale for e in proposed), ""))


@router.get("/{token}/meeting.ics")
async def meeting_ics(request: Request, token: str) -> Response:
    """The next meeting, for the person's calendar (the same entry as the email's invitation)."""
    context = context_of(request)
    if isinstance(opened := await _opened(request, token, datetime.now(UTC)), Response):
        return opened
    meeting = opened.state.next_meeting if isinstance(opened, Opened) else None
    if not isinstance(opened, Opened) or meeting is None or opened.state.is_closed:
        return _message(context, opened, "No meeting planned", "There is no next meeting to add to a calendar.", 404)
    invite = MeetingInvite(f"{opened.state.relationship_id}-meeting-{meeting.meeting_number}@mentorflow",
                           meeting.starts_at, meeting.ends_at, meeting.revision)  # fmt: skip
    other = opened.reader.name_of(next((p for p in opened.state.participant_ids() if p != opened.link.person_id), None))
    organizer = parseaddr(context.settings.smtp_from or "")[1] or "mentoring@localhost"
    ics = calendar_invite(invite, recipient=opened.reader.person, organizer_email=organizer,
                          summary=f"Mentoring meeting with {other}", description="Your mentoring meeting.")  # fmt: skip
    headers = {**HEADERS, "Content-Disposition": 'attachment; filename="mentoring-meeting.ics"'}
    return Response(ics, media_type="text/calendar; charset=utf-8", headers=headers)


@router.post("/{token}")
async def act(request: Request, token: str) -> Response:
    """A button press: the command, once, through the relationship's own rules."""
    context = context_of(request)
    now = datetime.now(UTC)
    if isinstance(opened := await _opened(request, token, now), Response):
        return opened
    link = opened.link
    audit: dict[str, Any] = {"programme_id": link.programme_id, "relationship_id": link.relationship_id,
                             "message": "(page)", "command_id": None, "actor_id": link.person_id}  # fmt: skip
    form = await _form(request)
    if form is None or not csrf_valid(context, token, request.cookies.get(csrf_cookie_name(token)), form.get("csrf")):
        await _audit(context, link, audit, "csrf_refused", 403)
        return _message(context, opened, "Please press the button on the page", "This form could not be accepted (it "
                        "did not come from the page, or the page is too old). Nothing was changed: open the link "
                        "again and press the button there.", 403, kind="problem")  # fmt: skip
    if isinstance(opened, OpenedMute):
        return await _mute(context, request, opened, form, audit)
    try:
        context.limiter.check(f"link:{link.person_id}")
        message, fields = command_for(link, opened.state, opened.reader, form, now)
    except FormProblem as problem:
        page = refilled(await _page(context, opened, {}, now), form)
        return _show(context, request, opened, page, problem=str(problem), status=422 if page.forms else page.status)
    except ApiProblem as problem:
        return _message(context, opened, "Please wait a moment", "Too many presses; nothing was changed.", problem.status)
    content = json.dumps({"message": message, **fields}, sort_keys=True, separators=(",", ":"))
    payload = {**fields, "command_id": link.command_id(content), "actor_id": link.person_id}
    audit.update(message=message, command_id=payload["command_id"])
    read = read_command(COMMAND_TYPES[message], payload)
    try:
        if isinstance(read, Rejection):
            raise ApiProblem.from_rejection(read)
        handle = context.relationship(link.programme_id, link.relationship_id)
        result: CommandResult = await bounded(
            handle.execute_update(message, payload, id=str(uuid.uuid4()), result_type=CommandResult),
            context.timeout,
            "your mentoring relationship",
        )
    except ApiProblem as problem:
        await _audit(context, link, audit, problem.code, problem.status)
        if problem.code == "unavailable":
            return _message(context, opened, "Please try again in a minute", "We could not reach your mentoring "
                            "relationship just now. Press the button again in a minute: it will count once.",
                            503, kind="problem", back=True)  # fmt: skip
        words = REFUSED_WORDS.get(problem.code, "That did not work. Nothing was changed; please try again later.")
        return _message(context, opened, "Not done", words, problem.status, kind="problem", back=True)
    outcome = "replay" if result.replay else "applied" if result.applied else "not_applied"
    await _audit(context, link, audit, outcome, 200)
    words = DONE_WORDS.get(message, "Done.")
    if result.replay:
        words = "This was done already (your earlier press counted). " + words
    return _message(context, opened, "Done", words, 200)


async def _mute(context: ApiContext, request: Request, opened: OpenedMute, form: dict[str, str],
                audit: dict[str, Any]) -> Response:  # fmt: skip
    """Stop (or restart) one kind of email for the link's person, in the directory."""
    link, template = opened.link, opened.link.subject
    try:
        context.limiter.check(f"link:{link.person_id}")
        muted = mute_choice(form)
    except FormProblem as problem:
        return _show(context, request, opened, mute_page(template, opened.person), problem=str(problem), status=422)
    except ApiProblem as problem:
        return _message(context, opened, "Please wait a moment", "Too many presses; nothing was changed.", problem.status)
    choice = "mute" if muted else "unmute"
    audit.update(message=AUDITED[choice], command_id=link.command_id(choice))
    if not may_mute(template):
        await _audit(context, link, audit, "not_allowed", 403)
        return _show(context, request, opened, mute_page(template, opened.person))
    changed = await context.directory.set_muted(link.person_id, template, muted)
    await _audit(context, link, audit, "applied" if changed else "replay", 200)
    words, again = mute_done(template, muted)
    return _message(context, opened, "Done", words, 200, back=True, back_label=again)


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form (first value of each field), or None for anything else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = await request.body()
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


async def _audit(context: ApiContext, link: ActionLink, audit: dict[str, Any], outcome: str, status: int) -> None:
    entry = AuditEntry(credential_kind="link", credential_id=link.person_id, credential_name=link.purpose.value,
                       outcome=outcome, http_status=status, **audit)  # fmt: skip
    try:
        await context.audit.record(entry)
    except Exception as error:  # the audit never costs the person their answer
        log.error("could not write the audit row for %s %s: %s", audit.get("message"), audit.get("command_id"), error)
