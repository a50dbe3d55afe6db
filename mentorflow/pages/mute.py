"""Stop getting one kind of email: the page of an email's "Stop getting these emails" link.

The link names its person and one kind of message (its template is the link's subject). GET
shows that kind in plain words with a button; once muted, the same page offers "Get these
emails again", so the link undoes itself while it works. Messages nobody may turn off
(`action_links.MUST_HEAR`) get a page that says why (403), and a button press on one is
refused. Pure: the routes read and change the directory (`Directory.set_muted`), and audit
each press like any other link action.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.people import Participant
from mentorflow.action_links import MUST_HEAR, kind_words
from mentorflow.pages.forms import FormProblem
from mentorflow.pages.views import Form, Page

STOP_TITLE = "Stop getting these emails"
AGAIN_TITLE = "Get these emails again"
KEPT_TITLE = "These emails cannot be turned off"
KEPT_NOTE = (
    "They ask for an answer your mentoring depends on, tell the programme coordinators what they must "
    "know, or keep your calendar right, so they always reach you. If they are too many, tell your "
    "programme coordinator."
)
KEEP_GOING = (
    "The other emails about your mentoring keep coming. You can turn these back on from this same "
    "link while it works, or ask your programme coordinator."
)
# The audit's message for each choice (api_audit.message).
AUDITED = {"mute": "mute_emails", "unmute": "unmute_emails"}


def may_mute(template: str) -> bool:
    return template not in MUST_HEAR


def mute_page(template: str, person: Participant) -> Page:
    """What the link shows: stop these emails, get them again, or why they cannot stop."""
    words = kind_words(template)
    if not may_mute(template):
        return Page(KEPT_TITLE, intro=(f"These emails: {words}.",), note=KEPT_NOTE, status=403)
    if template in person.muted_templates:
        return Page(AGAIN_TITLE, intro=(f"You no longer get these emails: {words}.",),
                    forms=(Form("unmute", AGAIN_TITLE),))  # fmt: skip
    return Page(STOP_TITLE, intro=(f"{STOP_TITLE}: {words}.", KEEP_GOING), forms=(Form("mute", "Stop these emails"),))


def mute_choice(form: Mapping[str, str]) -> bool:
    """True to stop the emails, False to get them again; `FormProblem` for anything else."""
    choice = form.get("choice", "")
    if choice not in AUDITED:
        raise FormProblem("That answer is not open any more; the page shows what is.")
    return choice == "mute"


def mute_done(template: str, muted: bool) -> tuple[str, str]:
    """The words after a press, and the label of the link back to the (toggled) page."""
    words = kind_words(template)
    if muted:
        return f"You will no longer get these emails: {words}.", "Changed your mind? Get these emails again"
    return f"You will get these emails again: {words}.", STOP_TITLE
