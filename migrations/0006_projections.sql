-- Read models for reports (`mentorflow report`), fed from the event store by the follower
-- in activities/projections.py; the rules that fill them are pure (events/projections.py).
--
-- Every table here can be thrown away and rebuilt from the events (`mentorflow projections
-- rebuild`): nothing in them is a fact of its own. Only ids, codes, numbers and dates are
-- copied — never notes, concerns, feedback comments or reflections — so the reports stay
-- whole when a relationship's confidential text is forgotten.
--
-- A projection's rows and its checkpoint change in the same transaction, so an event is
-- applied exactly once even when the follower crashes halfway through a batch.

-- One row per projection, created by the follower when it first meets the projection.
CREATE TABLE projection_checkpoints (
    projection  text        PRIMARY KEY,
    -- The global position (events.position) of the last event applied.
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Projection `relationships`: one row per relationship.
CREATE TABLE report_relationships (
    relationship_id    text        PRIMARY KEY,
    programme_id       text        NOT NULL,
    mentee_id          text        NOT NULL,
    mentor_id          text,
    phase              text        NOT NULL,
    health             text        NOT NULL,
    started_at         timestamptz NOT NULL,
    matched_at         timestamptz,
    activated_at       timestamptz,
    closed_at          timestamptz,
    closure_reason     text,
    -- Goal ids of the latest agreement proposal (they become the goals on activation).
    proposed_goal_ids  text[]      NOT NULL DEFAULT '{}',
    goal_ids           text[]      NOT NULL DEFAULT '{}',
    achieved_goal_ids  text[]      NOT NULL DEFAULT '{}',
    -- The stream version of the last event applied to this row.
    version            bigint      NOT NULL
);

CREATE INDEX report_relationships_programme ON report_relationships (programme_id);

-- Projection `meetings`: one row per meeting that was held or marked missed (a corrected
-- missed meeting turns into a held one).
CREATE TABLE report_meetings (
    relationship_id   text        NOT NULL,
    meeting_number    integer     NOT NULL,
    status            text        NOT NULL CHECK (status IN ('held', 'missed')),
    -- held: when it was held; missed: when it was to start.
    at                timestamptz NOT NULL,
    duration_minutes  integer,
    PRIMARY KEY (relationship_id, meeting_number)
);

-- Projection `feedback`: one row per feedback answer (a score 1-5; the comment stays out).
CREATE TABLE report_feedback (
    relationship_id  text        NOT NULL,
    feedback_round   integer     NOT NULL,
    party            text        NOT NULL,
    score            integer     NOT NULL,
    submitted_at     timestamptz NOT NULL,
    PRIMARY KEY (relationship_id, feedback_round, party)
);
