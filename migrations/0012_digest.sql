-- The coordinators' digest (issue #15): the facts it is made of, and the digests sent.
--
-- `digest_relationships` is a read model like those of 0006: the projection `digest`
-- (rules in events/digest.py) fills it from the event store, `mentorflow projections
-- rebuild` throws it away and replays it, and its checkpoint starts at 0 by itself, so the
-- followers replay the whole store into it once. Ids, codes and dates only: concerns are
-- their ids and when they were raised, never their text.

CREATE TABLE digest_relationships (
    relationship_id          text          PRIMARY KEY,
    programme_id             text          NOT NULL,
    mentee_id                text          NOT NULL,
    mentor_id                text,
    phase                    text          NOT NULL,
    started_at               timestamptz   NOT NULL,
    -- The proposal waiting for answers.
    candidate_id             text,
    proposed_at              timestamptz,
    proposal_expires_at      timestamptz,
    accepted_by              text[]        NOT NULL DEFAULT '{}',
    -- The last proposal that ended without a match (expired, declined_by_mentee, declined_by_mentor).
    ended_candidate_id       text,
    ended_how                text,
    ended_at                 timestamptz,
    activated_at             timestamptz,
    -- The meetings held: numbers and when, in the same order (a correction can take one back).
    held_meeting_numbers     integer[]     NOT NULL DEFAULT '{}',
    held_meetings_at         timestamptz[] NOT NULL DEFAULT '{}',
    last_meeting_at          timestamptz,
    resumed_at               timestamptz,
    paused_until             timestamptz,
    health                   text          NOT NULL,
    health_reasons           text[]        NOT NULL DEFAULT '{}',
    health_since             timestamptz,
    -- Open concerns: ids and when each was raised, in the same order.
    open_concern_ids         text[]        NOT NULL DEFAULT '{}',
    open_concerns_raised_at  timestamptz[] NOT NULL DEFAULT '{}',
    review_kind              text,
    review_respond_by        timestamptz,
    review_answered_by       text[]        NOT NULL DEFAULT '{}',
    -- The last review that closed without everyone's answer.
    unanswered_review_kind   text,
    unanswered_review_by     text[]        NOT NULL DEFAULT '{}',
    unanswered_review_at     timestamptz,
    reflections_due_at       timestamptz,
    reflections_from         text[]        NOT NULL DEFAULT '{}',
    closed_at                timestamptz,
    -- The stream version of the last event applied to this row.
    version                  bigint        NOT NULL
);

CREATE INDEX digest_relationships_programme ON digest_relationships (programme_id);

-- One row per programme and day a digest was decided: a programme is due again
-- `digest_every_days` after its last row, so a second run the same day (a retry, a restart,
-- a second worker) sends nothing again. Days with nothing to report have no row.
CREATE TABLE coordinator_digests (
    programme_id  text         NOT NULL,
    day           date         NOT NULL,
    coordinators  integer      NOT NULL CHECK (coordinators >= 0),
    items         integer      NOT NULL CHECK (items >= 0),
    decided_at    timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (programme_id, day)
);
