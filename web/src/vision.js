/**
 * Showing the agent a camera or the screen (vision), when the appliance allows it:
 *
 *   token answer `publish_sources` (the operator's VIDEO_INPUT) -> which buttons exist
 *   -> camera / screen share published to the room -> the agent forwards about one frame a
 *   second to the model while the track is unmuted.
 *
 * Nothing here runs when the token allows the microphone only: no buttons, no camera
 * permission prompt. State changes are announced with a `change` event; the page renders
 * `cameraStatus`, `screenStatus`, `seeing`, `error` and attaches the preview.
 */
import { RoomEvent, Track, VideoPresets } from 'livekit-client';
import { cameraError } from './errors.js';

/** Token source names (LiveKit `TrackSource`) that turn on each control. */
export const CAMERA_SOURCE = 'camera';
export const SCREEN_SOURCE = 'screen_share';

/**
 * The camera is captured at 720p and sent at no more than this many frames a second: the
 * agent passes on about one a second, so more only costs the caller's battery and uplink.
 */
export const CAMERA_MAX_FPS = 15;
const CAMERA_ENCODING = { maxBitrate: 1_200_000, maxFramerate: CAMERA_MAX_FPS };

/**
 * Which video controls a token allows.
 * @param {string[]} publishSources the token answer's `publish_sources`
 * @param {{getDisplayMedia?: Function}|undefined} [mediaDevices] the browser's (screen sharing needs getDisplayMedia; phones lack it)
 * @returns {{camera: boolean, screen: boolean}}
 */
export function allowedVideo(publishSources, mediaDevices = globalThis.navigator?.mediaDevices) {
  const sources = Array.isArray(publishSources) ? publishSources : [];
  return {
    camera: sources.includes(CAMERA_SOURCE),
    screen: sources.includes(SCREEN_SOURCE) && typeof mediaDevices?.getDisplayMedia === 'function',
  };
}

/** The caller's camera and screen share in one call. */
export class VideoShare extends EventTarget {
  /**
   * @param {object} deps
   * @param {() => string} deps.cameraDeviceId chosen camera ('' for the default)
   */
  constructor({ cameraDeviceId }) {
    super();
    this.cameraDeviceId = cameraDeviceId;
    /** @type {import('livekit-client').Room|null} */
    this.room = null;
    this.allowed = { camera: false, screen: false };
    /** @type {'off'|'pending'|'on'} */
    this.cameraStatus = 'off';
    /** @type {'off'|'pending'|'on'} */
    this.screenStatus = 'off';
    /** 'user' (front) or 'environment' (back), for phones */
    this.facingMode = 'user';
    /** @type {import('./errors.js').AppError|null} */
    this.error = null;
    this.unbind = null;
  }

  /**
   * Starts following a joined room with the token's `publishSources`.
   * @param {import('livekit-client').Room} room
   * @param {string[]} publishSources
   */
  attach(room, publishSources) {
    this.detach();
    this.room = room;
    this.allowed = allowedVideo(publishSources);
    const sync = () => this.#sync();
    const events = [RoomEvent.LocalTrackPublished, RoomEvent.LocalTrackUnpublished, RoomEvent.TrackMuted, RoomEvent.TrackUnmuted];
    for (const name of events) room.on(name, sync);
    this.unbind = () => events.forEach((name) => room.off(name, sync));
    this.#sync();
  }

  /** Forgets the room (the call ended): controls go away. */
  detach() {
    this.unbind?.();
    this.unbind = null;
    this.room = null;
    this.allowed = { camera: false, screen: false };
    this.cameraStatus = 'off';
    this.screenStatus = 'off';
    this.error = null;
    this.#changed();
  }

  /** @returns {boolean} whether a camera or screen track is being sent (so the agent can see it) */
  get seeing() {
    return this.cameraStatus === 'on' || this.screenStatus === 'on';
  }

  /** @returns {MediaStreamTrack|null} what the preview shows: the screen share, else the camera */
  get previewTrack() {
    const local = this.room?.localParticipant;
    const publication = [Track.Source.ScreenShare, Track.Source.Camera]
      .map((source) => local?.getTrackPublication(source))
      .find((pub) => pub?.track && !pub.isMuted);
    return publication?.track?.mediaStreamTrack ?? null;
  }

  /** Turns the camera on or off. */
  async toggleCamera() {
    const room = this.room;
    if (!room || !this.allowed.camera || this.cameraStatus === 'pending') return;
    const enable = this.cameraStatus === 'off';
    await this.#run('cameraStatus', () => {
      const deviceId = this.cameraDeviceId();
      const capture = { resolution: VideoPresets.h720.resolution, ...(deviceId ? { deviceId } : { facingMode: this.facingMode }) };
      return room.localParticipant.setCameraEnabled(enable, capture, { simulcast: false, videoEncoding: CAMERA_ENCODING });
    });
  }

  /** Starts or stops sharing the screen (the browser asks which screen or window). */
  async toggleScreen() {
    const room = this.room;
    if (!room || !this.allowed.screen || this.screenStatus === 'pending') return;
    const enable = this.screenStatus === 'off';
    await this.#run('screenStatus', () => room.localParticipant.setScreenShareEnabled(enable, { audio: false }));
  }

  /** Phones: switches between the front and the back camera. */
  async flipCamera() {
    const track = this.room?.localParticipant.getTrackPublication(Track.Source.Camera)?.track;
    if (!track) return;
    const next = this.facingMode === 'user' ? 'environment' : 'user';
    try {
      await track.restartTrack({ facingMode: next, resolution: VideoPresets.h720.resolution });
      this.facingMode = next;
      this.error = null;
    } catch (error) {
      this.error = cameraError(error);
    }
    this.#changed();
  }

  /** Switches the running camera to the device chosen in the settings. */
  async switchCamera(deviceId) {
    if (!this.room || this.cameraStatus !== 'on') return;
    try {
      await this.room.switchActiveDevice('videoinput', deviceId || 'default');
    } catch (error) {
      this.error = cameraError(error);
      this.#changed();
    }
  }

  async #run(statusKey, action) {
    const room = this.room;
    const kind = statusKey === 'screenStatus' ? 'screen' : 'camera';
    this[statusKey] = 'pending';
    this.#changed();
    try {
      await action();
      if (this.room === room) this.error = null;
    } catch (error) {
      // Closing the screen picker without choosing is a choice, not a failure.
      const declined = kind === 'screen' && error?.name === 'NotAllowedError';
      if (this.room === room) this.error = declined ? null : cameraError(error, kind);
    } finally {
      this[statusKey] = 'off';
      if (this.room === room) this.#sync();
      else this.#changed();
    }
  }

  #sync() {
    const local = this.room?.localParticipant;
    const status = (source) => {
      const publication = local?.getTrackPublication(source);
      return publication?.track && !publication.isMuted ? 'on' : 'off';
    };
    if (this.cameraStatus !== 'pending') this.cameraStatus = status(Track.Source.Camera);
    if (this.screenStatus !== 'pending') this.screenStatus = status(Track.Source.ScreenShare);
    this.#changed();
  }

  #changed() {
    this.dispatchEvent(new CustomEvent('change'));
  }
}
