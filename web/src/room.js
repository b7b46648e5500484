/**
 * The LiveKit Room of one call: how it is made (echo cancellation, the chosen speaker), its
 * events routed to the session's handlers while it is the call's room, and the remote audio
 * played through <audio> elements in one container, on the chosen speaker.
 */
import { ConnectionState, Room, RoomEvent, Track } from 'livekit-client';
import { TOPIC_NOTICE } from './config.js';
import { speakerError } from './errors.js';
import { noticeFromData, noticeFromMetadata } from './notices.js';

/**
 * @param {string} speakerDeviceId the chosen speaker ('' for the default)
 * @returns {Room} a room for one call, not yet connected
 */
export function createRoom(speakerDeviceId) {
  return new Room({
    adaptiveStream: false,
    dynacast: false,
    disconnectOnPageLeave: true,
    audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    audioOutput: speakerDeviceId ? { deviceId: speakerDeviceId } : undefined,
  });
}

/**
 * @typedef {object} RoomHandlers
 * @property {() => void} reconnecting the media or signalling connection is being restored
 * @property {() => void} reconnected it is back
 * @property {() => void} connected the connection state became Connected (at the first join too)
 * @property {(reason: number|undefined) => void} disconnected the room is gone (DisconnectReason)
 * @property {(notice: any) => void} notice a server notice arrived (unchecked, see notices.js)
 * @property {(quality: string) => void} quality the caller's own connection quality
 * @property {() => void} playback whether audio may play changed (`room.canPlaybackAudio`)
 * @property {() => void} localTracks a local track was published, unpublished, muted or unmuted
 * @property {() => void} devices the media devices or the active ones changed
 */

/**
 * Routes `room`'s events to `on` while `isCurrent()`, and plays remote audio in `audioContainer`.
 *
 * Not RoomEvent.LocalAudioSilenceDetected: livekit-client checks 200 ms after publishing, so a
 * microphone that is merely quiet at first is reported for the whole call (the session watches
 * the level instead).
 * @param {Room} room
 * @param {object} deps
 * @param {() => boolean} deps.isCurrent whether the room is still the call's
 * @param {HTMLElement} deps.audioContainer where remote <audio> elements go
 * @param {RoomHandlers} deps.on
 */
export function bindRoom(room, { isCurrent, audioContainer, on }) {
  const mine = (fn) => (...args) => {
    if (isCurrent()) fn(...args);
  };
  const isLocal = (participant) => participant === room.localParticipant;
  room
    .on(RoomEvent.Reconnecting, mine(() => on.reconnecting()))
    .on(RoomEvent.SignalReconnecting, mine(() => on.reconnecting()))
    .on(RoomEvent.Reconnected, mine(() => on.reconnected()))
    .on(RoomEvent.ConnectionStateChanged, mine((s) => s === ConnectionState.Connected && on.connected()))
    .on(RoomEvent.Disconnected, mine((reason) => on.disconnected(reason)))
    .on(
      RoomEvent.DataReceived,
      mine((payload, _participant, _kind, topic) => topic === TOPIC_NOTICE && on.notice(noticeFromData(payload))),
    )
    // A closing notice also comes as the room's metadata, which travels with the signalling.
    .on(RoomEvent.RoomMetadataChanged, mine((metadata) => on.notice(noticeFromMetadata(metadata))))
    .on(RoomEvent.ConnectionQualityChanged, mine((quality, participant) => isLocal(participant) && on.quality(quality)))
    .on(RoomEvent.AudioPlaybackStatusChanged, mine(() => on.playback()))
    .on(RoomEvent.TrackSubscribed, mine((track, _pub, participant) => playRemoteAudio(track, participant, audioContainer)))
    .on(RoomEvent.TrackUnsubscribed, mine((track) => track.detach().forEach((el) => el.remove())))
    .on(RoomEvent.LocalTrackPublished, mine(() => on.localTracks()))
    .on(RoomEvent.LocalTrackUnpublished, mine(() => on.localTracks()))
    .on(RoomEvent.TrackMuted, mine((_pub, p) => isLocal(p) && on.localTracks()))
    .on(RoomEvent.TrackUnmuted, mine((_pub, p) => isLocal(p) && on.localTracks()))
    .on(RoomEvent.MediaDevicesChanged, mine(() => on.devices()))
    .on(RoomEvent.ActiveDeviceChanged, mine(() => on.devices()));
}

/** Plays a remote audio track through a new <audio> element tagged with its participant. */
function playRemoteAudio(track, participant, audioContainer) {
  if (track.kind !== Track.Kind.Audio) return;
  const element = track.attach();
  element.dataset.participant = participant.identity;
  audioContainer.append(element);
}

/**
 * Plays the call's audio through another speaker (where setSinkId is supported).
 * @param {Room} room
 * @param {string} deviceId '' for the default
 * @returns {Promise<import('./errors.js').AppError|null>} why it could not, or null
 */
export async function switchSpeaker(room, deviceId) {
  try {
    await room.switchActiveDevice('audiooutput', deviceId || 'default');
    return null;
  } catch (error) {
    return speakerError(error);
  }
}

/**
 * Removes every remote <audio> element (the call ended).
 * @param {HTMLElement} audioContainer
 */
export function removeRemoteAudio(audioContainer) {
  for (const el of [...audioContainer.children]) {
    el.srcObject = null;
    el.remove();
  }
}
