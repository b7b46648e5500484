/**
 * The text of a call: the agent's transcription stream (both sides' words, topic
 * lk.transcription), chat messages in (topic lk.chat) and typed messages out, all into the
 * transcript; the user's spoken words are placed where the microphone heard them begin.
 */
import { TOPIC_CHAT, TOPIC_TRANSCRIPTION } from './config.js';
import { chatError } from './errors.js';
import { transcribedSpeaker } from './transcript.js';

/** How long (ms) after the microphone heard speech begin a user transcript is still placed there. */
const PLACE_WITHIN_MS = 30_000;

export class Chat {
  /**
   * @param {object} deps
   * @param {import('./transcript.js').Transcript} deps.transcript
   * @param {import('./latency.js').LatencyTracker} deps.latency told when the user types or is transcribed
   */
  constructor({ transcript, latency }) {
    this.transcript = transcript;
    this.latency = latency;
    this.counter = 0;
    this.lastUserAt = -Infinity;
  }

  /** Forgets the last call's placing (a new call). */
  reset() {
    this.lastUserAt = -Infinity;
  }

  /**
   * @param {string} prefix
   * @returns {string} a transcript entry id no other local entry has
   */
  nextId(prefix) {
    return `${prefix}-${++this.counter}`;
  }

  /** Adds a server notice's message to the transcript (`kind: 'notice'`). */
  showNotice(message) {
    this.transcript.upsert(this.nextId('notice'), { speaker: 'agent', kind: 'notice', identity: '', text: message, final: true });
  }

  /**
   * Registers the room's text stream handlers (before `room.connect()`).
   * @param {import('livekit-client').Room} room
   * @param {() => boolean} isCurrent whether the room is still the call's
   */
  listen(room, isCurrent) {
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, { identity }) => {
      if (!isCurrent()) return;
      const local = room.localParticipant;
      const speaker = transcribedSpeaker(reader.info, identity, {
        identity: local.identity,
        trackSids: [...local.trackPublications.keys()],
      });
      this.transcript
        .readTranscriptionStream(reader, {
          speaker,
          identity,
          placeAt: speaker === 'user' ? () => this.#userEntryPlace() : undefined,
          onUpdate: (entry) => {
            if (speaker === 'user') this.latency.userTranscript(entry.final, performance.now());
          },
        })
        .catch((error) => console.warn('transcription stream failed', error));
    });
    room.registerTextStreamHandler(TOPIC_CHAT, (reader, { identity }) => {
      if (!isCurrent()) return;
      const id = `chat-${reader.info.id}`;
      const speaker = identity === room.localParticipant.identity ? 'user' : 'agent';
      reader
        .readAll()
        .then((text) => this.transcript.upsert(id, { speaker, kind: 'chat', identity, text, final: true }))
        .catch((error) => console.warn('chat stream failed', error));
    });
  }

  /**
   * Sends a typed message to the agent (topic lk.chat) and adds it to the transcript.
   * @param {import('livekit-client').Room|null} room the call's, null while there is no call
   * @param {string} identity the caller's
   * @param {string} text as typed (an empty message is not sent)
   * @returns {Promise<{sent: boolean, error: import('./errors.js').AppError|null}>} whether it
   *   was sent, and why not when that is worth saying
   */
  async send(room, identity, text) {
    const message = text.trim();
    if (!message) return { sent: false, error: null };
    if (!room) return { sent: false, error: chatError(null) };
    const id = this.nextId('chat-local');
    this.latency.userTyped(performance.now());
    this.transcript.upsert(id, { speaker: 'user', kind: 'chat', identity, text: message, final: true });
    try {
      await room.localParticipant.sendText(message, { topic: TOPIC_CHAT });
      return { sent: true, error: null };
    } catch (error) {
      this.transcript.upsert(id, { failed: true });
      return { sent: false, error: chatError(error) };
    }
  }

  /** Sort key for a new user transcript: when the microphone heard the speech begin. */
  #userEntryPlace() {
    const now = performance.now();
    const start = this.latency.userSpeechStart;
    let at = now;
    if (start !== null && now - start < PLACE_WITHIN_MS) at = Math.min(now, Math.max(start, this.lastUserAt + 0.01));
    this.lastUserAt = at;
    return at;
  }
}
