/**
 * Notices from the server (topic voice.notice): `{code, message, closing}`, sent by the agent
 * and the token server's watchdog as a data message, and a closing one also as the room's
 * metadata (which travels with the signalling). The same notice may so come twice; it is
 * shown once.
 */
import { TOPIC_NOTICE } from './config.js';

/** A notice repeated within this many ms (same code and message) is the same notice. */
const REPEAT_WITHIN_MS = 5_000;

/** @returns {any} the parsed JSON, or null if it is not JSON */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * @param {Uint8Array} payload a data message on topic voice.notice
 * @returns {any} the notice it carries (unchecked), or null
 */
export function noticeFromData(payload) {
  return parseJson(new TextDecoder().decode(payload));
}

/**
 * @param {string} metadata the room's metadata
 * @returns {any} the notice it carries under `voice.notice` (unchecked), or undefined
 */
export function noticeFromMetadata(metadata) {
  return parseJson(metadata)?.[TOPIC_NOTICE];
}

/** Keeps the latest notice and drops its repeats. */
export class NoticeFilter {
  constructor() {
    /** @type {{code: string, message: string, closing: boolean}|null} the server's last notice */
    this.last = null;
    this.lastAt = -Infinity;
  }

  /** Forgets the last notice (a new call). */
  reset() {
    this.last = null;
  }

  /**
   * @param {any} notice as received
   * @param {number} now time in ms (performance.now())
   * @returns {{code: string, message: string, closing: boolean}|null} the notice to show, or
   *   null when it is none (no message) or a repeat of the last one
   */
  accept(notice, now) {
    if (typeof notice?.message !== 'string' || !notice.message) return null;
    const last = this.last;
    if (last && last.code === notice.code && last.message === notice.message && now - this.lastAt < REPEAT_WITHIN_MS) return null;
    this.lastAt = now;
    this.last = { code: String(notice.code ?? ''), message: notice.message, closing: notice.closing === true };
    return this.last;
  }
}
