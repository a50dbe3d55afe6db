#!/usr/bin/env node
// Drives one mentorflow Relationship through its whole life over the HTTP API (docs/api.md)
// with Node's own `fetch` (api-client.mjs): no Temporal SDK, no payload codec, no npm
// packages (`npm install` is not needed for this one). Node.js >= 20.
//
//   matching   start (coordinator key); propose_match (coordinator); accept_match by both
//              (participants key); the very same accept_match again (a retry: "replay": true);
//              its Idempotency-Key for another command (409 command_id_reused); a malformed
//              command (422 invalid_payload, every field named); with two keys, the
//              participants key acting as the coordinator (403 not_allowed)
//   agreement  propose_agreement; sign_agreement of a version that does not exist
//              (404 not_found); sign_agreement by both → active
//   active     record_meeting until the relationship asks for feedback; record_goal_progress;
//              submit_feedback by both for the round the state names
//   review     request_review (coordinator); submit_review by both → active again
//   closing    close_relationship (mentee); submit_reflection by both → closed
//   then       the events, read page by page
//
// A request answered 503 (no worker answered in time) or 429 is sent again, unchanged, after
// Retry-After; so is one that got no answer. Each step prints what the relationship stored
// or why it refused; the last line printed is one JSON object with the outcome.
//
// Usage (keys from the environment only, never the command line, where `ps` shows them):
//   MENTORFLOW_API_KEY="$(cat ../../.mentorflow/api-key)" node drive-relationship-http.mjs   # ./run dev
//   MENTORFLOW_API_COORDINATOR_KEY=mfk_… MENTORFLOW_API_PARTICIPANTS_KEY=mfk_… node drive-relationship-http.mjs \
//     --api https://mentoring-api.example.org --programme spring-2027
//     --api          MENTORFLOW_API_URL     (default http://127.0.0.1:8080)
//     --programme    MENTORFLOW_PROGRAMME   (default spring-2027; it must exist)
//     --relationship (default: a random id)
//     --mentee, --mentor, --coordinator     (defaults emp-1042, emp-311, coord-7; the
//                                            coordinator must be one of the programme's)
//     --max-wait     seconds to keep retrying one request (default 120)
//   MENTORFLOW_API_COORDINATOR_KEY  a key that may act as coordinators (--may-act-as coordinators)
//   MENTORFLOW_API_PARTICIPANTS_KEY a key that may act as participants (--may-act-as participants)
//   MENTORFLOW_API_KEY              one key for both (./run dev's acts as both)

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ApiProblem, MentorflowApi } from './api-client.mjs';

const [major] = process.versions.node.split('.').map(Number);
if (major < 20) {
  console.error(`error: this example needs Node.js 20 or later (this is ${process.version})`);
  process.exit(2);
}

const { values: args } = parseArgs({
  options: {
    api: { type: 'string', default: process.env.MENTORFLOW_API_URL ?? 'http://127.0.0.1:8080' },
    programme: { type: 'string', default: process.env.MENTORFLOW_PROGRAMME ?? 'spring-2027' },
    relationship: { type: 'string', default: `node-http-${randomUUID().slice(0, 8)}` },
    mentee: { type: 'string', default: 'emp-1042' },
    mentor: { type: 'string', default: 'emp-311' },
    coordinator: { type: 'string', default: 'coord-7' },
    'max-wait': { type: 'string', default: '120' },
  },
});

const coordinatorKey = process.env.MENTORFLOW_API_COORDINATOR_KEY ?? process.env.MENTORFLOW_API_KEY;
const participantsKey = process.env.MENTORFLOW_API_PARTICIPANTS_KEY ?? process.env.MENTORFLOW_API_KEY;
if (!coordinatorKey || !participantsKey) {
  console.error('error: set MENTORFLOW_API_COORDINATOR_KEY and MENTORFLOW_API_PARTICIPANTS_KEY, or MENTORFLOW_API_KEY');
  process.exit(2);
}

const retries = [];
const options = {
  maxWaitSeconds: Number(args['max-wait']),
  onRetry: (retry) => {
    retries.push(retry);
    const why = retry.status === null ? retry.reason : `${retry.status} ${retry.code}`;
    console.log(`${retry.method} ${retry.path}: ${why}; retrying in ${retry.waitSeconds} s` +
                (retry.idempotencyKey ? ` with the same Idempotency-Key ${retry.idempotencyKey}` : '')); // prettier-ignore
  },
};
const coordinator = new MentorflowApi(args.api, coordinatorKey, options);
const participants = new MentorflowApi(args.api, participantsKey, options);
const { programme, relationship } = args;
const workflowId = `relationship/${programme}/${relationship}`;
const steps = [];
const refusals = [];
let sequence = 0;
const newCommandId = () => `${relationship}-${++sequence}`;

/** Send a command and print what the relationship stored. */
async function send(api, name, payload, commandId = newCommandId()) {
  const result = await api.command(programme, relationship, name, payload, commandId);
  const events = result.events.join(', ') || 'nothing new';
  const replay = result.replay ? ' (a replay: applied before)' : '';
  console.log(`${name} (${payload.actor_id}): ${events} → version ${result.version}, phase ${result.phase}${replay}`);
  steps.push({ command: name, actor_id: payload.actor_id, ...result });
  return result;
}

/** Send a command the API or the relationship must refuse, and print how it refused. */
async function refused(api, name, payload, commandId = newCommandId()) {
  try {
    await api.command(programme, relationship, name, payload, commandId);
  } catch (error) {
    if (!(error instanceof ApiProblem)) throw error;
    console.log(`${name} refused: ${error.status} ${error.code}: ${error.detail}`);
    for (const problem of error.problems) console.log(`  ${problem.field}: ${problem.message}`);
    const refusal = { command: name, command_id: commandId, status: error.status, code: error.code,
                      type: error.type, detail: error.detail, problems: error.problems }; // prettier-ignore
    refusals.push(refusal);
    return refusal;
  }
  throw new Error(`${name} was applied, but it should have been refused`);
}

const state = () => participants.state(programme, relationship);

try {
  // -- matching ----------------------------------------------------------------------------
  const started = await coordinator.startRelationship(programme, relationship, args.mentee);
  console.log(`started ${started.workflow_id}`);
  await send(coordinator, 'propose_match', { actor_id: args.coordinator, mentor_id: args.mentor });
  const acceptId = newCommandId();
  await send(participants, 'accept_match', { actor_id: args.mentee }, acceptId);
  // The same request again, as after a timeout: answered with what it did the first time.
  const replayed = await send(participants, 'accept_match', { actor_id: args.mentee }, acceptId);
  // The same Idempotency-Key (command id) for another command is refused.
  await refused(participants, 'accept_match', { actor_id: args.mentor }, acceptId);
  // A malformed command (`actor` instead of `actor_id`): every bad field named.
  await refused(participants, 'accept_match', { actor: args.mentor });
  if (coordinatorKey !== participantsKey) {
    // A key that may act as participants may not act as the programme's coordinator.
    await refused(participants, 'request_review', { actor_id: args.coordinator });
  }
  await send(participants, 'accept_match', { actor_id: args.mentor });

  // -- agreement ---------------------------------------------------------------------------
  await send(participants, 'propose_agreement', {
    actor_id: args.mentee,
    terms: {
      objective: 'Grow into a tech lead',
      goals: [
        { goal_id: 'design', title: 'Lead two design reviews',
          milestones: [{ milestone_id: 'first-review', title: 'First review led' }] },
        { title: 'Meet three staff engineers' },
      ],
      meeting_frequency: 'biweekly',
      meeting_minutes: 60,
      term_months: 6,
    },
  }); // prettier-ignore
  const version = (await state()).agreement.agreement_version;
  await refused(participants, 'sign_agreement', { actor_id: args.mentee, agreement_version: version + 1 });
  await send(participants, 'sign_agreement', { actor_id: args.mentee, agreement_version: version });
  await send(participants, 'sign_agreement', { actor_id: args.mentor, agreement_version: version });

  // -- active: meetings, goal progress, feedback -------------------------------------------
  let current = await state();
  // A meeting may not be held before the agreement took effect (+1: activated_at has
  // microseconds, a JavaScript Date only milliseconds) nor in the future.
  const activatedAt = Date.parse(current.activated_at) + 1;
  const recorders = [args.mentor, args.mentee];
  for (let meeting = 0; current.feedback_round === 0; meeting += 1) {
    if (meeting >= current.settings.feedback_every_sessions) throw new Error('no feedback round was requested');
    await send(participants, 'record_meeting', {
      actor_id: recorders[meeting % 2],
      held_at: new Date(Math.max(Date.now(), activatedAt)).toISOString(),
      duration_minutes: 60,
      meeting_number: current.next_meeting.meeting_number,
      notes: `Session ${meeting + 1}: design review checklist.`,
    });
    current = await state();
  }
  await send(participants, 'record_goal_progress', {
    actor_id: args.mentee, goal_id: 'design', progress_percent: 50, milestones_reached: ['first-review'],
  });
  const round = current.feedback_round;
  await send(participants, 'submit_feedback', { actor_id: args.mentee, feedback_round: round, score: 4 });
  await send(participants, 'submit_feedback', { actor_id: args.mentor, feedback_round: round, score: 5 });

  // -- review ------------------------------------------------------------------------------
  await send(coordinator, 'request_review', { actor_id: args.coordinator });
  await send(participants, 'submit_review', { actor_id: args.mentee, outcome: 'continue' });
  await send(participants, 'submit_review', { actor_id: args.mentor, outcome: 'continue' });

  // -- closing -----------------------------------------------------------------------------
  await send(participants, 'close_relationship', { actor_id: args.mentee, note: 'Changed teams.' });
  await send(participants, 'submit_reflection', { actor_id: args.mentee, text: 'I run design reviews now.' });
  await send(participants, 'submit_reflection', { actor_id: args.mentor, text: 'A rewarding half year.' });

  const final = await state();
  const events = await participants.events(programme, relationship, 10);
  console.log(`phase: ${final.phase} (${final.closure_reason}; ${final.meetings_held} meetings, ` +
              `version ${final.version}, ${events.length} events)`); // prettier-ignore
  console.log(JSON.stringify({
    workflow_id: workflowId,
    phase: final.phase,
    closure_reason: final.closure_reason,
    version: final.version,
    meetings_held: final.meetings_held,
    replayed,
    steps,
    refusals,
    retries,
    event_types: events.map((event) => event.type),
  }));
} catch (error) {
  console.error(`error: ${error.message}`);
  process.exitCode = 1;
}
