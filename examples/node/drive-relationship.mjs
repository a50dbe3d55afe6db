#!/usr/bin/env node
// Drives one mentorflow Relationship through its whole life from Node.js, with the npm
// package @temporalio/client, JSON payloads that match the contract (contract/Relationship/…,
// explained in docs/contract.md) and mentorflow's payload encryption (codec.mjs):
//
//   matching   start; propose_match (coordinator, update); accept_match (mentee, signal);
//              one malformed update and one malformed signal, to show how each is refused;
//              accept_match (mentor, update)
//   agreement  propose_agreement (mentee: goals with target dates, both parties' availability);
//              sign_agreement with a wrong agreement_version, to show a refused update;
//              sign_agreement by both → active
//   active     record_meeting until the relationship asks for feedback (held_at: an
//              RFC 3339 date-time with the mentee's offset; meeting_number: the scheduled
//              meeting, as all are reported "now"); record_goal_progress;
//              submit_feedback by both for the round the `state` query names
//   review     request_review (coordinator); submit_review by both → active again
//   closing    close_relationship (mentee); submit_reflection by both → closed
//
// Each step is an update, so it prints what the relationship stored (its events, version
// and phase) or why it refused. The last line printed is one JSON object with the outcome,
// for scripts and tests.
//
// Usage (every option also from the environment):
//   npm install      # once: the pinned @temporalio/client and @temporalio/proto (package.json)
//   MENTORFLOW_ENCRYPTION_KEYS="$(cat ../../.mentorflow/encryption-keys)" node drive-relationship.mjs
//     --address      MENTORFLOW_TEMPORAL_ADDRESS    (default 127.0.0.1:7233)
//     --namespace    MENTORFLOW_TEMPORAL_NAMESPACE  (default mentorflow)
//     --task-queue   MENTORFLOW_TASK_QUEUE          (default mentorflow)
//     --programme    MENTORFLOW_PROGRAMME           (default spring-2027; it must exist)
//     --relationship MENTORFLOW_RELATIONSHIP_ID     (default: a random id)
//     --mentee, --mentor, --coordinator             (defaults emp-1042, emp-311, coord-7;
//                                                    the coordinator must be one of the programme's)

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Client, Connection, WorkflowUpdateFailedError } from '@temporalio/client';
import { EncryptionCodec } from './codec.mjs';

const { values: args } = parseArgs({
  options: {
    address: { type: 'string', default: process.env.MENTORFLOW_TEMPORAL_ADDRESS ?? '127.0.0.1:7233' },
    namespace: { type: 'string', default: process.env.MENTORFLOW_TEMPORAL_NAMESPACE ?? 'mentorflow' },
    'task-queue': { type: 'string', default: process.env.MENTORFLOW_TASK_QUEUE ?? 'mentorflow' },
    programme: { type: 'string', default: process.env.MENTORFLOW_PROGRAMME ?? 'spring-2027' },
    relationship: { type: 'string', default: process.env.MENTORFLOW_RELATIONSHIP_ID ?? `node-${randomUUID().slice(0, 8)}` },
    mentee: { type: 'string', default: 'emp-1042' },
    mentor: { type: 'string', default: 'emp-311' },
    coordinator: { type: 'string', default: 'coord-7' },
  },
});

// ---------------------------------------------------------------------------------------
// The codec wiring: everything a client needs to read (and write) encrypted payloads.
//
// * Dependencies: npm @temporalio/client, and @temporalio/proto for the Payload protobuf
//   that codec.mjs encrypts (both pinned in package.json; Node >= 20.3). The AES-256-GCM
//   itself is Node's own `crypto`.
// * Keys: the workers' MENTORFLOW_ENCRYPTION_KEYS string, read from the environment (never
//   from the command line, where `ps` would show it): space-separated `key-id:BASE64`
//   entries, each BASE64 a 32-byte key, e.g. "k2:q83v… k1:Zm9v…". The first key encrypts
//   what this client sends; every key decrypts (a payload names its key id). With
//   `./run dev` the string is in .mentorflow/encryption-keys; the tests pass their keyring.
// * `dataConverter: { payloadCodecs: [codec] }` on the Client: the codec then encrypts the
//   workflow input, signals and update arguments, and decrypts update results, query
//   answers, the workflow result and refusals (the workers encrypt a failure's message too;
//   the SDK's default failure converter decodes it once the codec is there).
//
// Without keys the client sends plain JSON, which the workers accept. But whatever an
// encrypting worker answers is then unreadable: neither an update's result nor a refusal's
// message can be decoded, so such a client cannot tell an applied command from a refused
// one. This example then stops at its first answer with a line saying so.
const keys = process.env.MENTORFLOW_ENCRYPTION_KEYS;
const codec = keys ? EncryptionCodec.fromConfig(keys) : null;
const connection = await Connection.connect({ address: args.address });
const client = new Client({
  connection,
  namespace: args.namespace,
  dataConverter: codec ? { payloadCodecs: [codec] } : undefined,
});
// ---------------------------------------------------------------------------------------

const workflowId = `relationship/${args.programme}/${args.relationship}`;
const handle = client.workflow.getHandle(workflowId);
const steps = [];

// Every command carries its own id: the relationship applies a command id once, so resending
// the same command (after a timeout, say) can never apply it twice. The update id is another
// thing: leave it to the SDK (one per send). Temporal answers a repeated update id with the
// first answer without asking the relationship, which would hide a command id reused for
// another command.
let sequence = 0;
const command = (actorId, fields = {}) => ({ command_id: `${args.relationship}-${++sequence}`, actor_id: actorId, ...fields });

function unreadable(error) {
  const text = `${error?.message ?? ''} ${error?.cause?.message ?? ''}`;
  if (codec === null && /binary\/encrypted|Encoded failure/.test(text)) {
    return new Error(
      'the workers encrypt their answers: set MENTORFLOW_ENCRYPTION_KEYS to their keys to read them ' +
        `(${error.cause?.message ?? error.message})`,
    );
  }
  return error;
}

/** Send a command as an update and wait for the relationship's answer. */
async function update(name, payload) {
  let result;
  try {
    result = await handle.executeUpdate(name, { args: [payload] });
  } catch (error) {
    throw unreadable(error);
  }
  if (typeof result?.phase !== 'string') throw unreadable(new Error(`update ${name}: unreadable answer`));
  const events = result.events.join(', ') || 'nothing new';
  console.log(`update ${name} (${payload.actor_id}): ${events} → version ${result.version}, phase ${result.phase}`);
  steps.push({ command: name, actor_id: payload.actor_id, command_id: payload.command_id, ...result });
  return result;
}

/**
 * Send an update the relationship must refuse and return how the refusal looks to a Node
 * caller: `executeUpdate` rejects with a WorkflowUpdateFailedError whose `cause` is an
 * ApplicationFailure; its `type` is a machine-readable code, its `message` the reason (it
 * names fields and rules, never the values sent), `details` any structured details.
 * Nothing of a refused update enters the workflow's history.
 */
async function refusedUpdate(name, payload) {
  try {
    await handle.executeUpdate(name, { args: [payload] });
  } catch (error) {
    if (!(error instanceof WorkflowUpdateFailedError)) throw unreadable(error);
    const failure = error.cause ?? {};
    if (codec === null && failure.message === 'Encoded failure') throw unreadable(failure);
    const refusal = { command: name, command_id: payload.command_id, type: failure.type ?? null, message: failure.message ?? error.message };
    if (failure.details?.length) refusal.details = failure.details;
    console.log(`update ${name} refused: type ${refusal.type}, message: ${refusal.message}`);
    for (const problem of failure.details?.[0]?.problems ?? []) console.log(`  ${problem.field}: ${problem.message}`);
    return refusal;
  }
  throw new Error(`update ${name} was applied, but the relationship should have refused it`);
}

const state = () => handle.query('state');

/** `date` as an RFC 3339 date-time with the offset `timeZone` has then: 2027-03-09T15:00:00.000+01:00 */
function rfc3339(date, timeZone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', {
      timeZone, hourCycle: 'h23', timeZoneName: 'longOffset',
      year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
    }).formatToParts(date).map((part) => [part.type, part.value]),
  );
  const offset = parts.timeZoneName === 'GMT' ? '+00:00' : parts.timeZoneName.slice('GMT'.length);
  const millis = String(date.getUTCMilliseconds()).padStart(3, '0');
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}.${millis}${offset}`;
}
const inMonths = (months) => {
  const date = new Date();
  date.setUTCMonth(date.getUTCMonth() + months);
  return date.toISOString().slice(0, 10); // a full-date, "2027-06-30"
};

const MENTEE_TIMEZONE = 'Europe/Berlin';
const MENTOR_TIMEZONE = 'America/New_York';

try {
  // -- matching ----------------------------------------------------------------------------
  await client.workflow.start('Relationship', {
    taskQueue: args['task-queue'],
    workflowId,
    args: [{ relationship_id: args.relationship, programme_id: args.programme, mentee_id: args.mentee }],
  });
  console.log(`started ${workflowId}`);

  await update('propose_match', command(args.coordinator, { mentor_id: args.mentor, explanation: 'proposed from Node.js' }));

  // A signal has no answer: fire and forget (read the outcome with the `state` query).
  const accepted = command(args.mentee);
  await handle.signal('accept_match', accepted);
  console.log(`signal accept_match sent (command ${accepted.command_id})`);

  // A malformed update (`actor` instead of `actor_id`) is refused with every bad field named.
  const badUpdate = await refusedUpdate('accept_match', { command_id: `${args.relationship}-bad-update`, actor: args.mentor });

  // A malformed signal cannot be answered: it is recorded as a rejected command instead.
  const badSignalId = `${args.relationship}-bad-signal`;
  await handle.signal('decline_match', { command_id: badSignalId, actor_id: args.mentor, reason: 42 });

  await update('accept_match', command(args.mentor));
  const matched = await state();
  const rejectedSignal = matched.rejected_commands.find((rejected) => rejected.command_id === badSignalId) ?? null;
  if (rejectedSignal) console.log(`signal decline_match recorded as rejected: ${rejectedSignal.reason}`);

  // -- agreement ---------------------------------------------------------------------------
  await update('propose_agreement', command(args.mentee, {
    terms: {
      objective: 'Grow into a tech lead',
      goals: [
        {
          goal_id: 'design',
          title: 'Lead two design reviews',
          measure: 'two reviews led, feedback collected',
          target_date: inMonths(4), // dates are RFC 3339 full-dates, "2027-06-30"
          milestones: [{ milestone_id: 'first-review', title: 'First review led' }],
        },
        { goal_id: 'network', title: 'Meet three staff engineers', target_date: inMonths(5) },
      ],
      formats: ['video', 'in_person'],
      meeting_frequency: 'biweekly',
      meeting_minutes: 60, // integers are JSON numbers, never strings
      term_months: 6,
      availability: [
        { party: 'mentee', timezone: MENTEE_TIMEZONE, windows: [{ weekday: 1, start: '15:00', end: '17:00' }] },
        { party: 'mentor', timezone: MENTOR_TIMEZONE, windows: [{ weekday: 1, start: '09:00', end: '12:00' }] },
      ],
      agenda_policy: 'both_share',
    },
  }));
  // Sign the version the relationship holds; read it rather than assume it is 1.
  const { agreement } = await state();
  const version = agreement.agreement_version;

  // A valid command the relationship must refuse: signing a version that does not exist.
  const refused = await refusedUpdate('sign_agreement', command(args.mentee, { agreement_version: version + 1 }));

  await update('sign_agreement', command(args.mentee, { agreement_version: version }));
  await update('sign_agreement', command(args.mentor, { agreement_version: version }));

  // -- active: meetings, goal progress, feedback -------------------------------------------
  // A meeting is recorded once held: held_at may not be in the future (by the workflow's
  // clock) nor before the agreement took effect (`activated_at` in the state).
  let current = await state();
  // (+1: activated_at has microseconds, a JavaScript Date only milliseconds.)
  const activatedAt = Date.parse(current.activated_at) + 1;
  const heldAt = () => rfc3339(new Date(Math.max(Date.now(), activatedAt)), MENTEE_TIMEZONE);
  const recorders = [args.mentor, args.mentee];
  for (let meeting = 0; current.feedback_round === 0; meeting += 1) {
    if (meeting >= current.settings.feedback_every_sessions) throw new Error('no feedback round was requested');
    // A report is matched to the meeting planned nearest held_at; these are all held "now",
    // so each names the scheduled meeting it reports.
    await update('record_meeting', command(recorders[meeting % 2], {
      meeting_number: current.next_meeting.meeting_number,
      held_at: heldAt(),
      duration_minutes: 60,
      notes: `Session ${meeting + 1}: design review checklist.`,
    }));
    current = await state();
  }
  console.log(`feedback round ${current.feedback_round} requested after ${current.meetings_held} meetings`);

  await update('record_goal_progress', command(args.mentee, {
    goal_id: 'design', progress_percent: 50, milestones_reached: ['first-review'],
  }));
  const round = current.feedback_round;
  await update('submit_feedback', command(args.mentee, { feedback_round: round, score: 4, comment: 'Very useful sessions.' }));
  await update('submit_feedback', command(args.mentor, { feedback_round: round, score: 5 }));

  // -- review ------------------------------------------------------------------------------
  await update('request_review', command(args.coordinator));
  await update('submit_review', command(args.mentee, {
    outcome: 'continue', goal_assessments: [{ goal_id: 'design', progress_percent: 60 }], comment: 'On track.',
  }));
  await update('submit_review', command(args.mentor, { outcome: 'continue' }));

  // -- closing -----------------------------------------------------------------------------
  await update('close_relationship', command(args.mentee, { note: 'Changed teams; agreed with my mentor.' }));
  await update('submit_reflection', command(args.mentee, { text: 'I run design reviews now.' }));
  await update('submit_reflection', command(args.mentor, { text: 'A rewarding half year.' }));

  const summary = await handle.result(); // the workflow's result: the relationship's summary
  const final = await state();
  console.log(`phase: ${final.phase} (${final.closure_reason}; ${final.meetings_held} meetings, version ${final.version})`);

  console.log(JSON.stringify({
    workflow_id: workflowId,
    phase: final.phase,
    closure_reason: final.closure_reason,
    mentor_id: final.mentor_id,
    version: final.version,
    meetings_held: final.meetings_held,
    feedback_round: final.feedback_round,
    encrypted: codec !== null,
    bad_update_error: badUpdate.message,
    refused_update: refused,
    rejected_signal: rejectedSignal,
    steps,
    summary,
  }));
} catch (error) {
  console.error(`error: ${error.message}`);
  process.exitCode = 1;
} finally {
  await connection.close();
}
