/**
 * Finds the agent in the room and follows its state.
 *
 * The agent is the remote participant with kind AGENT that does not publish on
 * behalf of another (an avatar worker would). Its state is the participant
 * attribute `lk.agent.state`: initializing, idle, listening, thinking, speaking.
 * Before it joins, the state is "connecting"; if it is not ready within the
 * timeout, "failed" (and it recovers if the agent shows up late). While the
 * room reconnects from scratch, livekit-client drops every remote participant
 * and re-adds them once it has rejoined: the agent is then "connecting" again
 * (with a fresh join timeout), not gone.
 */
import { ConnectionState, ParticipantKind, RoomEvent, Track } from 'livekit-client';
import { ATTR_AGENT_STATE, ATTR_PUBLISH_ON_BEHALF } from './config.js';

/** Agent states in which the agent is up and taking part in the conversation. */
export const READY_STATES = new Set(['idle', 'listening', 'thinking', 'speaking']);

/**
 * @param {import('livekit-client').Participant} participant
 * @returns {boolean} whether this participant is the conversational agent
 */
export function isAgentParticipant(participant) {
  return participant.kind === ParticipantKind.AGENT && !participant.attributes?.[ATTR_PUBLISH_ON_BEHALF];
}

/**
 * Follows the agent of one room. Dispatches:
 * - `state` with `detail: {state, previous}` when the agent state changes,
 * - `timeout` with `detail: {joined}` when the agent is not ready in time,
 * - `left` when the agent leaves.
 */
export class AgentTracker extends EventTarget {
  /**
   * @param {import('livekit-client').Room} room
   * @param {{joinTimeoutMs: number}} options
   */
  constructor(room, { joinTimeoutMs }) {
    super();
    this.room = room;
    this.joinTimeoutMs = joinTimeoutMs;
    /** @type {import('livekit-client').RemoteParticipant|null} */
    this.agent = null;
    this.state = 'connecting';
    this.timedOut = false;
    this.timer = null;
    this.handlers = [
      [RoomEvent.ParticipantConnected, (p) => this.#consider(p)],
      [RoomEvent.ParticipantAttributesChanged, (_changed, p) => this.#consider(p)],
      [RoomEvent.ParticipantDisconnected, (p) => this.#left(p)],
    ];
  }

  /** Starts following (call once the room is connected); starts the join timer. */
  start() {
    for (const [event, handler] of this.handlers) this.room.on(event, handler);
    for (const p of this.room.remoteParticipants.values()) this.#consider(p);
    this.timer = setTimeout(() => this.#checkTimeout(), this.joinTimeoutMs);
  }

  /** Stops following and cancels the timer. */
  stop() {
    clearTimeout(this.timer);
    for (const [event, handler] of this.handlers) this.room.off(event, handler);
  }

  /** @returns {import('livekit-client').RemoteAudioTrack|undefined} the agent's subscribed audio track */
  audioTrack() {
    if (!this.agent) return undefined;
    const mic = this.agent.getTrackPublication(Track.Source.Microphone);
    if (mic?.audioTrack) return mic.audioTrack;
    for (const pub of this.agent.audioTrackPublications.values()) if (pub.audioTrack) return pub.audioTrack;
    return undefined;
  }

  #consider(participant) {
    if (!isAgentParticipant(participant)) return;
    if (this.agent && this.agent !== participant && this.agent.identity !== participant.identity) return;
    this.agent = participant;
    this.#setState(participant.attributes?.[ATTR_AGENT_STATE] || 'initializing');
  }

  #left(participant) {
    if (!this.agent || participant.identity !== this.agent.identity) return;
    this.agent = null;
    if (this.room.state !== ConnectionState.Connected) {
      this.#setState('connecting');
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.#checkTimeout(), this.joinTimeoutMs);
      return;
    }
    // `left` first: a listener that waits for a new agent must not show "disconnected" meanwhile.
    this.dispatchEvent(new Event('left'));
    this.#setState('disconnected');
  }

  #checkTimeout() {
    if (READY_STATES.has(this.state)) return;
    if (this.state === 'disconnected') return;
    this.timedOut = true;
    const joined = Boolean(this.agent);
    this.#setState('failed');
    this.dispatchEvent(new CustomEvent('timeout', { detail: { joined } }));
  }

  #setState(state) {
    // After a timeout, only a ready state replaces "failed".
    if (this.state === 'failed' && !READY_STATES.has(state)) return;
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, previous } }));
  }
}
