/**
 * The agent visualizer (bars that follow the agent's voice, and move by state
 * when it is silent) and the microphone input meter. Driven by
 * requestAnimationFrame only while a session is open.
 */
import { displayLevel } from './levels.js';

/** Animates the bar visualizer and the microphone meter from the session's analysers. */
export class Visualizer {
  /**
   * @param {HTMLElement} container element holding the `.bar` elements
   * @param {HTMLElement} micLevel element whose width follows the microphone level
   * @param {import('./session.js').VoiceSession} session
   */
  constructor(container, micLevel, session) {
    this.bars = [...container.querySelectorAll('.bar')];
    this.container = container;
    this.micLevel = micLevel;
    this.session = session;
    this.frame = 0;
    this.loop = () => this.#draw();
  }

  /** Starts animating (idempotent). */
  start() {
    if (!this.frame) this.frame = requestAnimationFrame(this.loop);
  }

  /** Stops animating and resets the bars. */
  stop() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.#show(null);
    this.micLevel.style.transform = 'scaleX(0)';
  }

  #draw() {
    this.frame = requestAnimationFrame(this.loop);
    const level = displayLevel(this.session.agentAudioLevel());
    if (level > 0.05) {
      // Mirror the spectrum so the strongest (lowest) band sits in the middle.
      const half = Math.ceil(this.bars.length / 2);
      const bands = this.session.agentBands(half);
      const shaped = bands.map((b) => Math.min(1, 0.35 * level + 0.85 * b * b));
      const values = [...shaped.slice(1).reverse(), ...shaped].slice(0, this.bars.length);
      this.#show(values);
    } else {
      this.#show(null);
    }
    const mic = this.session.micStatus === 'on' ? displayLevel(this.session.micLevel()) : 0;
    this.micLevel.style.transform = `scaleX(${mic.toFixed(3)})`;
  }

  #show(values) {
    this.container.toggleAttribute('data-audio', Boolean(values));
    this.bars.forEach((bar, i) => {
      if (values) bar.style.setProperty('--level', values[i].toFixed(3));
      else bar.style.removeProperty('--level');
    });
  }
}
