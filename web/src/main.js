/**
 * Entry point: builds the pieces, wires the page's controls to the session,
 * and exposes the read-only `window.__voiceClient` for tests and debugging.
 *
 *   microphone -> LiveKit (SFU) -> agent -> Gemini Live -> agent -> LiveKit -> speaker
 *                 transcripts and chat travel beside the audio as text streams.
 */
import { setLogLevel } from 'livekit-client';
import { readOptions, STORAGE_CAMERA, STORAGE_MIC, STORAGE_NAME, STORAGE_SPEAKER } from './config.js';
import { DeviceSelect, supportsOutputSelection } from './devices.js';
import { VoiceSession } from './session.js';
import { load, store } from './storage.js';
import { Transcript, TranscriptView } from './transcript.js';
import { findElements, render, renderVideo } from './ui.js';
import { VideoShare } from './vision.js';
import { Visualizer } from './visualizer.js';

const els = findElements(document);
const options = readOptions(location.search);
setLogLevel(options.debug ? 'debug' : 'warn');

const microphones = new DeviceSelect(els.micSelect, {
  kind: 'audioinput',
  storageKey: STORAGE_MIC,
  noun: 'Microphone',
  onChange: (id) => session.switchMicrophone(id),
});
const speakers = new DeviceSelect(els.speakerSelect, {
  kind: 'audiooutput',
  storageKey: STORAGE_SPEAKER,
  noun: 'Speaker',
  onChange: (id) => session.switchSpeaker(id),
});
const cameras = new DeviceSelect(els.cameraSelect, {
  kind: 'videoinput',
  storageKey: STORAGE_CAMERA,
  noun: 'Camera',
  onChange: (id) => video.switchCamera(id),
});
const canPickSpeaker = supportsOutputSelection();
els.speakerField.hidden = !canPickSpeaker;

const transcript = new Transcript();
new TranscriptView(els.transcript, transcript, { agentName: 'Agent', userName: () => 'You' });

const session = new VoiceSession({
  options,
  transcript,
  audioContainer: els.audioSink,
  micDeviceId: () => microphones.deviceId,
  speakerDeviceId: () => (canPickSpeaker ? speakers.deviceId : ''),
});
const visualizer = new Visualizer(els.visualizer, els.micLevel, session);
// Camera and screen share, when the token allows them (the operator's VIDEO_INPUT).
const video = new VideoShare({ cameraDeviceId: () => cameras.deviceId });
const showVideo = () => renderVideo(els, video, { canFlip: cameras.devices.length > 1 });
video.addEventListener('change', showVideo);

// --- controls ---------------------------------------------------------------

els.displayName.value = load(STORAGE_NAME);
els.settings.open = matchMedia('(min-width: 900px)').matches;

els.connectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const name = els.displayName.value.trim();
  store(STORAGE_NAME, name);
  session.connect({ participantName: name });
});
els.disconnect.addEventListener('click', () => session.disconnect());
els.mute.addEventListener('click', () => {
  const status = session.micStatus;
  session.setMicrophoneEnabled(status !== 'on');
});
els.startAudio.addEventListener('click', () => session.startAudio());
els.camera.addEventListener('click', async () => {
  await video.toggleCamera();
  if (video.cameraStatus === 'on') refreshDevices(); // camera labels are readable now
});
els.screen.addEventListener('click', () => video.toggleScreen());
els.flipCamera.addEventListener('click', () => video.flipCamera());
els.errorDismiss.addEventListener('click', () => {
  if (session.error) session.error = null;
  else session.micError = null;
  render(els, session);
});
els.chatForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = els.chatInput.value;
  if (!text.trim()) return;
  els.chatInput.value = '';
  const sent = await session.sendChat(text);
  if (!sent && !els.chatInput.value) els.chatInput.value = text;
  els.chatInput.focus();
});

// --- state -> page ------------------------------------------------------------

let previousState = session.state;
session.addEventListener('change', (event) => {
  const { what } = event.detail;
  if (what === 'devices') refreshDevices();
  render(els, session); // first: focus() below needs the controls enabled
  if (session.state !== previousState) {
    if (session.state === 'connected' && previousState === 'connecting') {
      video.attach(session.room, session.publishSources);
      refreshDevices();
    }
    if (session.state === 'disconnected') video.detach();
    if (session.state === 'disconnected') visualizer.stop();
    else visualizer.start();
    if (session.state === 'connected' && previousState === 'connecting') els.chatInput.focus({ preventScroll: true });
    if (session.state === 'disconnected' && previousState !== 'disconnected') els.connect.focus({ preventScroll: true });
    previousState = session.state;
  }
});

/** Re-reads the device lists and marks the devices in use. */
async function refreshDevices() {
  await Promise.all([
    microphones.refresh(),
    canPickSpeaker ? speakers.refresh() : null,
    video.allowed.camera ? cameras.refresh() : null,
  ]);
  showVideo();
  const room = session.room;
  if (room) {
    microphones.showActive(room.getActiveDevice('audioinput'));
    if (video.cameraStatus === 'on') cameras.showActive(room.getActiveDevice('videoinput'));
    if (canPickSpeaker) speakers.showActive(room.getActiveDevice('audiooutput'));
  }
}

navigator.mediaDevices?.addEventListener?.('devicechange', () => refreshDevices());
refreshDevices();
render(els, session);

// --- read-only debug/test surface ----------------------------------------------

const copy = (list) => list.map((item) => ({ ...item }));
window.__voiceClient = Object.freeze({
  /** connection state: disconnected, connecting, connected, reconnecting */
  get state() {
    return session.state;
  },
  /** agent state: disconnected, connecting, initializing, idle, listening, thinking, speaking, failed */
  get agentState() {
    return session.agentState;
  },
  /** agent states of the current session in order, each {state, at: epoch ms} */
  get stateHistory() {
    return copy(session.stateHistory);
  },
  /** connection states of the current session in order, each {state, at: epoch ms} */
  get connectionHistory() {
    return copy(session.connectionHistory);
  },
  /** transcript entries in display order: {id, speaker, kind, identity, text, final, receivedAt, updatedAt} */
  get transcript() {
    return transcript.list();
  },
  /** per-turn latencies, each {ms, userEndAt, agentStartAt, endSource, startSource} (performance.now() times) */
  get latencies() {
    return copy(session.latency.measurements);
  },
  /** the error shown in [data-testid=error]: {code, title, message, hint, reason?} or null */
  get error() {
    const error = session.error ?? session.micError;
    return error ? { ...error.toJSON(), reason: error.reason } : null;
  },
  /** the microphone's problem while it has one (also shown as error when nothing else is wrong) */
  get micError() {
    return session.micError ? session.micError.toJSON() : null;
  },
  get notice() {
    return session.notice;
  },
  /** while every line is busy: when the page asks again (epoch ms); 0 otherwise */
  get busyUntil() {
    return session.busyUntil;
  },
  /** camera and screen share: {allowed: {camera, screen}, camera, screen (off|pending|on), seeing, error} */
  get video() {
    return {
      allowed: { ...video.allowed },
      camera: video.cameraStatus,
      screen: video.screenStatus,
      seeing: video.seeing,
      error: video.error ? video.error.toJSON() : null,
    };
  },
  /** the server's last notice on topic voice.notice, {code, message, closing}, or null */
  get serverNotice() {
    return session.lastNotice ? { ...session.lastNotice } : null;
  },
  /** microphone: off, pending, on, muted, unavailable */
  get mic() {
    return session.micStatus;
  },
  get quality() {
    return session.quality;
  },
  get canPlaybackAudio() {
    return session.canPlaybackAudio;
  },
  get roomName() {
    return session.roomName;
  },
  get identity() {
    return session.identity;
  },
  /** {reason, byUser} of the last disconnect, or null */
  get lastDisconnect() {
    return session.lastDisconnect ? { ...session.lastDisconnect } : null;
  },
  /** the livekit-client Room of the open session, or null (for inspection only) */
  get room() {
    return session.room;
  },
  get options() {
    return { ...options };
  },
  /** @returns {number} RMS level 0..1 of the agent's received audio (WebAudio analyser) */
  agentAudioLevel: () => session.agentAudioLevel(),
  /** @returns {number} RMS level 0..1 of the local microphone */
  micLevel: () => session.micLevel(),
});
