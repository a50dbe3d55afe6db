-- A mentor's load is the number of their open relationships, however each was matched:
-- by hand (before any profile existed, too), by the pool, by a round (issue #11).
--
-- 1. Every proposal holds a slot. Until now reserve_mentor_slot() reserved nothing for a
--    mentor without an active profile ('unknown_mentor'), so a hand match made before the
--    profiles were imported was invisible to `profiles list`, to the pool and to rounds.
--    Now it records the slot all the same (outcome 'reserved_without_profile': there is no
--    capacity to check it against); a mentor with a profile, active or not, is held to
--    their capacity. Relationships matched before this migration get their slot back-filled
--    from the event store below.
--
-- 2. One lock per mentor, whether or not they have a profile: a row of `mentor_locks`.
--    Every reservation and every round locks the rows of the mentors it may give slots of
--    (FOR UPDATE, a round in mentor id order) and only then, in a later statement — a new
--    snapshot — counts their slots. So the count includes every slot committed by whoever
--    held the lock before; a reservation for a mentor without a profile serialises with a
--    round that sees the profile imported meanwhile. (Counting in the statement that takes
--    the lock, as solve_round did with `FOR UPDATE OF p`, counted with the snapshot taken
--    before waiting: a reservation that committed while the round waited was missed.)
--    Rows are created on first use and never deleted; they hold nothing but the lock.
--
-- 3. Which relationships are open: the event store knows (RelationshipStarted, and no
--    ClosureBegun or RelationshipClosed yet), and so do slots of round pairs whose
--    relationship has not started yet. `open_relationships` is both; a round leaves out
--    mentees with as many open relationships as the programme allows, and the pool finds
--    nobody for them.

CREATE TABLE mentor_locks (
    programme_id  text  NOT NULL,
    mentor_id     text  NOT NULL,
    PRIMARY KEY (programme_id, mentor_id)
);

-- Partial indexes: only a relationship's first and last events are in them.
CREATE INDEX events_relationship_started
    ON events ((payload->>'programme_id'), (payload->>'mentee_id'))
    WHERE event_type = 'RelationshipStarted';
CREATE INDEX events_relationship_ending
    ON events (stream_id)
    WHERE event_type IN ('ClosureBegun', 'RelationshipClosed');

CREATE VIEW open_relationships (programme_id, relationship_id, mentee_id) AS
    SELECT s.payload->>'programme_id', s.stream_id, s.payload->>'mentee_id'
      FROM events s
     WHERE s.event_type = 'RelationshipStarted'
       AND NOT EXISTS (SELECT 1 FROM events e
                        WHERE e.stream_id = s.stream_id
                          AND e.event_type IN ('ClosureBegun', 'RelationshipClosed'))
    UNION
    SELECT programme_id, relationship_id, mentee_id FROM mentor_slots;

-- Takes the lock of one mentor for the rest of the transaction (see 2. above).
CREATE FUNCTION lock_mentor(p_programme_id text, p_mentor_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM mentor_locks
      WHERE programme_id = p_programme_id AND mentor_id = p_mentor_id
        FOR UPDATE;
    IF NOT FOUND THEN
        -- Waits for a transaction that is inserting the same row, then finds it.
        INSERT INTO mentor_locks (programme_id, mentor_id) VALUES (p_programme_id, p_mentor_id)
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM mentor_locks
          WHERE programme_id = p_programme_id AND mentor_id = p_mentor_id
            FOR UPDATE;
    END IF;
END;
$$;

-- The same signature and outcomes as in 0004, plus 'reserved_without_profile'; no longer
-- 'unknown_mentor'.
CREATE OR REPLACE FUNCTION reserve_mentor_slot(
    p_programme_id    text,
    p_relationship_id text,
    p_mentor_id       text,
    p_mentee_id       text,
    OUT outcome            text,
    OUT released_mentor_id text
)
LANGUAGE plpgsql AS $$
DECLARE
    slot_capacity integer;
    taken         integer;
BEGIN
    PERFORM lock_mentor(p_programme_id, p_mentor_id);

    SELECT mentor_id INTO released_mentor_id
      FROM mentor_slots
     WHERE programme_id = p_programme_id AND relationship_id = p_relationship_id;
    IF released_mentor_id = p_mentor_id THEN
        outcome := 'already_reserved';
        released_mentor_id := NULL;
        RETURN;
    END IF;

    SELECT capacity INTO slot_capacity
      FROM matching_profiles
     WHERE programme_id = p_programme_id AND role = 'mentor' AND participant_id = p_mentor_id;
    IF FOUND THEN
        SELECT count(*) INTO taken
          FROM mentor_slots
         WHERE programme_id = p_programme_id AND mentor_id = p_mentor_id;
        IF taken >= slot_capacity THEN
            outcome := 'full';
            released_mentor_id := NULL;
            RETURN;
        END IF;
        outcome := 'reserved';
    ELSE
        outcome := 'reserved_without_profile';
    END IF;

    -- A relationship holds one slot at most: reserving another mentor moves it.
    INSERT INTO mentor_slots (programme_id, relationship_id, mentor_id, mentee_id)
    VALUES (p_programme_id, p_relationship_id, p_mentor_id, p_mentee_id)
    ON CONFLICT (programme_id, relationship_id)
    DO UPDATE SET mentor_id = EXCLUDED.mentor_id, mentee_id = EXCLUDED.mentee_id, reserved_at = now();
END;
$$;

-- Back-fill: a relationship whose last word on its mentor is a proposal (not a decline, an
-- expiry or its closure) holds that mentor; it keeps the slot it holds, if any.
INSERT INTO mentor_slots (programme_id, relationship_id, mentor_id, mentee_id)
SELECT s.payload->>'programme_id', s.stream_id, last.payload->>'mentor_id', s.payload->>'mentee_id'
  FROM events s
  JOIN (SELECT DISTINCT ON (stream_id) stream_id, event_type, payload
          FROM events
         WHERE event_type IN ('MatchProposed', 'MatchDeclined', 'MatchProposalExpired',
                              'ClosureBegun', 'RelationshipClosed')
         ORDER BY stream_id, version DESC) last
    ON last.stream_id = s.stream_id
 WHERE s.event_type = 'RelationshipStarted' AND last.event_type = 'MatchProposed'
ON CONFLICT (programme_id, relationship_id) DO NOTHING;
