// A client of mentorflow's HTTP API (docs/api.md) with nothing but Node's own `fetch`
// (Node.js >= 20): no Temporal SDK, no payload codec, no npm packages. The API holds the
// keys and answers plain JSON.
//
// What it takes care of, so that callers need not:
// * Refusals: every refusal is an RFC 9457 problem document (application/problem+json) with
//   the contract's refusal code; it is thrown as an `ApiProblem` with `status`, `code`,
//   `detail` and `problems` ([{field, message}], every field at fault).
// * Idempotency: a command is sent with an `Idempotency-Key` header, which is its command id.
//   Resending the same request is always safe: the relationship applies a command id once
//   and answers a repeat with `"replay": true` and what the command did the first time.
// * Retries: a request that got no answer (connection error, timeout), 503 `unavailable`
//   (no worker answered in time, Temporal unreachable) or 429 `rate_limited` is sent again,
//   unchanged, after the server's `Retry-After` (or a second), until `maxWaitSeconds` have
//   passed. Only requests that are safe to repeat are retried: reads, starts (the same start
//   again answers `"created": false`) and commands with an Idempotency-Key.

import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

/** A refusal: the problem document the API answered. */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(`${status} ${problem.code ?? 'error'}: ${problem.detail ?? problem.title ?? 'no detail'}`);
    this.name = 'ApiProblem';
    this.status = status;
    this.type = problem.type ?? null;
    this.code = problem.code ?? null;
    this.detail = problem.detail ?? null;
    this.problems = problem.problems ?? [];
  }
}

/** `Retry-After` in seconds: delay-seconds or an HTTP date; null when absent or unreadable. */
export function retryAfterSeconds(header) {
  if (header == null) return null;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

export class MentorflowApi {
  /**
   * @param {string} baseUrl  e.g. http://127.0.0.1:8080 (./run dev) or https://mentoring-api.example.org
   * @param {string} key      an API key (`mentorflow api-keys create …`) or a person's SSO token
   * @param {object} options  requestTimeoutSeconds (each attempt), maxWaitSeconds (all retries of
   *                          one request), onRetry(info) (called before each retry)
   */
  constructor(baseUrl, key, { requestTimeoutSeconds = 30, maxWaitSeconds = 120, onRetry = () => {} } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.key = key;
    this.requestTimeoutSeconds = requestTimeoutSeconds;
    this.maxWaitSeconds = maxWaitSeconds;
    this.onRetry = onRetry;
  }

  /** One request, retried where that is safe; the answer's JSON, or an ApiProblem thrown. */
  async request(method, path, { body, idempotencyKey, retrySafe = method === 'GET' || idempotencyKey != null } = {}) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (idempotencyKey != null) headers['Idempotency-Key'] = idempotencyKey;
    const deadline = Date.now() + this.maxWaitSeconds * 1000;
    for (let attempt = 1; ; attempt += 1) {
      let response;
      try {
        response = await fetch(this.baseUrl + path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.requestTimeoutSeconds * 1000),
        });
      } catch (error) {
        // No answer at all: the request may or may not have arrived. Repeat it if that is safe.
        const cause = error.cause?.code ?? error.cause?.errors?.[0]?.code ?? error.cause?.message;
        const reason = error.name === 'TimeoutError' ? `no answer in ${this.requestTimeoutSeconds} s` : `${error.message} (${cause})`;
        if (!retrySafe || Date.now() + 1000 > deadline) throw new Error(`${method} ${path}: ${reason}`);
        this.onRetry({ method, path, attempt, status: null, code: null, reason, waitSeconds: 1, idempotencyKey });
        await sleep(1000);
        continue;
      }
      const text = await response.text();
      const isProblem = (response.headers.get('content-type') ?? '').startsWith('application/problem+json');
      const data = text ? JSON.parse(text) : null;
      if (response.ok) return data;
      const problem = new ApiProblem(response.status, isProblem && data ? data : { detail: text.slice(0, 200) });
      const wait = retryAfterSeconds(response.headers.get('retry-after')) ?? 1;
      if ((response.status === 503 || response.status === 429) && retrySafe && Date.now() + wait * 1000 <= deadline) {
        this.onRetry({ method, path, attempt, status: response.status, code: problem.code, reason: problem.detail,
                       waitSeconds: wait, idempotencyKey }); // prettier-ignore
        await sleep(wait * 1000);
        continue;
      }
      throw problem;
    }
  }

  /** Start a relationship (ids only); a retry of the same start answers `created: false`. */
  startRelationship(programmeId, relationshipId, menteeId) {
    const body = { programme_id: programmeId, relationship_id: relationshipId, mentee_id: menteeId };
    return this.request('POST', '/v1/relationships', { body, retrySafe: true });
  }

  /**
   * Send a command (the contract's message `name` with its payload, without `command_id`) and
   * return the relationship's CommandResult. `commandId` (the Idempotency-Key) defaults to a
   * new one: pass the same id to resend the same command.
   */
  command(programmeId, relationshipId, name, payload, commandId = `node-${randomUUID()}`) {
    const path = `/v1/relationships/${encodeURIComponent(programmeId)}/${encodeURIComponent(relationshipId)}/commands/${name}`;
    return this.request('POST', path, { body: payload, idempotencyKey: commandId });
  }

  /** The relationship's state (the `state` query). */
  state(programmeId, relationshipId) {
    return this.request('GET', `/v1/relationships/${encodeURIComponent(programmeId)}/${encodeURIComponent(relationshipId)}`);
  }

  /** Every stored event of the relationship, read `limit` at a time. */
  async events(programmeId, relationshipId, limit = 100) {
    const events = [];
    for (let after = 0; after !== null; ) {
      const path = `/v1/relationships/${encodeURIComponent(programmeId)}/${encodeURIComponent(relationshipId)}/events`;
      const page = await this.request('GET', `${path}?after_version=${after}&limit=${limit}`);
      events.push(...page.events);
      after = page.next_after_version;
    }
    return events;
  }
}
