/**
 * One voice session, from Connect to Disconnect:
 *
 *   token server (POST /api/token) -> LiveKit room -> microphone published
 *   -> agent joins (dispatched by the token) -> agent audio played + analysed
 *   -> transcripts and chat as text streams.
 *
 * The session owns the Room and everything tied to it; it knows nothing of the
 * page except the element that holds the <audio> elements. It dispatches a
 * `change` event (detail: {what}) whenever something the page shows changes.
 */
import { ConnectionState, Room, RoomEvent, Track } from 'livekit-client';
import { AgentTracker, READY_STATES } from './agent.js';
import {
  AGENT_RETURN_GRACE_MS,
  AGENT_SPEECH_THRESHOLD,
  LEVEL_SAMPLE_MS,
  NOTICE_AGENT_RECONNECTING,
  SILENT_MIC_AFTER_MS,
  SILENT_MIC_LEVEL,
  TOKEN_TIMEOUT_MS,
  TOPIC_CHAT,
  TOPIC_NOTICE,
  TOPIC_TRANSCRIPTION,
  USER_SPEECH_THRESHOLD,
} from './config.js';
import {
  AppError,
  agentTimeoutError,
  callEndedError,
  connectError,
  describeDisconnect,
  disconnectError,
  microphoneError,
} from './errors.js';
import { LatencyTracker } from './latency.js';
import { LevelMeter, SilentMicWatch } from './levels.js';
import { fetchToken } from './token.js';
import { transcribedSpeaker } from './transcript.js';

/** @returns {any} the parsed JSON, or null if it is not JSON */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The notice shown while the open microphone has produced no sound at all. */
export const SILENT_MIC_NOTICE =
  'Your microphone is sending silence. Check that it is not muted in the system settings, or pick another one.';

/** Connection states: disconnected, connecting, connected, reconnecting. */
/** shown between a busy countdown's end and the next answer of the token endpoint */
const TRYING_AGAIN_NOTICE = 'Trying again\u2026';

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
    this.micDeviceId = micDeviceId;
    this.speakerDeviceId = speakerDeviceId;

    /** @type {Room|null} */
    this.room = null;
    this.state = 'disconnected';
    this.agentState = 'disconnected';
    /** @type {{state: string, at: number}[]} */
    this.stateHistory = [];
    /** @type {{state: string, at: number}[]} */
    this.connectionHistory = [];
    /** @type {AppError|null} the latest session problem (token, connection, agent, chat) */
    this.error = null;
    /** @type {AppError|null} why the microphone is not working, while it is not */
    this.micError = null;
    /** informational line (not an error), e.g. why the last session ended */
    this.notice = '';
    this.micEnabled = false;
    this.micPending = false;
    this.quality = 'unknown';
    this.canPlaybackAudio = true;
    this.roomName = '';
    this.identity = '';
    /** what the session's token may publish (`publish_sources`): microphone, camera, screen_share */
    this.publishSources = [];
    this.lastDisconnect = null;
    /** while every line is busy: when the next token request goes out (epoch ms), else 0 */
    this.busyUntil = 0;

    this.latency = new LatencyTracker({
      userThreshold: USER_SPEECH_THRESHOLD,
      agentThreshold: AGENT_SPEECH_THRESHOLD,
      onMeasurement: () => this.#changed('latency'),
    });
    this.silentMic = new SilentMicWatch({ threshold: SILENT_MIC_LEVEL, afterMs: SILENT_MIC_AFTER_MS });
    /** @type {AudioContext|null} */
    this.audioContext = null;
    /** @type {LevelMeter|null} */
    this.micMeter = null;
    /** @type {LevelMeter|null} */
    this.agentMeter = null;
    this.agentTracker = null;
    this.ticker = null;
    this.abort = null;
    this.endedByUser = false;
    this.chatCounter = 0;
    this.lastUserAt = -Infinity;
    /** @type {{code: string, message: string, closing: boolean}|null} the server's last notice */
    this.lastNotice = null;
    this.lastNoticeAt = -Infinity;
    /** @type {ReturnType<typeof setTimeout>|null} set while a new agent is awaited */
    this.agentReturnTimer = null;
  }

  /** @returns {boolean} whether a session is open (connected or reconnecting) */
  get isLive() {
    return this.state === 'connected' || this.state === 'reconnecting';
  }

  /** @returns {'off'|'pending'|'on'|'muted'|'unavailable'} what the microphone is doing */
  get micStatus() {
    if (this.state === 'disconnected') return 'off';
    if (this.micPending) return 'pending';
    if (this.micEnabled) return 'on';
    if (this.room?.localParticipant.getTrackPublication(Track.Source.Microphone)) return 'muted';
    return this.state === 'connected' ? 'unavailable' : 'pending';
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
    this.#ensureAudioContext();
    const abort = new AbortController();
    this.abort = abort;

    let details;
    for (;;) {
      try {
        details = await fetchToken({
          endpoint: this.options.tokenEndpoint,
          participantName,
          timeoutMs: TOKEN_TIMEOUT_MS,
          signal: abort.signal,
        });
        break;
      } catch (error) {
        // All lines busy: no room was made. Count down and ask again, until a line frees or
        // the caller cancels (a queue, as on the phone).
        if (error?.code === 'lines-busy' && (await this.#waitForALine(error.retryAfterS, abort.signal))) continue;
        this.#endAttempt(abort, error);
        return false;
      }
    }
    if (abort.signal.aborted) return this.#endAttempt(abort, null), false;
    if (this.notice === TRYING_AGAIN_NOTICE) {
      this.notice = ''; // a line was free this time
      this.#changed('busy');
    }

    const speaker = this.speakerDeviceId();
    const room = new Room({
      adaptiveStream: false,
      dynacast: false,
      disconnectOnPageLeave: true,
      audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      audioOutput: speaker ? { deviceId: speaker } : undefined,
    });
    this.room = room;
    this.roomName = details.roomName;
    this.identity = details.identity;
    this.publishSources = details.publishSources;
    this.#bindRoom(room);

    // Open the microphone while connecting; with the pre-connect buffer the
    // first words are kept and handed to the agent once it is there.
    this.#openMicrophone(room, { preConnectBuffer: this.options.preConnectBuffer });

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

    this.agentTracker = new AgentTracker(room, { joinTimeoutMs: this.options.agentJoinTimeoutMs });
    this.agentTracker.addEventListener('state', (e) => this.#onAgentState(e.detail.state));
    this.agentTracker.addEventListener('timeout', (e) =>
      this.#setError(agentTimeoutError({ joined: e.detail.joined, seconds: Math.round(this.options.agentJoinTimeoutMs / 1000) })),
    );
    // An agent that leaves mid-call is usually being replaced (its worker died or is restarting):
    // say so, and only call it gone once the grace period passes without a new one.
    this.agentTracker.addEventListener('left', () => this.#awaitAgentReturn());
    this.agentTracker.start();
    this.#onAgentState(this.agentTracker.state);
    this.ticker = setInterval(() => this.#tick(), LEVEL_SAMPLE_MS);
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
    const room = this.room;
    if (!room || !this.isLive) return;
    if (enabled) await this.#openMicrophone(room, {});
    else {
      try {
        await room.localParticipant.setMicrophoneEnabled(false);
      } finally {
        this.#syncMic();
      }
    }
  }

  /**
   * Switches the microphone of a running session (the choice is stored by the caller).
   * @param {string} deviceId
   */
  async switchMicrophone(deviceId) {
    if (!this.room || !this.isLive || !this.micEnabled) return;
    this.silentMic.reset();
    try {
      await this.room.switchActiveDevice('audioinput', deviceId || 'default');
    } catch (error) {
      this.#setMicError(microphoneError(error));
    }
  }

  /**
   * Switches the speaker (where setSinkId is supported).
   * @param {string} deviceId
   */
  async switchSpeaker(deviceId) {
    if (!this.room) return;
    try {
      await this.room.switchActiveDevice('audiooutput', deviceId || 'default');
    } catch (error) {
      this.#setError(
        new AppError('speaker-error', 'Speaker not available', `Could not switch the speaker: ${error?.message ?? error}.`, 'Pick another speaker.'),
      );
    }
  }

  /**
   * Sends a typed message to the agent (topic lk.chat) and adds it to the transcript.
   * @param {string} text
   * @returns {Promise<boolean>} whether it was sent
   */
  async sendChat(text) {
    const message = text.trim();
    if (!message) return false;
    const room = this.room;
    if (!room || !this.isLive) {
      this.#setError(new AppError('not-connected', 'Not connected', 'Connect first to send a message.'));
      return false;
    }
    const id = `chat-local-${++this.chatCounter}`;
    this.latency.userTyped(performance.now());
    this.transcript.upsert(id, { speaker: 'user', kind: 'chat', identity: this.identity, text: message, final: true });
    try {
      await room.localParticipant.sendText(message, { topic: TOPIC_CHAT });
      return true;
    } catch (error) {
      this.transcript.upsert(id, { failed: true });
      this.#setError(new AppError('chat-failed', 'Message not sent', `The message could not be sent: ${error?.message ?? error}.`, 'Check the connection and try again.'));
      return false;
    }
  }

  /** Unblocks audio playback after the browser refused autoplay (needs a click). */
  async startAudio() {
    await this.audioContext?.resume().catch(() => {});
    if (this.room) await this.room.startAudio();
    this.canPlaybackAudio = this.room?.canPlaybackAudio ?? true;
    this.#changed('playback');
  }

  /** @returns {number} RMS level (0..1) of the agent's audio as received, measured with WebAudio */
  agentAudioLevel() {
    return this.agentMeter ? this.agentMeter.level() : 0;
  }

  /** @returns {number} RMS level (0..1) of the local microphone */
  micLevel() {
    return this.micMeter ? this.micMeter.level() : 0;
  }

  /**
   * @param {number} count
   * @returns {number[]} agent audio spectrum in `count` bands (0..1), zeros without audio
   */
  agentBands(count) {
    return this.agentMeter ? this.agentMeter.bands(count) : new Array(count).fill(0);
  }

  // --- internals -----------------------------------------------------------

  #resetForSession() {
    this.busyUntil = 0;
    this.error = null;
    this.micError = null;
    this.notice = '';
    this.stateHistory = [];
    this.connectionHistory = [];
    this.endedByUser = false;
    this.lastDisconnect = null;
    this.roomName = '';
    this.identity = '';
    this.publishSources = [];
    this.lastUserAt = -Infinity;
    this.lastNotice = null;
    this.silentMic.reset();
    this.transcript.clear();
    this.latency.reset(true);
    this.#changed('reset');
  }

  #ensureAudioContext() {
    try {
      this.audioContext ??= new AudioContext({ latencyHint: 'interactive' });
      if (this.audioContext.state === 'suspended') this.audioContext.resume().catch(() => {});
    } catch {
      this.audioContext = null; // no WebAudio: no levels, everything else works
    }
  }

  #bindRoom(room) {
    const mine = (fn) => (...args) => {
      if (this.room === room) fn(...args);
    };
    room
      .on(RoomEvent.Reconnecting, mine(() => this.#setState('reconnecting')))
      .on(RoomEvent.SignalReconnecting, mine(() => this.#setState('reconnecting')))
      .on(RoomEvent.Reconnected, mine(() => this.#setState('connected')))
      .on(
        RoomEvent.ConnectionStateChanged,
        mine((s) => {
          if (s === ConnectionState.Connected && this.state === 'reconnecting') this.#setState('connected');
        }),
      )
      .on(RoomEvent.Disconnected, mine((reason) => this.#onDisconnected(reason)))
      .on(
        RoomEvent.DataReceived,
        mine((payload, _participant, _kind, topic) => {
          if (topic === TOPIC_NOTICE) this.#onNotice(parseJson(new TextDecoder().decode(payload)));
        }),
      )
      // A closing notice also comes as the room's metadata, which travels with the signalling.
      .on(RoomEvent.RoomMetadataChanged, mine((metadata) => this.#onNotice(parseJson(metadata)?.[TOPIC_NOTICE])))
      .on(
        RoomEvent.ConnectionQualityChanged,
        mine((quality, participant) => {
          if (participant === room.localParticipant) {
            this.quality = quality;
            this.#changed('quality');
          }
        }),
      )
      .on(
        RoomEvent.AudioPlaybackStatusChanged,
        mine(() => {
          this.canPlaybackAudio = room.canPlaybackAudio;
          this.#changed('playback');
        }),
      )
      .on(RoomEvent.TrackSubscribed, mine((track, _pub, participant) => this.#onTrackSubscribed(track, participant)))
      .on(RoomEvent.TrackUnsubscribed, mine((track) => track.detach().forEach((el) => el.remove())))
      .on(RoomEvent.LocalTrackPublished, mine(() => this.#syncMic()))
      .on(RoomEvent.LocalTrackUnpublished, mine(() => this.#syncMic()))
      .on(RoomEvent.TrackMuted, mine((_pub, p) => p === room.localParticipant && this.#syncMic()))
      .on(RoomEvent.TrackUnmuted, mine((_pub, p) => p === room.localParticipant && this.#syncMic()))
      .on(RoomEvent.MediaDevicesChanged, mine(() => this.#changed('devices')))
      .on(RoomEvent.ActiveDeviceChanged, mine(() => this.#changed('devices')));
    // Not RoomEvent.LocalAudioSilenceDetected: livekit-client checks 200 ms after
    // publishing, so a microphone that is merely quiet at first is reported
    // for the whole call. #tick watches the level instead (SilentMicWatch).

    // Text stream handlers must be registered before connect().
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, { identity }) => {
      if (this.room !== room) return;
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
      if (this.room !== room) return;
      const id = `chat-${reader.info.id}`;
      const speaker = identity === room.localParticipant.identity ? 'user' : 'agent';
      reader
        .readAll()
        .then((text) => this.transcript.upsert(id, { speaker, kind: 'chat', identity, text, final: true }))
        .catch((error) => console.warn('chat stream failed', error));
    });
  }

  /** Sort key for a new user transcript: when the microphone heard the speech begin. */
  #userEntryPlace() {
    const now = performance.now();
    const start = this.latency.userSpeechStart;
    let at = now;
    if (start !== null && now - start < 30_000) at = Math.min(now, Math.max(start, this.lastUserAt + 0.01));
    this.lastUserAt = at;
    return at;
  }

  async #openMicrophone(room, { preConnectBuffer = false }) {
    if (this.micPending) return;
    this.micPending = true;
    this.#changed('mic');
    try {
      const deviceId = this.micDeviceId();
      await room.localParticipant.setMicrophoneEnabled(true, deviceId ? { deviceId } : undefined, { preConnectBuffer });
      if (this.room !== room) return;
      this.#setMicError(null);
      this.#changed('devices'); // labels are readable now that permission is granted
    } catch (error) {
      if (this.room !== room || this.state === 'disconnected') return; // the attempt ended anyway
      this.#setMicError(microphoneError(error));
    } finally {
      this.micPending = false;
      if (this.room === room) this.#syncMic();
      else this.#changed('mic');
    }
  }

  #syncMic() {
    const enabled = Boolean(this.room?.localParticipant.isMicrophoneEnabled);
    this.micEnabled = enabled;
    this.#changed('mic');
  }

  #onTrackSubscribed(track, participant) {
    if (track.kind !== Track.Kind.Audio) return;
    const element = track.attach();
    element.dataset.participant = participant.identity;
    this.audioContainer.append(element);
  }

  #onAgentState(state) {
    if (this.agentReturnTimer !== null) {
      if (!READY_STATES.has(state)) return; // still "reconnecting the assistant"
      clearTimeout(this.agentReturnTimer);
      this.agentReturnTimer = null;
    }
    this.#setAgentState(state);
    this.latency.agentState(state, performance.now());
    if (READY_STATES.has(state) && this.error?.code === 'agent-timeout') this.#setError(null);
    if (READY_STATES.has(state) && this.error?.code === 'agent-left') this.#setError(null);
  }

  /** The agent left (or the server says a new one is coming): wait for it for a while. */
  #awaitAgentReturn() {
    clearTimeout(this.agentReturnTimer);
    this.agentReturnTimer = setTimeout(() => {
      this.agentReturnTimer = null;
      this.#setAgentState('disconnected');
      this.#setError(
        new AppError('agent-left', 'The agent left', 'The agent left the conversation and no other took over.', 'Press Disconnect, then Connect to start a new conversation.'),
      );
    }, AGENT_RETURN_GRACE_MS);
    this.#setAgentState('reconnecting');
  }

  /** A notice from the server (topic voice.notice): shown in the transcript; a closing one ends the call. */
  #onNotice(notice) {
    if (typeof notice?.message !== 'string' || !notice.message) return;
    const last = this.lastNotice;
    const now = performance.now();
    // The same notice may come twice (data message and room metadata; the agent and the watchdog).
    if (last && last.code === notice.code && last.message === notice.message && now - this.lastNoticeAt < 5_000) return;
    this.lastNoticeAt = now;
    this.lastNotice = { code: String(notice.code ?? ''), message: notice.message, closing: notice.closing === true };
    const id = `notice-${++this.chatCounter}`;
    this.transcript.upsert(id, { speaker: 'agent', kind: 'notice', identity: '', text: notice.message, final: true });
    if (this.lastNotice.closing) this.#setError(callEndedError(this.lastNotice));
    else if (this.lastNotice.code === NOTICE_AGENT_RECONNECTING && !READY_STATES.has(this.agentState)) this.#awaitAgentReturn();
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
    clearInterval(this.ticker);
    this.ticker = null;
    clearTimeout(this.agentReturnTimer);
    this.agentReturnTimer = null;
    this.agentTracker?.stop();
    this.agentTracker = null;
    this.micMeter?.dispose();
    this.agentMeter?.dispose();
    this.micMeter = null;
    this.agentMeter = null;
    this.latency.reset();
    this.latency.agentAudioAvailable = false;
    for (const el of [...this.audioContainer.children]) {
      el.srcObject = null;
      el.remove();
    }
    this.room?.removeAllListeners();
    this.room = null;
    this.abort = null;
    this.micEnabled = false;
    this.micPending = false;
    this.micError = null;
    this.quality = 'unknown';
    this.canPlaybackAudio = true;
    if (this.notice === SILENT_MIC_NOTICE) this.notice = '';
    if (this.lastDisconnect?.byUser || (this.endedByUser && !this.error)) {
      this.notice = 'Disconnected. Press Connect to start a new conversation.';
    }
    this.#setAgentState('disconnected');
    this.#setState('disconnected');
  }

  /** Samples microphone and agent levels for the latency tracker. */
  #tick() {
    const room = this.room;
    if (!room) return;
    const t = performance.now();
    const micTrack = room.localParticipant.getTrackPublication(Track.Source.Microphone)?.track?.mediaStreamTrack;
    this.micMeter = this.#meterFor(this.micMeter, micTrack);
    const micLevel = this.micMeter ? this.micMeter.level() : 0;
    this.latency.sampleUser(micLevel, t);
    this.#showSilentMic(this.silentMic.sample(Boolean(this.micMeter) && this.micStatus === 'on', micLevel, t));

    const agentTrack = this.agentTracker?.audioTrack()?.mediaStreamTrack;
    this.agentMeter = this.#meterFor(this.agentMeter, agentTrack);
    this.latency.agentAudioAvailable = Boolean(this.agentMeter);
    if (this.agentMeter) this.latency.sampleAgent(this.agentMeter.level(), t);
  }

  #showSilentMic(silent) {
    const shown = this.notice === SILENT_MIC_NOTICE;
    if (silent === shown || (silent && (this.notice || this.error))) return;
    this.notice = silent ? SILENT_MIC_NOTICE : '';
    this.#changed('notice');
  }

  #meterFor(meter, track) {
    if ((meter?.track ?? null) === (track ?? null)) return meter;
    meter?.dispose();
    if (!track || !this.audioContext) return null;
    try {
      return new LevelMeter(this.audioContext, track);
    } catch {
      return null;
    }
  }

  /**
   * Shows "All lines are busy" with a countdown for `seconds`.
   * @returns {Promise<boolean>} true when the wait ran out (ask again), false when cancelled
   */
  #waitForALine(seconds, signal) {
    if (signal.aborted) return Promise.resolve(false);
    this.busyUntil = Date.now() + seconds * 1000;
    return new Promise((resolve) => {
      const show = () => {
        const left = Math.max(0, Math.ceil((this.busyUntil - Date.now()) / 1000));
        this.notice = `All lines are busy. Trying again in ${left} s\u2026`;
        this.#changed('busy');
        return left;
      };
      const finish = (again) => {
        clearInterval(timer);
        signal.removeEventListener('abort', cancelled);
        this.busyUntil = 0;
        this.notice = again ? TRYING_AGAIN_NOTICE : '';
        this.#changed('busy');
        resolve(again);
      };
      const cancelled = () => finish(false);
      const timer = setInterval(() => {
        if (show() === 0) finish(true);
      }, 250);
      signal.addEventListener('abort', cancelled, { once: true });
      show();
    });
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

  #setMicError(error) {
    if (error === this.micError) return;
    this.micError = error;
    this.#changed('error');
  }

  #changed(what) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what } }));
  }
}
