/**
 * The live transcript: a store keyed by segment id, the text-stream handlers
 * that fill it, and the view that renders it into a `role="log"` element.
 *
 * Agent speech: one stream per segment, chunks are increments, the final flag
 * arrives in the trailer. User speech: every interim update is a new stream
 * with the full text and the same segment id. Both fit one rule: the text of
 * the newest stream of a segment is the segment's text.
 */
import { ATTR_SEGMENT_ID, ATTR_TRANSCRIBED_TRACK_ID, ATTR_TRANSCRIPTION_FINAL } from './config.js';

/**
 * @typedef {object} Entry
 * @property {string} id segment id (or `chat-…` for typed messages)
 * @property {'user'|'agent'} speaker
 * @property {'speech'|'chat'|'notice'} kind
 * @property {string} identity participant identity of the speaker
 * @property {string} text
 * @property {boolean} final
 * @property {boolean} [failed] a typed message that could not be sent
 * @property {number} at sort key (performance.now() time base)
 * @property {number} receivedAt epoch ms of the first text
 * @property {number} updatedAt epoch ms of the last update
 */

/** Ordered transcript entries keyed by id. Dispatches `change` with `detail: {entry, isNew}`. */
export class Transcript extends EventTarget {
  constructor() {
    super();
    /** @type {Map<string, Entry>} */
    this.entries = new Map();
    /** @type {Map<string, string>} newest stream id per segment */
    this.latestStream = new Map();
  }

  /**
   * Creates or updates an entry.
   * @param {string} id
   * @param {Partial<Entry>} fields
   * @returns {Entry}
   */
  upsert(id, fields) {
    const now = Date.now();
    let entry = this.entries.get(id);
    const isNew = !entry;
    if (!entry) {
      entry = {
        id,
        speaker: 'agent',
        kind: 'speech',
        identity: '',
        text: '',
        final: false,
        at: fields.at ?? (globalThis.performance?.now() ?? now),
        receivedAt: now,
        updatedAt: now,
      };
      this.entries.set(id, entry);
    }
    Object.assign(entry, fields, { updatedAt: now });
    this.dispatchEvent(new CustomEvent('change', { detail: { entry, isNew } }));
    return entry;
  }

  /** @returns {Entry[]} copies of the entries in display order */
  list() {
    return [...this.entries.values()].sort(byTime).map((e) => ({ ...e }));
  }

  /** Removes all entries. Dispatches `clear`. */
  clear() {
    this.entries.clear();
    this.latestStream.clear();
    this.dispatchEvent(new Event('clear'));
  }

  /**
   * Reads one `lk.transcription` text stream into the transcript.
   * @param {{info: {id: string, attributes?: Record<string,string>}, [Symbol.asyncIterator]: Function}} reader
   * @param {object} ctx
   * @param {'user'|'agent'} ctx.speaker who is transcribed
   * @param {string} ctx.identity identity of the transcribed participant
   * @param {(entry: Entry) => number} [ctx.placeAt] sort key for a new entry
   * @param {(entry: Entry) => void} [ctx.onUpdate] called after each update
   * @returns {Promise<Entry>}
   */
  async readTranscriptionStream(reader, { speaker, identity, placeAt, onUpdate }) {
    const info = reader.info;
    const segmentId = info.attributes?.[ATTR_SEGMENT_ID] || info.id;
    this.latestStream.set(segmentId, info.id);
    const isCurrent = () => this.latestStream.get(segmentId) === info.id;

    const existing = this.entries.get(segmentId);
    const first = { speaker, identity, kind: 'speech', final: false };
    if (!existing && placeAt) first.at = placeAt({ speaker, identity });
    let entry = this.upsert(segmentId, existing ? { final: false } : { ...first, text: '' });

    let text = '';
    try {
      for await (const chunk of reader) {
        text += chunk;
        if (!isCurrent()) continue;
        entry = this.upsert(segmentId, { text });
        onUpdate?.(entry);
      }
    } catch (error) {
      // The stream broke off (e.g. the agent was interrupted): keep what arrived.
      if (isCurrent()) this.upsert(segmentId, { text, final: true });
      throw error;
    }
    if (isCurrent()) {
      // The final flag may come in the header (user speech) or the trailer (agent speech).
      const flag = reader.info.attributes?.[ATTR_TRANSCRIPTION_FINAL];
      entry = this.upsert(segmentId, { text, final: flag !== 'false' });
      onUpdate?.(entry);
    }
    return entry;
  }
}

/**
 * Decides who a transcription stream is about: the local user or the agent.
 * @param {{attributes?: Record<string,string>}} info stream info
 * @param {string} senderIdentity identity the stream was sent for
 * @param {{identity: string, trackSids: string[]}} local the local participant
 * @returns {'user'|'agent'}
 */
export function transcribedSpeaker(info, senderIdentity, local) {
  if (senderIdentity && senderIdentity === local.identity) return 'user';
  const track = info.attributes?.[ATTR_TRANSCRIBED_TRACK_ID];
  if (track && local.trackSids.includes(track)) return 'user';
  return 'agent';
}

function byTime(a, b) {
  return a.at - b.at || a.receivedAt - b.receivedAt;
}

/**
 * Renders a Transcript into a `role="log"` container, keeping the view pinned
 * to the newest entry unless the user has scrolled up.
 */
export class TranscriptView {
  /**
   * @param {HTMLElement} container the log element
   * @param {Transcript} transcript
   * @param {{agentName?: string, userName?: () => string}} [labels]
   */
  constructor(container, transcript, labels = {}) {
    this.container = container;
    this.transcript = transcript;
    this.labels = labels;
    /** @type {Map<string, HTMLElement>} */
    this.nodes = new Map();
    this.empty = container.querySelector('[data-empty]');
    transcript.addEventListener('change', (e) => this.#render(e.detail.entry));
    transcript.addEventListener('clear', () => this.#clear());
  }

  #clear() {
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear();
    if (this.empty) this.empty.hidden = false;
  }

  #render(entry) {
    const pinned = this.#isPinned();
    let node = this.nodes.get(entry.id);
    if (!node) {
      node = document.createElement('div');
      node.className = 'entry';
      node.dataset.testid = 'transcript-entry';
      node.dataset.segmentId = entry.id;
      const who = document.createElement('span');
      who.className = 'who';
      const text = document.createElement('p');
      text.className = 'text';
      node.append(who, text);
      this.nodes.set(entry.id, node);
      if (this.empty) this.empty.hidden = true;
      this.#insert(node, entry);
    } else if (node.dataset.at !== String(entry.at)) {
      this.#insert(node, entry);
    }
    node.dataset.at = String(entry.at);
    node.dataset.speaker = entry.speaker;
    node.dataset.kind = entry.kind;
    node.dataset.final = String(entry.final);
    node.toggleAttribute('data-failed', Boolean(entry.failed));
    node.hidden = entry.final && !entry.text; // an empty segment says nothing
    // Interim text changes often: ask assistive technology to wait for the final text.
    node.setAttribute('aria-busy', String(!entry.final));
    node.querySelector('.who').textContent =
      entry.kind === 'notice'
        ? 'Notice'
        : entry.speaker === 'user'
          ? this.labels.userName?.() || 'You'
          : this.labels.agentName || 'Agent';
    const text = node.querySelector('.text');
    const shown = entry.text || (entry.final ? '' : '\u2026');
    if (text.textContent !== shown) text.textContent = shown;
    if (entry.failed) text.title = 'Not sent';
    if (pinned) this.container.scrollTop = this.container.scrollHeight;
  }

  #insert(node, entry) {
    // Keep DOM order equal to the store's order (entries may be placed back in time).
    let before = null;
    for (const [id, other] of this.nodes) {
      if (id === entry.id || !other.isConnected) continue;
      const key = Number(other.dataset.at);
      if (key > entry.at && (!before || key < Number(before.dataset.at))) before = other;
    }
    this.container.insertBefore(node, before);
  }

  #isPinned() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 48;
  }
}
