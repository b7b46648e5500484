/**
 * The caller's microphone in a call: opening it (with the pre-connect buffer while joining),
 * muting, switching devices, what it is doing, why it fails, and whether it sends only silence.
 *
 * It follows one room at a time (`attach` / `detach`) and reports every change the page shows
 * through `onChange(what)`: 'mic' (status), 'devices' (labels readable), 'error'.
 */
import { Track } from 'livekit-client';
import { SILENT_MIC_AFTER_MS, SILENT_MIC_LEVEL } from './config.js';
import { microphoneError } from './errors.js';
import { SilentMicWatch } from './levels.js';

/** The notice shown while the open microphone has produced no sound at all. */
export const SILENT_MIC_NOTICE =
  'Your microphone is sending silence. Check that it is not muted in the system settings, or pick another one.';

export class Microphone {
  /**
   * @param {object} deps
   * @param {() => string} deps.deviceId chosen microphone ('' for default)
   * @param {(what: string) => void} deps.onChange called when something shown changed
   */
  constructor({ deviceId, onChange }) {
    this.deviceId = deviceId;
    this.onChange = onChange;
    /** @type {import('livekit-client').Room|null} */
    this.room = null;
    this.enabled = false;
    this.pending = false;
    /** @type {import('./errors.js').AppError|null} why the microphone is not working, while it is not */
    this.error = null;
    this.silence = new SilentMicWatch({ threshold: SILENT_MIC_LEVEL, afterMs: SILENT_MIC_AFTER_MS });
  }

  /** @param {import('livekit-client').Room} room the call's room, from now on */
  attach(room) {
    this.room = room;
  }

  /** Forgets the room (the call ended). */
  detach() {
    this.room = null;
    this.enabled = false;
    this.pending = false;
    this.error = null;
  }

  /**
   * @param {string} state the connection state: disconnected, connecting, connected, reconnecting
   * @returns {'off'|'pending'|'on'|'muted'|'unavailable'} what the microphone is doing
   */
  status(state) {
    if (state === 'disconnected') return 'off';
    if (this.pending) return 'pending';
    if (this.enabled) return 'on';
    if (this.room?.localParticipant.getTrackPublication(Track.Source.Microphone)) return 'muted';
    return state === 'connected' ? 'unavailable' : 'pending';
  }

  /**
   * Opens (or unmutes) the microphone in `room`; a failure becomes `error`.
   * @param {import('livekit-client').Room} room
   * @param {{preConnectBuffer?: boolean}} [options] keep the first words until the agent is there
   */
  async open(room, { preConnectBuffer = false } = {}) {
    if (this.pending) return;
    this.pending = true;
    this.onChange('mic');
    try {
      const deviceId = this.deviceId();
      await room.localParticipant.setMicrophoneEnabled(true, deviceId ? { deviceId } : undefined, { preConnectBuffer });
      if (this.room !== room) return;
      this.setError(null);
      this.onChange('devices'); // labels are readable now that permission is granted
    } catch (error) {
      if (this.room !== room) return; // the attempt ended anyway
      this.setError(microphoneError(error));
    } finally {
      this.pending = false;
      if (this.room === room) this.sync();
      else this.onChange('mic');
    }
  }

  /** @returns {MediaStreamTrack|undefined} the microphone's track, while it is published */
  track() {
    return this.room?.localParticipant.getTrackPublication(Track.Source.Microphone)?.track?.mediaStreamTrack;
  }

  /** Mutes the microphone. */
  async mute() {
    try {
      await this.room?.localParticipant.setMicrophoneEnabled(false);
    } finally {
      this.sync();
    }
  }

  /**
   * Switches to another microphone (the choice is stored by the caller).
   * @param {string} deviceId
   */
  async switchDevice(deviceId) {
    this.silence.reset();
    try {
      await this.room?.switchActiveDevice('audioinput', deviceId || 'default');
    } catch (error) {
      this.setError(microphoneError(error));
    }
  }

  /** Reads whether the microphone is on from the room (after any local track change). */
  sync() {
    this.enabled = Boolean(this.room?.localParticipant.isMicrophoneEnabled);
    this.onChange('mic');
  }

  /** @param {import('./errors.js').AppError|null} error */
  setError(error) {
    if (error === this.error) return;
    this.error = error;
    this.onChange('error');
  }
}
