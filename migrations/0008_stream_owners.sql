-- Every event stream belongs to exactly one relationship workflow of one programme
-- (security issue #12). Before this migration a stream was keyed by the relationship id
-- alone: a workflow started as `relationship/OTHER-PROGRAMME/<someone's id>` met that
-- relationship's events as a concurrency conflict, adopted them (decrypted by the worker,
-- into its own history) and went on writing to the same stream.
--
-- `stream_owners` records the owner of each stream: the programme and the workflow id of
-- the relationship that wrote it first. append_events() and assert_stream_owner() (used by
-- reads on a workflow's behalf) refuse anyone else with SQLSTATE MF403, in the same
-- transaction as the append, before anything is written or read. A row is never updated:
-- a stream changes hands only by an operator's deliberate SQL.
--
-- Claims: the first append to a new stream claims it (INSERT … ON CONFLICT DO NOTHING,
-- then read back, in the append's own transaction): of two racing first appends with
-- different owners, the second waits for the first to commit, then finds the first's
-- owner and is refused, with nothing written. The claim is made after the positions are
-- taken, so this transaction's id is still taken inside the advisory lock (see 0001).
--
-- Streams stored before this migration are back-filled below from their first event,
-- RelationshipStarted (programme_id), and the workflow id every starter uses,
-- `relationship/PROGRAMME/RELATIONSHIP` (workflows/ids.py). A stream still without an owner
-- that has events (written by a worker older than this migration during a rolling
-- upgrade) is claimed the same way at its first owned append: only by the programme of its
-- RelationshipStarted under that workflow id; everyone else is refused. A stream whose
-- first event is not a RelationshipStarted cannot be claimed at all: refused loudly rather
-- than guessed (`mentorflow audit streams` lists such streams).
--
-- The stream id is unchanged, so the data keys and the encryption of confidential fields,
-- both bound to it (activities/data_keys.py), are unchanged too.

CREATE TABLE stream_owners (
    stream_id     text        PRIMARY KEY,
    programme_id  text        NOT NULL,
    workflow_id   text        NOT NULL,
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    -- append: the first append claimed it; backfill: this migration; first_owned_append:
    -- a stream written without an owner (an older worker), claimed by its rightful owner.
    claimed_by    text        NOT NULL CHECK (claimed_by IN ('append', 'backfill', 'first_owned_append'))
);

INSERT INTO stream_owners (stream_id, programme_id, workflow_id, claimed_by)
SELECT stream_id, payload->>'programme_id', 'relationship/' || (payload->>'programme_id') || '/' || stream_id, 'backfill'
  FROM events
 WHERE version = 1 AND event_type = 'RelationshipStarted' AND payload->>'programme_id' IS NOT NULL;

-- Whether (programme, workflow) may read or append to the stream. Returns true when the
-- stream has that owner recorded, false when it has no owner yet and this caller may
-- claim it (a new stream, or one written before owners were recorded whose
-- RelationshipStarted names this programme under this workflow id); raises MF403
-- otherwise, with the recorded or presumed owner as DETAIL (for the operator's log; the
-- activity does not pass it on to the workflow). VOLATILE (the default) on purpose: each
-- statement sees what other transactions committed before it, which the claim relies on.
CREATE FUNCTION assert_stream_owner(p_stream_id text, p_programme_id text, p_workflow_id text)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    owner_programme text;
    owner_workflow  text;
    first_type      text;
BEGIN
    IF p_programme_id IS NULL OR p_workflow_id IS NULL OR p_programme_id = '' OR p_workflow_id = '' THEN
        RAISE EXCEPTION 'stream %: no owner given', p_stream_id USING ERRCODE = 'MF403', DETAIL = '';
    END IF;
    SELECT programme_id, workflow_id INTO owner_programme, owner_workflow
      FROM stream_owners WHERE stream_id = p_stream_id;
    IF FOUND THEN
        IF owner_programme = p_programme_id AND owner_workflow = p_workflow_id THEN
            RETURN true;
        END IF;
        RAISE EXCEPTION 'stream % belongs to another relationship workflow', p_stream_id
              USING ERRCODE = 'MF403', DETAIL = owner_programme || ' ' || owner_workflow;
    END IF;

    SELECT event_type, payload->>'programme_id' INTO first_type, owner_programme
      FROM events WHERE stream_id = p_stream_id AND version = 1;
    IF NOT FOUND THEN
        RETURN false;  -- a new stream: the caller may claim it
    END IF;
    owner_workflow := 'relationship/' || owner_programme || '/' || p_stream_id;
    IF first_type = 'RelationshipStarted' AND owner_programme = p_programme_id AND owner_workflow = p_workflow_id THEN
        RETURN false;  -- stored without an owner, and this is its rightful one
    END IF;
    RAISE EXCEPTION 'stream % belongs to another relationship workflow (stored before owners were recorded)', p_stream_id
          USING ERRCODE = 'MF403',
                DETAIL = CASE WHEN first_type = 'RelationshipStarted' THEN owner_programme || ' ' || owner_workflow
                              ELSE 'none, unclaimable: its first event is ' || first_type || ', not RelationshipStarted' END;
END;
$$;

-- append_events as in 0005, with the owner: refused (MF403) before anything else unless the
-- stream is the owner's, claimed by this append if it has no owner yet.
CREATE FUNCTION append_events(
    p_stream_id        text,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_occurred_at      timestamptz[],
    p_command_ids      text[],
    p_payloads         jsonb[],
    p_programme_id     text,
    p_workflow_id      text
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    n               integer := cardinality(p_event_ids);
    current_version bigint;
    positions       bigint[];
    owned           boolean;
BEGIN
    -- First, so that a stranger learns nothing of the stream (not even its version).
    owned := assert_stream_owner(p_stream_id, p_programme_id, p_workflow_id);

    SELECT coalesce(max(version), 0) INTO current_version
      FROM events WHERE stream_id = p_stream_id;

    IF current_version <> p_expected_version THEN
        IF NOT owned THEN
            -- A first append that lost a race: the winner's claim committed with its events.
            PERFORM assert_stream_owner(p_stream_id, p_programme_id, p_workflow_id);
        END IF;
        SELECT array_agg(e.position ORDER BY a.i) INTO positions
          FROM unnest(p_event_ids, p_event_types, p_occurred_at, p_payloads)
               WITH ORDINALITY AS a(event_id, event_type, occurred_at, payload, i)
          JOIN events e ON e.stream_id = p_stream_id
                       AND e.version = p_expected_version + a.i
                       AND e.event_id = a.event_id
                       AND e.event_type = a.event_type
                       AND e.occurred_at = a.occurred_at
                       AND e.payload = a.payload;
        IF cardinality(positions) = n THEN
            RETURN positions;
        END IF;
        RAISE EXCEPTION 'stream % is at version %, not the expected %',
                        p_stream_id, current_version, p_expected_version
              USING ERRCODE = 'MF409', DETAIL = current_version::text;
    END IF;

    -- The ordering argument of 0001 needs this transaction's id to be taken inside the lock:
    -- the claim below writes, so it comes after.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'append_events must run in a transaction that has not written yet'
              USING ERRCODE = 'MF400';
    END IF;

    PERFORM pg_advisory_lock(7120250001);
    BEGIN
        PERFORM pg_current_xact_id();
        FOR i IN 1..n LOOP
            positions[i] := nextval('event_position');
        END LOOP;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(7120250001);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(7120250001);

    IF NOT owned THEN
        -- A racing claim by someone else: this insert waits for it to commit or roll back,
        -- and the check, a new statement, then sees its owner and refuses.
        INSERT INTO stream_owners (stream_id, programme_id, workflow_id, claimed_by)
        VALUES (p_stream_id, p_programme_id, p_workflow_id,
                CASE WHEN current_version = 0 THEN 'append' ELSE 'first_owned_append' END)
        ON CONFLICT (stream_id) DO NOTHING;
        PERFORM assert_stream_owner(p_stream_id, p_programme_id, p_workflow_id);
    END IF;

    INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                        occurred_at, command_id, payload)
    SELECT u.position, p_stream_id, p_expected_version + u.i, u.event_id, u.event_type,
           u.schema_version, u.occurred_at, u.command_id, u.payload
      FROM unnest(positions, p_event_ids, p_event_types, p_schema_versions, p_occurred_at,
                  p_command_ids, p_payloads)
           WITH ORDINALITY AS u(position, event_id, event_type, schema_version, occurred_at,
                                command_id, payload, i);

    RETURN positions;
END;
$$;

-- The append without an owner (0001, 0005) is gone: a worker older than this migration gets
-- a clear error (its local activity retries until a new worker takes the workflow over)
-- instead of writing to a stream unchecked.
CREATE OR REPLACE FUNCTION append_events(
    p_stream_id        text,
    p_expected_version bigint,
    p_event_ids        uuid[],
    p_event_types      text[],
    p_schema_versions  integer[],
    p_occurred_at      timestamptz[],
    p_command_ids      text[],
    p_payloads         jsonb[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'append_events without an owner is refused since migration 0008 (stream %): this worker is older than the database; upgrade it',
                    p_stream_id
          USING ERRCODE = 'MF426';
END;
$$;
