-- The HTTP API (mentorflow/api/, issue #14): the API keys other systems authenticate with,
-- and the audit record of every command the API passed on (or refused at its edge).
--
-- A key is shown once, when it is made (`mentorflow api-keys create`); only its keyed hash
-- is kept: HMAC-SHA256 with the server's secret (MENTORFLOW_API_KEY_SECRET), never the key.
-- A key reads `mfk_<key_id>_<secret>`: the key id finds the row, the hash is compared in
-- constant time. A stolen copy of this table is useless without the server's secret, and the
-- secret alone makes no key.

CREATE TABLE api_keys (
    key_id        text        PRIMARY KEY,
    name          text        NOT NULL,
    secret_hash   bytea       NOT NULL,
    -- The programmes the key reaches; '{*}' for every programme.
    programmes    text[]      NOT NULL CHECK (cardinality(programmes) > 0),
    -- Whom it may act as: 'participants' (mentees and mentors), 'coordinators' (the
    -- programme's); empty: read only. Never an internal actor (events.commands.INTERNAL_ACTORS).
    may_act_as    text[]      NOT NULL DEFAULT '{}'
                              CHECK (may_act_as <@ ARRAY['participants', 'coordinators']::text[]),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    -- Written at most once a minute per key (api-keys list shows it).
    last_used_at  timestamptz,
    -- The key this one replaced (`api-keys rotate`); the old one stays valid until its expiry.
    rotated_from  text        REFERENCES api_keys (key_id)
);

CREATE INDEX api_keys_by_name ON api_keys (name);

-- One row per command the API handled for an authenticated caller: who (the key, or the
-- token's subject and issuer), what (relationship, message, command id, actor) and how it
-- ended (applied, replay, a refusal code, unavailable). No payloads: they may hold
-- confidential text. Rows are only ever inserted.
CREATE TABLE api_audit (
    audit_id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    credential_kind  text        NOT NULL CHECK (credential_kind IN ('api_key', 'token')),
    -- The key id, or the token's subject.
    credential_id    text        NOT NULL,
    -- The key's name, or the token's issuer.
    credential_name  text        NOT NULL,
    programme_id     text        NOT NULL,
    relationship_id  text        NOT NULL,
    message          text        NOT NULL,
    command_id       text,
    actor_id         text,
    outcome          text        NOT NULL,
    http_status      integer     NOT NULL
);

CREATE INDEX api_audit_by_relationship ON api_audit (programme_id, relationship_id, audit_id);
