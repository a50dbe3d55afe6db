"""What a notification says: a subject and a plain-text body per template, for one recipient.

A notification carries a template name and a few parameters (ids, numbers, ISO 8601 dates);
`render` turns it into words for one participant:

- `$name` is the recipient's display name, `$relationship_id` the relationship;
- every data key is a variable; ISO 8601 date-times are shown in the recipient's time
  zone ("Tuesday 2 March 2027, 11:00 CET"), plain dates as dates, snake_case codes as
  words (`closed_by_mentor` → "closed by mentor");
- every `<role>_id` key also gives `$<role>_name`: that participant's display name when
  the contact book knows them, else the id.

A template's subject and body must be fillable; its `extras` are paragraphs that appear
only when every parameter they name is present and not empty. A template that is not
listed here, or whose subject or body needs a parameter the notification lacks, falls
back to a generic message that lists the parameters, so a new notification type is
readable the day the core starts emitting it.

A notification whose data has `meeting_start` and `meeting_end` (ISO 8601, UTC) also
describes a meeting: the body says when, in the recipient's zone, and while the meeting
has not ended `calendar_invite` makes the `.ics` that email attaches (`meeting_uid`
keeps it one calendar entry across scheduling, reminders and reschedules;
`meeting_sequence` orders its updates). `meeting_cancelled` (or `meeting_status:
cancelled`) sends an iCalendar CANCEL for the entry instead of a REQUEST.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from string import Template
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event, vCalAddress, vText

from activities.digest_text import digest_text
from activities.template_texts import TEMPLATES
from events.notifications import Notification
from events.people import Participant

log = logging.getLogger("mentorflow.notifications")

SIGNATURE = "Your mentoring programme"

# Messages composed section by section rather than filled in: (data, context) -> (subject, body).
COMPOSED: dict[str, Callable[[Mapping[str, str], Mapping[str, str]], tuple[str, str]]] = {
    "coordinator_digest": digest_text,
}


@dataclass(frozen=True)
class MeetingInvite:
    uid: str
    start: datetime
    end: datetime
    sequence: int = 0
    cancelled: bool = False


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    # Greeting, text, "When:" for a meeting, and the signature last.
    paragraphs: tuple[str, ...]
    # The calendar entry to attach: a meeting that has not ended yet.
    meeting: MeetingInvite | None = None
    # False when the template was unknown or could not be filled and the generic text was used.
    from_template: bool = True

    @property
    def body(self) -> str:
        return "\n\n".join(self.paragraphs) + "\n"

    def with_note(self, note: str) -> RenderedMessage:
        """The message with one more paragraph before the signature (what only one channel says)."""
        paragraphs = (*self.paragraphs[:-1], note, self.paragraphs[-1])
        return RenderedMessage(self.subject, paragraphs, self.meeting, self.from_template)


_MEETING_KEYS = frozenset({"meeting_start", "meeting_end", "meeting_uid", "meeting_sequence"})
_CODE = re.compile(r"[a-z]+(?:_[a-z]+)+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def render(
    notification: Notification, recipient: Participant, people: Mapping[str, Participant] | None = None
) -> RenderedMessage:
    """The message `recipient` gets for `notification`; `people` names the other ids in its data."""
    zone = recipient_zone(recipient)
    people = people or {}
    context = _context(notification, recipient, people, zone)
    meeting = meeting_invite(notification)
    template = TEMPLATES.get(notification.template)
    compose = COMPOSED.get(notification.template)
    subject = body = None
    if compose is not None:
        try:
            subject, body = compose(notification.data, context)
        except (KeyError, ValueError) as error:
            log.warning("message %s could not be composed (%s); using the generic text", notification.template, error)
    elif template is not None:
        try:
            subject = Template(template.subject).substitute(context)
            body = Template(template.body).substitute(context)
            filled = (_fill_optional(extra, context) for extra in template.extras)
            body = "\n\n".join([body, *(extra for extra in filled if extra)])
        except (KeyError, ValueError) as error:
            log.warning(
                "template %s could not be filled (%s: %s); using the generic text",
                notification.template,
                type(error).__name__,
                error,
            )
    from_template = subject is not None and body is not None
    if subject is None or body is None:
        subject, body = _generic(notification, context)
    paragraphs = [f"Hello {recipient.display_name},", body]
    if meeting is not None:
        paragraphs.append(f"When: {format_span(meeting.start, meeting.end, zone)}")
    # A composed message is about a programme, not one relationship.
    paragraphs.append(SIGNATURE if compose else f"{SIGNATURE}\n(relationship {notification.relationship_id})")
    # A meeting that is over gets no calendar entry (asking whether it took place, say).
    invite = meeting if meeting is not None and meeting.end > datetime.now(UTC) else None
    return RenderedMessage(subject, tuple(paragraphs), invite, from_template)


def recipient_zone(recipient: Participant) -> ZoneInfo:
    try:
        return ZoneInfo(recipient.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        log.warning("participant %s has an unknown time zone; using UTC", recipient.participant_id)
        return ZoneInfo("UTC")


def format_time(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{_day(local)}, {local:%H:%M} {local.tzname()}"


def format_span(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    if local_start.date() == local_end.date():
        return f"{_day(local_start)}, {local_start:%H:%M}–{local_end:%H:%M} {local_end.tzname()}"
    return f"{format_time(start, zone)} – {format_time(end, zone)}"


def readable(value: str, zone: ZoneInfo) -> str:
    """A data value as a person reads it: times in their zone, codes as words, the rest as is."""
    if "," in value and " " not in value:
        return ", ".join(readable(part, zone) for part in value.split(",") if part)
    if _DATE_TIME.match(value):
        moment = _parse_time(value)
        if moment is not None:
            return format_time(moment, zone)
    elif _DATE.fullmatch(value):
        try:
            return _day(date.fromisoformat(value))
        except ValueError:
            pass
    if _CODE.fullmatch(value):
        return value.replace("_", " ")
    return value


def meeting_invite(notification: Notification) -> MeetingInvite | None:
    data = notification.data
    if "meeting_start" not in data or "meeting_end" not in data:
        return None
    start, end = _parse_time(data["meeting_start"]), _parse_time(data["meeting_end"])
    if start is None or end is None or end <= start:
        log.warning("notification %s has an unusable meeting time; no invite", notification.notification_id)
        return None
    uid = data.get("meeting_uid") or _derived_uid(notification.relationship_id, start)
    sequence = int(data["meeting_sequence"]) if data.get("meeting_sequence", "").isdigit() else 0
    cancelled = notification.template == "meeting_cancelled" or data.get("meeting_status") == "cancelled"
    return MeetingInvite(
        uid=uid, start=start.astimezone(UTC), end=end.astimezone(UTC), sequence=sequence, cancelled=cancelled
    )


def calendar_invite(
    invite: MeetingInvite,
    *,
    recipient: Participant,
    organizer_email: str,
    summary: str,
    description: str,
) -> bytes:
    """An iCalendar REQUEST for the meeting (CANCEL if it was cancelled), addressed to
    `recipient`, as the bytes of an .ics file."""
    calendar = Calendar()
    calendar.add("prodid", "-//mentorflow//notifications//EN")
    calendar.add("version", "2.0")
    calendar.add("method", invite_method(invite))
    event = Event()
    event.add("uid", invite.uid)
    event.add("sequence", invite.sequence)
    event.add("status", "CANCELLED" if invite.cancelled else "CONFIRMED")
    event.add("dtstamp", datetime.now(UTC).replace(microsecond=0))
    event.add("dtstart", invite.start)
    event.add("dtend", invite.end)
    event.add("summary", summary)
    event.add("description", description)
    organizer = vCalAddress(f"mailto:{organizer_email}")
    organizer.params["cn"] = vText(SIGNATURE)
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{recipient.email}")
    attendee.params["cn"] = vText(recipient.display_name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["partstat"] = vText("NEEDS-ACTION")
    attendee.params["rsvp"] = vText("FALSE")
    event.add("attendee", attendee)
    calendar.add_component(event)
    ics: bytes = calendar.to_ical()
    return ics


def invite_method(invite: MeetingInvite) -> str:
    return "CANCEL" if invite.cancelled else "REQUEST"


def meeting_summary(notification: Notification, recipient: Participant, people: Mapping[str, Participant]) -> str:
    """ "Mentoring meeting with <the other one>" when the data names mentee and mentor."""
    others = [
        notification.data[key]
        for key in ("mentee_id", "mentor_id")
        if key in notification.data and notification.data[key] != recipient.participant_id
    ]
    if len(others) == 1 and others[0] in people:
        return f"Mentoring meeting with {people[others[0]].display_name}"
    return "Mentoring meeting"


def humanize(name: str) -> str:
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _context(
    notification: Notification, recipient: Participant, people: Mapping[str, Participant], zone: ZoneInfo
) -> dict[str, str]:
    context = {"name": recipient.display_name, "relationship_id": notification.relationship_id}
    for key, value in notification.data.items():
        if key.endswith("_id"):
            context[key] = value
            person = people.get(value)
            context[f"{key[:-3]}_name"] = person.display_name if person is not None else value
        else:
            context[key] = readable(value, zone)
    return context


def _fill_optional(paragraph: str, context: Mapping[str, str]) -> str | None:
    """The paragraph filled in, or None when a parameter it names is missing or empty."""
    template = Template(paragraph)
    if any(not context.get(name) for name in template.get_identifiers()):
        return None
    return template.substitute(context)


def _generic(notification: Notification, context: Mapping[str, str]) -> tuple[str, str]:
    title = humanize(notification.template)
    lines = [f"There is an update in your mentoring relationship: {title[:1].lower() + title[1:]}."]
    details = []
    for key in notification.data:
        if key in _MEETING_KEYS:
            continue  # said under "When:"
        if key.endswith("_id"):
            details.append(f"{humanize(key[:-3])}: {context[f'{key[:-3]}_name']}")
        else:
            details.append(f"{humanize(key)}: {context[key]}")
    if details:
        lines.append("\n".join(details))
    return f"Mentoring update: {title}", "\n\n".join(lines)


def _day(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def _parse_time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    # The core only emits aware times; a naive one can only mean UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _derived_uid(relationship_id: str, start: datetime) -> str:
    digest = hashlib.sha256(f"{relationship_id}|{start.isoformat()}".encode()).hexdigest()[:24]
    return f"{digest}@mentorflow"
