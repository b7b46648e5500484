/**
 * Whether the agent is in the call, as the page shows it: the state AgentTracker follows, except
 * that an agent that leaves mid-call (or that the server says is being replaced) is usually
 * being replaced, its worker having died or restarting: it is awaited for a grace period, and
 * only called gone once that passes without a new one.
 *
 * Dispatches:
 * - `state` with `detail: {state, tracked}`: `tracked` true for the state AgentTracker follows
 *   (while no agent is awaited, or once an awaited one is ready), false for `reconnecting`
 *   (an agent is awaited) and `disconnected` (the grace period passed without one);
 * - `error` with `detail: {error}`: `agent-timeout` (the first agent was not ready in time) or
 *   `agent-left` (no other took over), as AppErrors.
 */
import { AgentTracker, READY_STATES } from './agent.js';
import { agentLeftError, agentTimeoutError } from './errors.js';

export class AgentPresence extends EventTarget {
  /**
   * @param {{returnGraceMs: number}} options how long (ms) a new agent is awaited
   */
  constructor({ returnGraceMs }) {
    super();
    this.returnGraceMs = returnGraceMs;
    /** @type {AgentTracker|null} */
    this.tracker = null;
    /** @type {ReturnType<typeof setTimeout>|null} set while a new agent is awaited */
    this.returnTimer = null;
  }

  /**
   * Starts following the agent of a connected room.
   * @param {import('livekit-client').Room} room
   * @param {{joinTimeoutMs: number}} options how long (ms) the first agent may take to be ready
   */
  follow(room, { joinTimeoutMs }) {
    const tracker = new AgentTracker(room, { joinTimeoutMs });
    this.tracker = tracker;
    tracker.addEventListener('state', (e) => this.#onState(e.detail.state));
    const seconds = Math.round(joinTimeoutMs / 1000);
    tracker.addEventListener('timeout', (e) => this.#error(agentTimeoutError({ joined: e.detail.joined, seconds })));
    tracker.addEventListener('left', () => this.awaitReturn());
    tracker.start();
    this.#onState(tracker.state);
  }

  /** Stops following (the call ended) and awaits no agent. */
  stop() {
    clearTimeout(this.returnTimer);
    this.returnTimer = null;
    this.tracker?.stop();
    this.tracker = null;
  }

  /** The agent left, or the server says a new one is coming: await it for the grace period. */
  awaitReturn() {
    clearTimeout(this.returnTimer);
    this.returnTimer = setTimeout(() => {
      this.returnTimer = null;
      this.#state('disconnected', false);
      this.#error(agentLeftError());
    }, this.returnGraceMs);
    this.#state('reconnecting', false);
  }

  /** @returns {import('livekit-client').RemoteAudioTrack|undefined} the agent's subscribed audio track */
  audioTrack() {
    return this.tracker?.audioTrack();
  }

  #onState(state) {
    if (this.returnTimer !== null) {
      if (!READY_STATES.has(state)) return; // still "reconnecting the assistant"
      clearTimeout(this.returnTimer);
      this.returnTimer = null;
    }
    this.#state(state, true);
  }

  #state(state, tracked) {
    this.dispatchEvent(new CustomEvent('state', { detail: { state, tracked } }));
  }

  #error(error) {
    this.dispatchEvent(new CustomEvent('error', { detail: { error } }));
  }
}
