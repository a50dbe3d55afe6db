"""The `workflow.patched()` ids of the Relationship workflow (and, last, one of
`CoordinatorDigests`), each with the change it guards.

A run that began before a patch keeps the old path until it ends or continues as new (the
SDK decides a patch once per run). docs/deploying.md lists each id with the recordings that
cover its new path and when it may be deprecated; tests/workflow/test_replay.py checks that every id
used in workflows/ has its row there.
"""

from __future__ import annotations

# A concurrency conflict makes the workflow adopt the stored events (before: the workflow
# failed). See workflows/outbox.py.
ADOPT_AFTER_CONFLICT = "adopt-stored-events-after-a-conflict"
# A first try of notifications that failed goes on to retry (before: they were never retried).
RETRY_AFTER_FAILED_FIRST_TRY = "notifications-retry-after-a-failed-first-try"
# A batch and the first try of its notifications in one local activity
# (`append_events_and_notify`) instead of two. Runs that began before it keep two.
STORE_AND_NOTIFY_TOGETHER = "store-and-notify-in-one-local-activity"
# A relationship refuses to run under a workflow id that is not
# relationship/<its programme>/<its id> (its stream and its search attributes follow from it).
CHECK_WORKFLOW_ID = "refuse-a-workflow-id-that-does-not-match-the-input"
# The meeting rules of events/cadence.py (cadence_rules 2). A run begun before them
# re-decides its history by the legacy rules, and keeps them to its end.
ANCHORED_CADENCE = "meetings-anchored-to-the-agreement"
# Messages from outside that name an internal actor are refused (a round's proposal is first
# checked against the round's records).
VERIFY_INTERNAL_ACTORS = "refuse-internal-actors-from-outside"
# Every proposal but the pool's own reserves the mentor's slot.
RESERVE_EVERY_PROPOSAL = "reserve-a-slot-for-every-proposal"
# Settings given at start are verified against the programme's (before, they were taken as given).
SETTINGS_FROM_THE_PROGRAMME = "settings-come-from-the-programme"
# Payloads that arrived unencrypted (MENTORFLOW_REFUSE_PLAIN_PAYLOADS) are refused. Recorded
# when the first such payload reaches a run: a run that accepted plain payloads before keeps
# them on replay.
REFUSE_PLAIN_PAYLOADS = "refuse-plain-payloads"
# A run whose history passed its limit continues as new a second after it is next idle
# (before: only when its next deadline's timer fired, which may be weeks away, so a busy
# relationship's run grew far past the limit and a cold worker replayed all of it).
CONTINUE_WHEN_IDLE = "continue-as-new-when-idle-past-the-limit"
# An update whose command a conflict made the run decide again answers once what it did is
# stored, from the store: where its events landed (where the lost task put them, if it had
# applied the command), or the refusal when the adopted events made it impossible (before: it
# could answer at once, with its first decision). Its commands stay pending until stored, so
# a second conflict decides them again too. A command that came by update is decided again as
# checked when it came (`CheckedCommand`): a matching round's proposal is not refused for its
# actor, as a signal naming the round is, nor recorded refused when the store holds it
# applied. New, and only written on a conflict: no other patch guards that. See
# workflows/outbox.py.
ANSWER_FROM_THE_STORE = "answer-an-update-from-the-store-after-a-conflict"
# CoordinatorDigests (workflows/digest.py): a programme's digests go to the notification
# activity at once, which holds each until its coordinator's daytime (before: the run waited
# for each coordinator's daytime on a timer of its own, then sent that wave).
DIGEST_HELD_BY_THE_NOTIFICATION_ACTIVITY = "digest-held-for-daytime-by-the-notification-activity"
