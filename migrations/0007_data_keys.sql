-- One data key per relationship (event stream) for the confidential text in its events'
-- payloads (activities/data_keys.py). The key is stored wrapped by a key of
-- MENTORFLOW_ENCRYPTION_KEYS (kek_id names which one). `mentorflow forget` deletes it:
-- the row stays as a tombstone (wrapped_key NULL, forgotten_at/forgotten_by set), so the
-- relationship can never get a new key and the deletion stays on record. Nothing here
-- holds confidential text.

CREATE TABLE data_keys (
    stream_id     text        PRIMARY KEY,
    wrapped_key   bytea,
    kek_id        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    forgotten_at  timestamptz,
    -- Who asked for it: an operator or system id, never free text.
    forgotten_by  text,
    CHECK ((wrapped_key IS NULL) = (kek_id IS NULL)),
    CHECK ((wrapped_key IS NULL) = (forgotten_at IS NOT NULL))
);
