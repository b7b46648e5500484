/**
 * The one call to the token server: `POST /api/token`.
 *
 * Request: `{"participant_name": "..."}` (standard LiveKit token-endpoint shape).
 * Answer: `201 {"server_url", "participant_token", "room_name", "participant_identity",
 * "publish_sources"}` (`publish_sources`: what the token may publish, e.g. `["microphone"]`,
 * plus `"camera"` and/or `"screen_share"` when the appliance lets callers show video),
 * or an error status with `{"error": {"code", "message"}}`. `503` with code `at_capacity`
 * and `Retry-After` (seconds) means every line is busy: ask again after that long.
 */
import { AppError } from './errors.js';

/**
 * @typedef {object} Connection
 * @property {string} serverUrl absolute ws(s):// URL of LiveKit
 * @property {string} token participant JWT
 * @property {string} roomName
 * @property {string} identity
 * @property {string[]} publishSources LiveKit track sources the token may publish
 */

/**
 * Asks the token server for a fresh room and a participant token.
 * @param {object} options
 * @param {string} options.endpoint URL of the token endpoint
 * @param {string} [options.participantName] optional display name
 * @param {number} [options.timeoutMs] give up after this long
 * @param {AbortSignal} [options.signal] cancels the request
 * @param {typeof fetch} [options.fetchImpl] for tests
 * @param {{href: string}} [options.location] page location, to resolve relative URLs
 * @returns {Promise<Connection>}
 * @throws {AppError} with code server-unreachable, lines-busy (with `retryAfterS`), token-refused,
 *   token-server-error or token-invalid
 */
export async function fetchToken({
  endpoint,
  participantName = '',
  timeoutMs = 15_000,
  signal,
  fetchImpl = globalThis.fetch,
  location = globalThis.location,
}) {
  const body = {};
  if (participantName.trim()) body.participant_name = participantName.trim();

  const timeout = AbortSignal.timeout(timeoutMs);
  const combined = signal ? anySignal([signal, timeout]) : timeout;
  let response;
  try {
    response = await fetchImpl(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
      signal: combined,
      cache: 'no-store',
    });
  } catch (error) {
    if (signal?.aborted) throw new AppError('cancelled', 'Cancelled', 'The connection attempt was cancelled.');
    const timedOut = timeout.aborted;
    throw new AppError(
      'server-unreachable',
      'Server unreachable',
      timedOut
        ? `The server did not answer within ${Math.round(timeoutMs / 1000)} s.`
        : 'Could not reach the server to start a session.',
      'Check that the appliance is running and that this device can reach it on the network, then try again.',
    );
  }

  const payload = await readJson(response);
  if (!response.ok) throw tokenHttpError(response.status, payload, response.headers?.get?.('Retry-After'));

  const serverUrl = payload?.server_url;
  const token = payload?.participant_token;
  if (typeof token !== 'string' || !token) {
    throw new AppError(
      'token-invalid',
      'Unexpected answer from the server',
      'The token server answered without a participant token.',
      'The token server may be a different version than this page. Ask the administrator to check it.',
    );
  }
  return {
    serverUrl: resolveServerUrl(serverUrl, location),
    token,
    roomName: typeof payload.room_name === 'string' ? payload.room_name : '',
    identity: typeof payload.participant_identity === 'string' ? payload.participant_identity : '',
    // An older token server does not say: it allowed the microphone only.
    publishSources: Array.isArray(payload.publish_sources)
      ? payload.publish_sources.filter((source) => typeof source === 'string')
      : ['microphone'],
  };
}

/**
 * Turns an HTTP error answer into an AppError, showing the server's own message.
 * @param {number} status HTTP status
 * @param {any} payload parsed JSON body, or null
 * @param {string|null} [retryAfter] the Retry-After header (seconds)
 * @returns {AppError}
 */
export function tokenHttpError(status, payload, retryAfter = null) {
  const serverMessage = typeof payload?.error?.message === 'string' ? payload.error.message.trim() : '';
  const serverCode = typeof payload?.error?.code === 'string' ? payload.error.code : '';
  let error;
  if (status === 503 && serverCode === 'at_capacity') {
    // Every agent is busy (or none is running): no room was made; try again later.
    error = new AppError(
      'lines-busy',
      'All lines are busy',
      'Every line is taken right now.',
      'You will be connected as soon as one is free.',
    );
    error.retryAfterS = retryAfterSeconds(retryAfter);
  } else if (serverCode === 'budget_exhausted' || serverCode === 'minutes_exhausted') {
    // A cost guard: no more calls until the day (or month) is over; retrying now is pointless.
    error = new AppError(
      'limit-reached',
      serverCode === 'budget_exhausted' ? 'No more calls for now' : 'You have used today\u2019s minutes',
      serverMessage || 'The call limit is reached.',
      'The operator has set a limit on calls; it resets at midnight UTC.',
    );
  } else if (!serverMessage && [502, 503, 504].includes(status)) {
    // The front door answered, but nothing behind it did.
    error = new AppError(
      'server-unreachable',
      'Server unreachable',
      `The token server is not responding (HTTP ${status}).`,
      'The appliance may still be starting. Wait a few seconds and try again; if it persists, check the token server\u2019s logs.',
    );
  } else if (!serverMessage && [404, 405, 501].includes(status)) {
    // A plain web server without the token service behind /api.
    error = new AppError(
      'server-unreachable',
      'Server unreachable',
      `No token service answers at this address (HTTP ${status}).`,
      'The page is served, but the token server behind /api/token is not. Check the front door\u2019s proxy settings and that the token server runs.',
    );
  } else if (status >= 400 && status < 500) {
    error = new AppError(
      'token-refused',
      'The server refused to start a session',
      serverMessage || `The token request was refused (HTTP ${status}).`,
      status === 429 ? 'Too many sessions at once: wait a moment and try again.' : 'Check the name you entered and try again.',
    );
  } else {
    error = new AppError(
      'token-server-error',
      'The server could not start a session',
      serverMessage || `The token server failed (HTTP ${status}).`,
      'Try again in a moment. If it keeps failing, check the token server\u2019s logs.',
    );
  }
  error.status = status;
  error.serverCode = serverCode;
  return error;
}

/** Seconds to wait from a Retry-After header (seconds form), within 1..300; 5 when absent. */
export function retryAfterSeconds(value) {
  const seconds = Number.parseInt(String(value ?? ''), 10);
  return Number.isFinite(seconds) ? Math.min(300, Math.max(1, seconds)) : 5;
}

/**
 * Makes the server URL absolute. The token server should send ws(s)://…; an
 * empty or relative value is taken relative to this page (same origin, ws/wss).
 * @param {unknown} serverUrl value of `server_url`
 * @param {{href: string}} [location] page location
 * @returns {string}
 */
export function resolveServerUrl(serverUrl, location = globalThis.location) {
  const base = new URL(location?.href ?? 'http://localhost/');
  const url = new URL(typeof serverUrl === 'string' && serverUrl ? serverUrl : '/', base);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  // A page served over https may not open ws:// (mixed content): upgrading cannot make it worse.
  if (base.protocol === 'https:' && url.protocol === 'ws:') url.protocol = 'wss:';
  return url.toString();
}

function anySignal(signals) {
  if (typeof AbortSignal.any === 'function') return AbortSignal.any(signals);
  const controller = new AbortController();
  for (const s of signals) {
    if (s.aborted) controller.abort(s.reason);
    else s.addEventListener('abort', () => controller.abort(s.reason), { once: true });
  }
  return controller.signal;
}

async function readJson(response) {
  try {
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}
