/**
 * The session's sound levels: one WebAudio context, a meter on the microphone and one on the
 * agent's audio as received, sampled every LEVEL_SAMPLE_MS for the latency tracker while a call
 * runs. Each meter follows its track (a new track gets a new meter); with no WebAudio there are
 * no levels (0) and everything else works.
 */
import { LEVEL_SAMPLE_MS } from './config.js';
import { LevelMeter } from './levels.js';

export class AudioMeters {
  /**
   * @param {object} deps
   * @param {import('./latency.js').LatencyTracker} deps.latency gets every sample
   */
  constructor({ latency }) {
    this.latency = latency;
    /** @type {ReturnType<typeof setInterval>|null} */
    this.ticker = null;
    /** @type {AudioContext|null} */
    this.audioContext = null;
    /** @type {LevelMeter|null} */
    this.micMeter = null;
    /** @type {LevelMeter|null} */
    this.agentMeter = null;
  }

  /** Creates (or resumes) the audio context; call it from a user gesture. */
  ensureContext() {
    try {
      this.audioContext ??= new AudioContext({ latencyHint: 'interactive' });
      if (this.audioContext.state === 'suspended') this.audioContext.resume().catch(() => {});
    } catch {
      this.audioContext = null; // no WebAudio: no levels, everything else works
    }
  }

  /** Resumes the audio context after the browser refused autoplay (needs a click). */
  async resume() {
    await this.audioContext?.resume().catch(() => {});
  }

  /**
   * Samples both levels every LEVEL_SAMPLE_MS until `stop()`.
   * @param {() => {mic: MediaStreamTrack|undefined, agent: MediaStreamTrack|undefined}} tracks
   *   what to measure now
   * @param {(level: number, measured: boolean, t: number) => void} onMicLevel gets each
   *   microphone sample (RMS 0..1, whether there is a meter, performance.now() ms)
   */
  start(tracks, onMicLevel) {
    clearInterval(this.ticker);
    this.ticker = setInterval(() => {
      const t = performance.now();
      const { mic, agent } = tracks();
      const measured = this.followMic(mic);
      const level = this.micLevel();
      this.latency.sampleUser(level, t);
      onMicLevel(level, measured, t);
      this.latency.agentAudioAvailable = this.followAgent(agent);
      if (this.latency.agentAudioAvailable) this.latency.sampleAgent(this.agentLevel(), t);
    }, LEVEL_SAMPLE_MS);
  }

  /** Stops sampling and both meters (the call ended); the audio context is kept for the next call. */
  stop() {
    clearInterval(this.ticker);
    this.ticker = null;
    this.micMeter?.dispose();
    this.agentMeter?.dispose();
    this.micMeter = null;
    this.agentMeter = null;
  }

  /**
   * Measures this microphone track from now on (nothing if null).
   * @param {MediaStreamTrack|null|undefined} track
   * @returns {boolean} whether the microphone is measured
   */
  followMic(track) {
    this.micMeter = this.#meterFor(this.micMeter, track);
    return Boolean(this.micMeter);
  }

  /**
   * Measures this agent audio track from now on (nothing if null).
   * @param {MediaStreamTrack|null|undefined} track
   * @returns {boolean} whether the agent's audio is measured
   */
  followAgent(track) {
    this.agentMeter = this.#meterFor(this.agentMeter, track);
    return Boolean(this.agentMeter);
  }

  /** @returns {number} RMS level (0..1) of the local microphone */
  micLevel() {
    return this.micMeter ? this.micMeter.level() : 0;
  }

  /** @returns {number} RMS level (0..1) of the agent's audio as received */
  agentLevel() {
    return this.agentMeter ? this.agentMeter.level() : 0;
  }

  /**
   * @param {number} count
   * @returns {number[]} agent audio spectrum in `count` bands (0..1), zeros without audio
   */
  agentBands(count) {
    return this.agentMeter ? this.agentMeter.bands(count) : new Array(count).fill(0);
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
}
