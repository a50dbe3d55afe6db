-- Projection `meetings` (report_meetings, 0006) follows each meeting's stream version, like
-- the one-row-per-relationship read models, and counts a meeting as its last report says:
-- held, or missed after a deadline, a `report_meeting_not_held` or a `correct_meeting_report`
-- to "not held" (events/projections.py). With the version, a row ignores an event it already
-- reflects, so a meeting corrected back and forth still folds to the same row.
--
-- The rows built before have no version, so they are thrown away and the checkpoint with
-- them: the followers (and `mentorflow report`, before it reads) replay the whole store into
-- the table once, from the first event, as for a new projection. Until they have, `mentorflow
-- projections status` shows `meetings` behind. The other read models carry on where they are.
-- A worker still running the code from before this migration cannot write rows without a
-- version: its batches fail and are retried until it is replaced.

TRUNCATE report_meetings;
DELETE FROM projection_checkpoints WHERE projection = 'meetings';
-- The stream version of the last event applied to the row.
ALTER TABLE report_meetings ADD COLUMN version bigint NOT NULL;
