-- Matching rules a real programme uses (issue #17): several mentors for one mentee, rounds
-- with their own rule set, and why a mentee was left unmatched.
--
-- 1. A round's stored pairs were keyed by (programme, round, mentee): one mentor per mentee
--    and round. A mentee with a quota above one may now get several mentors in one round,
--    each pair its own relationship, so the key becomes (programme, round, mentee, mentor)
--    and a relationship id names one pair of a round. Every stored pair keeps its row and
--    its relationship id (a mentee's first pair in a round keeps the id it always had).
--
-- 2. A round may run with one of the programme's rule sets (pairing.settings.RuleSet); the
--    round remembers which, so that a re-run solves (or finds solved) the same problem.
--
-- 3. For each mentee a round left unmatched: how many of the round's mentors each reason
--    ruled out, in aggregate ({"rule 'other organisation'": 120, …}; reasons and counts,
--    never profile values), and how many allowed mentors went to other mentees.

ALTER TABLE matching_round_pairs DROP CONSTRAINT matching_round_pairs_pkey;
ALTER TABLE matching_round_pairs ADD PRIMARY KEY (programme_id, round_id, mentee_id, mentor_id);
CREATE UNIQUE INDEX matching_round_pairs_relationship ON matching_round_pairs (programme_id, relationship_id);

ALTER TABLE matching_rounds ADD COLUMN rule_set text;

CREATE TABLE matching_round_unmatched (
    programme_id  text     NOT NULL,
    round_id      text     NOT NULL,
    mentee_id     text     NOT NULL,
    -- Mentors of the round ruled out, by reason (a mentor may count under several).
    excluded      jsonb    NOT NULL CHECK (jsonb_typeof(excluded) = 'object'),
    -- Mentors the mentee could have had, all taken by other mentees (or full).
    allowed       integer  NOT NULL,
    mentors       integer  NOT NULL,
    PRIMARY KEY (programme_id, round_id, mentee_id),
    FOREIGN KEY (programme_id, round_id) REFERENCES matching_rounds ON DELETE CASCADE
);
