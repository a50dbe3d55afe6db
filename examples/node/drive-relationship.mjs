#!/usr/bin/env node
// Drives a mentorflow Relationship from Node.js with nothing but plain JSON that matches
// the contract (contract/Relationship/…, explained in docs/contract.md):
//
//   1. starts a Relationship (workflow input: three ids),
//   2. proposes a mentor (update) and accepts as the mentee (signal),
//   3. sends one malformed update and one malformed signal, and prints what the
//      relationship said about each (the update: an error naming the fields; the signal:
//      a rejection recorded in the state),
//   4. accepts as the mentor (update), queries `state` and prints the phase.
//
// Usage (every option also from the environment):
//   node drive-relationship.mjs --programme spring-2027 --mentee emp-1042 --mentor emp-311 --coordinator coord-7
//     --address      MENTORFLOW_TEMPORAL_ADDRESS    (default 127.0.0.1:7233)
//     --namespace    MENTORFLOW_TEMPORAL_NAMESPACE  (default mentorflow)
//     --task-queue   MENTORFLOW_TASK_QUEUE          (default mentorflow)
//     --programme    MENTORFLOW_PROGRAMME           (default spring-2027; it must exist)
//     --relationship MENTORFLOW_RELATIONSHIP_ID     (default: a random id)
//     --mentee, --mentor, --coordinator             (defaults emp-1042, emp-311, coord-7)
//   MENTORFLOW_ENCRYPTION_KEYS: when the workers encrypt payloads (they do unless told
//   otherwise), the same "id:BASE64 …" keys, so that this client encrypts what it sends and
//   can read the answers (see codec.mjs and docs/contract.md "Encrypted payloads").
//
// The last line printed is one JSON object with the outcome, for scripts and tests.

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

const keys = process.env.MENTORFLOW_ENCRYPTION_KEYS;
const codec = keys ? EncryptionCodec.fromConfig(keys) : null;
const connection = await Connection.connect({ address: args.address });
const client = new Client({
  connection,
  namespace: args.namespace,
  // Without keys: plain JSON (the workers accept unencrypted commands, but their answers
  // would be unreadable if they encrypt).
  dataConverter: codec ? { payloadCodecs: [codec] } : undefined,
});

// Every command carries its own id: the relationship applies an id once, so retrying
// (here: using it as the update id too) can never apply a command twice.
let sequence = 0;
const command = (actorId, fields = {}) => ({ command_id: `${args.relationship}-${++sequence}`, actor_id: actorId, ...fields });

async function update(name, payload) {
  const result = await handle.executeUpdate(name, { args: [payload], updateId: payload.command_id });
  console.log(`update ${name}: ${result.events.join(', ') || 'nothing new'} → version ${result.version}, phase ${result.phase}`);
  return result;
}

const workflowId = `relationship/${args.programme}/${args.relationship}`;
const handle = await client.workflow.start('Relationship', {
  taskQueue: args['task-queue'],
  workflowId,
  args: [{ relationship_id: args.relationship, programme_id: args.programme, mentee_id: args.mentee }],
});
console.log(`started ${workflowId}`);

await update('propose_match', command(args.coordinator, { mentor_id: args.mentor, explanation: 'proposed from Node.js' }));

const accepted = command(args.mentee);
await handle.signal('accept_match', accepted);
console.log(`signal accept_match sent (command ${accepted.command_id})`);

// A malformed update: `actor` instead of `actor_id`. It is refused before it reaches the
// history, with every bad field named.
let badUpdateError = null;
try {
  await handle.executeUpdate('accept_match', { args: [{ command_id: `${args.relationship}-bad-update`, actor: args.mentor }] });
  throw new Error('the malformed update was accepted');
} catch (error) {
  if (!(error instanceof WorkflowUpdateFailedError)) throw error;
  badUpdateError = error.cause?.message ?? error.message;
  console.log(`update accept_match refused: ${badUpdateError}`);
}

// A malformed signal cannot be answered: it is recorded as a rejected command instead.
const badSignalId = `${args.relationship}-bad-signal`;
await handle.signal('decline_match', { command_id: badSignalId, actor_id: args.mentor, reason: 42 });

await update('accept_match', command(args.mentor));

const state = await handle.query('state');
const rejectedSignal = state.rejected_commands.find((rejected) => rejected.command_id === badSignalId) ?? null;
if (rejectedSignal) console.log(`signal decline_match recorded as rejected: ${rejectedSignal.reason}`);
console.log(`phase: ${state.phase} (mentor ${state.mentor_id}, version ${state.version})`);

console.log(JSON.stringify({
  workflow_id: workflowId,
  phase: state.phase,
  mentor_id: state.mentor_id,
  version: state.version,
  encrypted: codec !== null,
  bad_update_error: badUpdateError,
  rejected_signal: rejectedSignal,
}));
await connection.close();
