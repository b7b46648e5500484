/**
 * One voice session, from Connect to Disconnect:
 *
 *   token server (POST /api/token) -> LiveKit room (room.js) -> microphone published
 *   (microphone.js) -> agent joins (dispatched by the token; presence.js) -> agent audio
 *   played and measured (meters.js) -> transcripts and chat as text streams (chat.js).
 *
 * The session owns the Room and the call's life: states, errors, notices (notices.js), the
 * busy-line queue (busy.js); it knows nothing of the page except the element that holds the
 * <audio> elements. It dispatches a `change` event (detail: {what}) whenever something the
 * page shows changes.
 */
import { READY_STATES } from './agent.js';
import { fetchTokenInLine, TRYING_AGAIN_NOTICE } from './busy.js';
import { Chat } from './chat.js';
import {
  AGENT_RETURN_GRACE_MS,
  AGENT_SPEECH_THRESHOLD,
  NOTICE_AGENT_RECONNECTING,
  TOKEN_TIMEOUT_MS,
  USER_SPEECH_THRESHOLD,
} from './config.js';
import { AppError, callEndedError, connectError, describeDisconnect, disconnectError } from './errors.js';
import { LatencyTracker } from './latency.js';
import { AudioMeters } from './meters.js';
import { Microphone, SILENT_MIC_NOTICE } from './microphone.js';
import { NoticeFilter } from './notices.js';
import { AgentPresence } from './presence.js';
import { bindRoom, createRoom, removeRemoteAudio, switchSpeaker } from './room.js';

export { SILENT_MIC_NOTICE };

/** Connection states: disconnected, connecting, connected, reconnecting. */
export class VoiceSession extends EventTarget {
  /**
   * @param {object} deps
   * @param {{tokenEndpoint: string, preConnectBuffer: boolean, agentJoinTimeoutMs: number}} deps.options
   * @param {import('./transcript.js').Transcript} deps.transcript
   * @param {HTMLElement} deps.audioContainer where remote <audio> elements go
   * @param {() => string} deps.micDeviceId chosen microphone ('' for default)
   * @param {() => string} deps.speakerDeviceId chosen speaker ('' for default)
   */
  constructor({ options, transcript, audioContainer, micDeviceId, speakerDeviceId }) {
    super();
    this.options = options;
    this.transcript = transcript;
    this.audioContainer = audioContainer;
    this.speakerDeviceId = speakerDeviceId;

    /** @type {import('livekit-client').Room|null} */
    this.room = null;
    this.state = 'disconnected';
    this.agentState = 'disconnected';
    this.quality = 'unknown';
    this.canPlaybackAudio = true;
    this.#clearCall();

    this.latency = new LatencyTracker({
      userThreshold: USER_SPEECH_THRESHOLD,
      agentThreshold: AGENT_SPEECH_THRESHOLD,
      onMeasurement: () => this.#changed('latency'),
    });
    this.microphone = new Microphone({ deviceId: micDeviceId, onChange: (what) => this.#changed(what) });
    this.meters = new AudioMeters({ latency: this.latency });
    this.chat = new Chat({ transcript, latency: this.latency });
    this.notices = new NoticeFilter();
    this.agent = new AgentPresence({ returnGraceMs: AGENT_RETURN_GRACE_MS });
    this.agent.addEventListener('state', (e) => this.#onAgentState(e.detail));
    this.agent.addEventListener('error', (e) => this.#setError(e.detail.error));
    this.abort = null;
  }

  /** @returns {boolean} whether a session is open (connected or reconnecting) */
  get isLive() {
    return this.state === 'connected' || this.state === 'reconnecting';
  }

  /** @returns {'off'|'pending'|'on'|'muted'|'unavailable'} what the microphone is doing */
  get micStatus() {
    return this.microphone.status(this.state);
  }

  /** @returns {AppError|null} why the microphone is not working, while it is not */
  get micError() {
    return this.microphone.error;
  }

  /** Dismisses (null) the microphone's error without a change event, as the page does. */
  set micError(error) {
    this.microphone.error = error;
  }

  /** @returns {{code: string, message: string, closing: boolean}|null} the server's last notice */
  get lastNotice() {
    return this.notices.last;
  }

  /**
   * Starts a session: gets a token, joins the room, opens the microphone.
   * Call it from a click handler (the audio context needs a user gesture).
   * @param {{participantName?: string}} [options]
   * @returns {Promise<boolean>} whether the room was joined
   */
  async connect({ participantName = '' } = {}) {
    if (this.state !== 'disconnected') return false;
    this.#resetForSession();
    this.#setState('connecting');
    this.#setAgentState('connecting');
    this.meters.ensureContext();
    const abort = new AbortController();
    this.abort = abort;

    let details;
    try {
      // While every line is busy no room is made: count down and ask again, until a line frees
      // or the caller cancels (a queue, as on the phone).
      const request = { endpoint: this.options.tokenEndpoint, participantName, timeoutMs: TOKEN_TIMEOUT_MS, signal: abort.signal };
      details = await fetchTokenInLine(request, (notice, busyUntil) => {
        this.notice = notice;
        this.busyUntil = busyUntil;
        this.#changed('busy');
      });
    } catch (error) {
      this.#endAttempt(abort, error);
      return false;
    }
    if (abort.signal.aborted) return this.#endAttempt(abort, null), false;
    if (this.notice === TRYING_AGAIN_NOTICE) {
      this.notice = ''; // a line was free this time
      this.#changed('busy');
    }

    const room = createRoom(this.speakerDeviceId());
    this.room = room;
    this.microphone.attach(room);
    this.roomName = details.roomName;
    this.identity = details.identity;
    this.publishSources = details.publishSources;
    this.#bindRoom(room);

    // Open the microphone while connecting; with the pre-connect buffer the
    // first words are kept and handed to the agent once it is there.
    this.microphone.open(room, { preConnectBuffer: this.options.preConnectBuffer });

    try {
      await room.connect(details.serverUrl, details.token, { autoSubscribe: true });
    } catch (error) {
      if (this.room === room) {
        await room.disconnect().catch(() => {});
        this.#endAttempt(abort, abort.signal.aborted ? null : connectError(error));
      }
      return false;
    }
    if (this.room !== room) return false;
    if (abort.signal.aborted) {
      await room.disconnect().catch(() => {});
      return false;
    }

    this.identity = room.localParticipant.identity;
    this.roomName = room.name || this.roomName;
    this.#setState('connected');
    this.canPlaybackAudio = room.canPlaybackAudio;
    room.startAudio().catch(() => {});

    // An agent that leaves mid-call is usually being replaced: awaited for a grace period.
    this.agent.follow(room, { joinTimeoutMs: this.options.agentJoinTimeoutMs });
    this.meters.start(
      () => ({ mic: this.microphone.track(), agent: this.agent.audioTrack()?.mediaStreamTrack }),
      (level, measured, t) => this.#showSilentMic(this.microphone.silence.sample(measured && this.micStatus === 'on', level, t)),
    );
    this.#changed('connected');
    return true;
  }

  /**
   * Ends the session (or cancels a connection attempt).
   * @returns {Promise<void>}
   */
  async disconnect() {
    if (this.state === 'disconnected') return;
    this.endedByUser = true;
    this.abort?.abort();
    const room = this.room;
    if (room) await room.disconnect().catch(() => {});
    if (this.room === room) this.#cleanup();
  }

  /**
   * Mutes or unmutes the microphone; after a failure, tries to open it again.
   * @param {boolean} enabled
   * @returns {Promise<void>}
   */
  async setMicrophoneEnabled(enabled) {
    if (!this.room || !this.isLive) return;
    await (enabled ? this.microphone.open(this.room) : this.microphone.mute());
  }

  /**
   * Switches the microphone of a running session (the choice is stored by the caller).
   * @param {string} deviceId
   */
  async switchMicrophone(deviceId) {
    if (!this.room || !this.isLive || !this.microphone.enabled) return;
    await this.microphone.switchDevice(deviceId);
  }

  /**
   * Switches the speaker (where setSinkId is supported).
   * @param {string} deviceId
   */
  async switchSpeaker(deviceId) {
    const error = this.room && (await switchSpeaker(this.room, deviceId));
    if (error) this.#setError(error);
  }

  /**
   * Sends a typed message to the agent (topic lk.chat) and adds it to the transcript.
   * @param {string} text
   * @returns {Promise<boolean>} whether it was sent
   */
  async sendChat(text) {
    const { sent, error } = await this.chat.send(this.isLive ? this.room : null, this.identity, text);
    if (error) this.#setError(error);
    return sent;
  }

  /** Unblocks audio playback after the browser refused autoplay (needs a click). */
  async startAudio() {
    await this.meters.resume();
    if (this.room) await this.room.startAudio();
    this.canPlaybackAudio = this.room?.canPlaybackAudio ?? true;
    this.#changed('playback');
  }

  /** @returns {number} RMS level (0..1) of the agent's audio as received, measured with WebAudio */
  agentAudioLevel() {
    return this.meters.agentLevel();
  }

  /** @returns {number} RMS level (0..1) of the local microphone */
  micLevel() {
    return this.meters.micLevel();
  }

  /** @returns {number[]} agent audio spectrum in `count` bands (0..1), zeros without audio */
  agentBands(count) {
    return this.meters.agentBands(count);
  }

  // --- internals -----------------------------------------------------------

  /** What one call leaves behind, cleared when the next starts. */
  #clearCall() {
    /** while every line is busy: when the next token request goes out (epoch ms), else 0 */
    this.busyUntil = 0;
    /** @type {AppError|null} the latest session problem (token, connection, agent, chat) */
    this.error = null;
    /** informational line (not an error), e.g. why the last session ended */
    this.notice = '';
    /** @type {{state: string, at: number}[]} */
    this.stateHistory = [];
    /** @type {{state: string, at: number}[]} */
    this.connectionHistory = [];
    this.endedByUser = false;
    this.lastDisconnect = null;
    this.roomName = '';
    this.identity = '';
    /** what the session's token may publish (`publish_sources`): microphone, camera, screen_share */
    this.publishSources = [];
  }

  #resetForSession() {
    this.#clearCall();
    this.microphone.error = null;
    this.chat.reset();
    this.notices.reset();
    this.microphone.silence.reset();
    this.transcript.clear();
    this.latency.reset(true);
    this.#changed('reset');
  }

  #bindRoom(room) {
    const isCurrent = () => this.room === room;
    bindRoom(room, {
      isCurrent,
      audioContainer: this.audioContainer,
      on: {
        reconnecting: () => this.#setState('reconnecting'),
        reconnected: () => this.#setState('connected'),
        connected: () => this.state === 'reconnecting' && this.#setState('connected'),
        disconnected: (reason) => this.#onDisconnected(reason),
        notice: (notice) => this.#onNotice(notice),
        quality: (quality) => {
          this.quality = quality;
          this.#changed('quality');
        },
        playback: () => {
          this.canPlaybackAudio = room.canPlaybackAudio;
          this.#changed('playback');
        },
        localTracks: () => this.microphone.sync(),
        devices: () => this.#changed('devices'),
      },
    });
    // Text stream handlers must be registered before connect().
    this.chat.listen(room, isCurrent);
  }

  #onAgentState({ state, tracked }) {
    this.#setAgentState(state);
    if (!tracked) return; // reconnecting, or gone: the agent's own state is not known
    this.latency.agentState(state, performance.now());
    if (READY_STATES.has(state) && ['agent-timeout', 'agent-left'].includes(this.error?.code)) this.#setError(null);
  }

  /** A notice from the server (topic voice.notice): shown in the transcript; a closing one ends the call. */
  #onNotice(received) {
    const notice = this.notices.accept(received, performance.now());
    if (!notice) return;
    this.chat.showNotice(notice.message);
    if (notice.closing) this.#setError(callEndedError(notice));
    else if (notice.code === NOTICE_AGENT_RECONNECTING && !READY_STATES.has(this.agentState)) this.agent.awaitReturn();
  }

  #onDisconnected(reason) {
    // A failure while connecting is reported by connect() itself, with more detail.
    if (this.state === 'connecting') return;
    const info = describeDisconnect(reason);
    this.lastDisconnect = { reason: info.name, byUser: this.endedByUser || info.byUser };
    // A closing notice already said why; the room's closing must not replace it.
    if (!this.lastDisconnect.byUser && !this.lastNotice?.closing) this.#setError(disconnectError(reason));
    this.#cleanup();
  }

  #endAttempt(abort, error) {
    if (this.abort !== abort) return;
    const cancelled = this.endedByUser || error?.code === 'cancelled';
    if (!cancelled && error) this.#setError(error instanceof AppError ? error : connectError(error));
    this.#cleanup();
  }

  #cleanup() {
    this.meters.stop();
    this.agent.stop();
    this.latency.reset();
    this.latency.agentAudioAvailable = false;
    removeRemoteAudio(this.audioContainer);
    this.room?.removeAllListeners();
    this.room = null;
    this.microphone.detach();
    this.abort = null;
    this.quality = 'unknown';
    this.canPlaybackAudio = true;
    if (this.notice === SILENT_MIC_NOTICE) this.notice = '';
    if (this.lastDisconnect?.byUser || (this.endedByUser && !this.error)) {
      this.notice = 'Disconnected. Press Connect to start a new conversation.';
    }
    this.#setAgentState('disconnected');
    this.#setState('disconnected');
  }

  #showSilentMic(silent) {
    const shown = this.notice === SILENT_MIC_NOTICE;
    if (silent === shown || (silent && (this.notice || this.error))) return;
    this.notice = silent ? SILENT_MIC_NOTICE : '';
    this.#changed('notice');
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.connectionHistory.push({ state, at: Date.now() });
    this.#changed('state');
  }

  #setAgentState(state) {
    if (state === this.agentState) return;
    this.agentState = state;
    this.stateHistory.push({ state, at: Date.now() });
    this.#changed('agentState');
  }

  #setError(error) {
    this.error = error;
    if (error) this.notice = '';
    this.#changed('error');
  }

  #changed(what) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what } }));
  }
}
