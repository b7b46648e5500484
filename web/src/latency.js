/**
 * Per-turn response latency: time from the end of the user's speech to the
 * agent's first audio.
 *
 * End of user speech: the last loud microphone sample before a silence of
 * `userHangoverMs` (or, if the microphone never looked like speech, the moment
 * the user's final transcript arrived). Agent's first audio: the agent's audio
 * level rising above its threshold (or, without agent audio analysis, the
 * agent state turning "speaking"). Pure logic: feed it samples and events.
 */

/**
 * @typedef {object} Measurement
 * @property {number} ms latency in milliseconds
 * @property {number} userEndAt performance.now() time of the end of user speech
 * @property {number} agentStartAt performance.now() time of the agent's first audio
 * @property {'vad'|'transcript'|'chat'} endSource how the end of the user's turn was found (microphone level, final transcript, typed message)
 * @property {'audio'|'state'} startSource how the agent's first audio was found
 */

export class LatencyTracker {
  /**
   * @param {object} [options]
   * @param {number} [options.userThreshold] RMS above which the microphone counts as speech
   * @param {number} [options.agentThreshold] RMS above which the agent counts as speaking
   * @param {number} [options.userHangoverMs] silence that ends a user utterance
   * @param {number} [options.minSpeechMs] shortest sound counted as speech
   * @param {number} [options.agentHangoverMs] silence that ends an agent utterance
   * @param {number} [options.maxMs] ignore measurements longer than this (no real turn)
   * @param {(m: Measurement) => void} [options.onMeasurement]
   */
  constructor({
    userThreshold = 0.02,
    agentThreshold = 0.01,
    userHangoverMs = 350,
    minSpeechMs = 120,
    agentHangoverMs = 300,
    maxMs = 30_000,
    onMeasurement,
  } = {}) {
    Object.assign(this, { userThreshold, agentThreshold, userHangoverMs, minSpeechMs, agentHangoverMs, maxMs });
    this.onMeasurement = onMeasurement;
    /** @type {Measurement[]} */
    this.measurements = [];
    /** whether agent audio is analysed; otherwise the "speaking" state is used */
    this.agentAudioAvailable = false;
    this.reset();
  }

  /** Forgets the current turn (keeps past measurements unless `all`). */
  reset(all = false) {
    if (all) this.measurements = [];
    this.userActive = false;
    this.runStart = null;
    this.lastLoudAt = -Infinity;
    this.userStartAt = null;
    this.vadSeenSpeech = false;
    this.agentActive = false;
    this.agentLastLoudAt = -Infinity;
    this.armedAt = null;
    this.armSource = null;
  }

  /**
   * Feeds one microphone level sample.
   * @param {number} level RMS 0..1
   * @param {number} t performance.now()
   */
  sampleUser(level, t) {
    if (level >= this.userThreshold) {
      if (this.runStart === null || t - this.lastLoudAt > this.userHangoverMs) this.runStart = t;
      this.lastLoudAt = t;
      if (!this.userActive && t - this.runStart >= this.minSpeechMs) {
        this.userActive = true;
        this.userStartAt = this.runStart;
        this.vadSeenSpeech = true;
        this.armedAt = null; // the user is (still) talking: the turn is not over
      }
    } else if (this.userActive && t - this.lastLoudAt > this.userHangoverMs) {
      this.userActive = false;
      this.#arm(this.lastLoudAt, 'vad');
    }
  }

  /**
   * Feeds one agent audio level sample.
   * @param {number} level RMS 0..1
   * @param {number} t performance.now()
   */
  sampleAgent(level, t) {
    if (level >= this.agentThreshold) {
      if (!this.agentActive) {
        this.agentActive = true;
        this.#agentStarted(t, 'audio');
      }
      this.agentLastLoudAt = t;
    } else if (this.agentActive && t - this.agentLastLoudAt > this.agentHangoverMs) {
      this.agentActive = false;
    }
  }

  /**
   * A user transcript arrived (interim or final).
   * @param {boolean} final
   * @param {number} t performance.now()
   */
  userTranscript(final, t) {
    if (!final || this.armedAt !== null) return;
    // The microphone level marks the end of speech better, when it works (it
    // does not when it never saw speech, or when noise keeps it busy).
    if (this.vadSeenSpeech && !this.userActive) return;
    // A late transcript of a turn the agent is already answering.
    if (this.agentActive) return;
    this.#arm(t, 'transcript');
  }

  /**
   * The user sent a typed message: the turn ends now.
   * @param {number} t performance.now()
   */
  userTyped(t) {
    this.#arm(t, 'chat');
  }

  /**
   * The agent state changed.
   * @param {string} state lk.agent.state value
   * @param {number} t performance.now()
   */
  agentState(state, t) {
    if (state === 'speaking' && !this.agentAudioAvailable) this.#agentStarted(t, 'state');
  }

  /** @returns {number|null} performance.now() time the latest user utterance began (per microphone level) */
  get userSpeechStart() {
    return this.userStartAt;
  }

  /** @returns {{last: number|null, median: number|null, count: number}} summary in ms */
  summary() {
    const values = this.measurements.map((m) => m.ms).sort((a, b) => a - b);
    const count = values.length;
    const median = count === 0 ? null : count % 2 ? values[(count - 1) / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
    return { last: count ? this.measurements[count - 1].ms : null, median, count };
  }

  #arm(t, source) {
    this.armedAt = t;
    this.armSource = source;
  }

  #agentStarted(t, source) {
    if (this.armedAt === null || t < this.armedAt) return;
    if (this.userActive && this.armSource === 'vad') return;
    const ms = t - this.armedAt;
    const m = { ms: Math.round(ms), userEndAt: this.armedAt, agentStartAt: t, endSource: this.armSource, startSource: source };
    this.armedAt = null;
    if (ms > this.maxMs) return;
    this.measurements.push(m);
    this.onMeasurement?.(m);
  }
}
