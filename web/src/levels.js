/** Audio level measurement with WebAudio analysers. */

/** Measures the level and spectrum of one MediaStreamTrack. */
export class LevelMeter {
  /**
   * @param {AudioContext} context
   * @param {MediaStreamTrack} track an audio track (local or remote)
   */
  constructor(context, track) {
    this.track = track;
    this.context = context;
    this.source = context.createMediaStreamSource(new MediaStream([track]));
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.analyser.smoothingTimeConstant = 0.5;
    this.analyser.minDecibels = -90;
    this.analyser.maxDecibels = -20;
    this.source.connect(this.analyser);
    this.samples = new Float32Array(this.analyser.fftSize);
    this.spectrum = new Uint8Array(this.analyser.frequencyBinCount);
  }

  /** @returns {number} RMS level of the latest ~20 ms, 0 (silence) to 1 (full scale) */
  level() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    return Math.sqrt(sum / this.samples.length);
  }

  /**
   * Energy in `count` log-spaced bands over the speech range (100 Hz to 6 kHz).
   * @param {number} count
   * @returns {number[]} values 0..1
   */
  bands(count) {
    this.analyser.getByteFrequencyData(this.spectrum);
    const binHz = this.context.sampleRate / this.analyser.fftSize;
    const lo = Math.log(100);
    const hi = Math.log(6000);
    const out = [];
    for (let i = 0; i < count; i++) {
      const from = Math.max(1, Math.floor(Math.exp(lo + ((hi - lo) * i) / count) / binHz));
      const to = Math.max(from + 1, Math.floor(Math.exp(lo + ((hi - lo) * (i + 1)) / count) / binHz));
      let max = 0;
      for (let b = from; b < to && b < this.spectrum.length; b++) max = Math.max(max, this.spectrum[b]);
      out.push(max / 255);
    }
    return out;
  }

  /** Disconnects the analyser graph. */
  dispose() {
    try {
      this.source.disconnect();
    } catch {
      /* already disconnected */
    }
  }
}

/**
 * Maps an RMS level to 0..1 for display (speech sits around 0.02 to 0.3 RMS).
 * @param {number} rms
 * @returns {number}
 */
export function displayLevel(rms) {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(rms);
  return Math.min(1, Math.max(0, (db + 50) / 40));
}

/**
 * Decides when to say "your microphone is sending silence": only when an open,
 * unmuted microphone has not produced a single sound for `afterMs` (real
 * microphones always pick up some noise, so this means a dead, hardware-muted
 * or wrong device). Once any sound is heard it never fires again for that
 * microphone; muting pauses the clock. Pure logic: feed it samples.
 */
export class SilentMicWatch {
  /**
   * @param {object} [options]
   * @param {number} [options.threshold] RMS above which the microphone produced sound (default -80 dBFS)
   * @param {number} [options.afterMs] how long an open microphone may stay silent before we say so
   */
  constructor({ threshold = 1e-4, afterMs = 5000 } = {}) {
    this.threshold = threshold;
    this.afterMs = afterMs;
    this.reset();
  }

  /** Forgets everything (a new session or another microphone). */
  reset() {
    this.heard = false;
    this.openSince = null;
  }

  /**
   * @param {boolean} open whether the microphone is on and unmuted
   * @param {number} level its RMS level now (0..1)
   * @param {number} t time in ms
   * @returns {boolean} whether the microphone should be reported as silent now
   */
  sample(open, level, t) {
    if (this.heard) return false;
    if (!open) {
      this.openSince = null;
      return false;
    }
    if (level > this.threshold) {
      this.heard = true;
      return false;
    }
    this.openSince ??= t;
    return t - this.openSince >= this.afterMs;
  }
}
