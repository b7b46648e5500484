/**
 * The page: element lookups and rendering of the session's state. Rendering
 * is idempotent: `render(session)` can be called after any change.
 */

/** Plain words for each agent state: [label, hint]. */
const AGENT_STATE_TEXT = {
  disconnected: ['Not connected', 'Press Connect to start a conversation.'],
  connecting: ['Connecting\u2026', 'Setting up the call.'],
  busy: ['All lines are busy', 'You will be connected as soon as a line is free.'],
  waiting: ['Waiting for the agent\u2026', 'The agent is joining the call.'],
  initializing: ['Agent is starting\u2026', 'Almost ready.'],
  idle: ['Ready', 'Speak whenever you like.'],
  listening: ['Listening', 'Speak whenever you like.'],
  thinking: ['Thinking\u2026', 'The agent is preparing an answer.'],
  speaking: ['Speaking', 'You can interrupt at any time.'],
  failed: ['Agent unavailable', 'See the message below.'],
  reconnecting: ['Reconnecting the assistant\u2026', 'One moment: the assistant is being brought back into the call.'],
};

const QUALITY_TEXT = {
  excellent: 'excellent',
  good: 'good',
  poor: 'poor',
  lost: 'lost',
  unknown: 'not connected',
};

/**
 * Looks up every element the client uses.
 * @param {Document} doc
 * @returns {Record<string, HTMLElement>}
 */
export function findElements(doc = document) {
  const ids = [
    'banner', 'banner-text', 'room-name', 'quality', 'visualizer', 'agent-state', 'state-hint', 'latency',
    'error', 'error-title', 'error-message', 'error-hint', 'error-dismiss', 'notice', 'start-audio',
    'connect-form', 'display-name', 'connect', 'connect-label', 'call-controls', 'mute', 'mute-label',
    'disconnect', 'disconnect-label', 'mic-error', 'settings', 'mic-select', 'mic-level', 'speaker-field', 'speaker-select',
    'transcript', 'chat-form', 'chat-input', 'chat-send', 'audio-sink',
    'camera', 'camera-label', 'screen', 'screen-label', 'video-preview', 'preview', 'seeing', 'seeing-text',
    'flip-camera', 'video-error', 'settings-title', 'camera-field', 'camera-select',
  ];
  const els = {};
  for (const id of ids) {
    const el = doc.getElementById(id);
    if (!el) throw new Error(`missing element #${id}`);
    els[camel(id)] = el;
  }
  return els;
}

/**
 * Shows the session's current state on the page.
 * @param {Record<string, HTMLElement>} els from findElements
 * @param {import('./session.js').VoiceSession} session
 */
export function render(els, session) {
  const { state, agentState, notice } = session;
  // One alert shows the session's problem, or else the microphone's; when both
  // exist, the microphone's goes to the smaller line under the controls.
  const error = session.error ?? session.micError;
  const secondary = session.error ? session.micError : null;
  const live = session.isLive;
  document.body.dataset.connection = state;

  // Agent state label.
  const shownState = session.busyUntil ? 'busy' : agentState === 'connecting' && state === 'connected' ? 'waiting' : agentState;
  const [label, hint] = AGENT_STATE_TEXT[shownState] ?? [agentState, ''];
  setText(els.agentState, label);
  els.agentState.dataset.state = session.busyUntil ? 'busy' : agentState;
  els.visualizer.dataset.state = agentState;
  // While reconnecting, the agent's last state is stale: say what is going on instead.
  setText(els.stateHint, state === 'reconnecting' ? 'Waiting for the connection to come back\u2026' : hint);

  // Reconnecting banner.
  els.banner.hidden = state !== 'reconnecting';
  if (state === 'reconnecting') setText(els.bannerText, 'Connection lost. Reconnecting\u2026');

  // Connect / disconnect / mute.
  els.connectForm.hidden = state !== 'disconnected';
  els.connect.disabled = state !== 'disconnected';
  els.displayName.disabled = state !== 'disconnected';
  els.connect.setAttribute('aria-busy', String(state === 'connecting'));
  setText(els.connectLabel, state === 'connecting' ? 'Connecting\u2026' : 'Connect');
  els.callControls.hidden = state === 'disconnected';
  setText(els.disconnectLabel, state === 'connecting' ? 'Cancel' : 'Disconnect');
  renderMute(els, session);

  // Chat.
  els.chatInput.disabled = !live;
  els.chatSend.disabled = !live;
  els.chatInput.placeholder = live ? 'Type a message\u2026' : 'Connect to type a message';

  // Room name and connection quality.
  els.roomName.hidden = !session.roomName || state === 'disconnected';
  // Room names are "room-<id>": show the id, keep the whole name in the tooltip.
  setText(els.roomName, session.roomName ? `Room ${session.roomName.replace(/^room-/, '')}` : '');
  els.roomName.title = session.roomName ? `Room name: ${session.roomName}` : '';
  const quality = state === 'reconnecting' ? 'lost' : live ? session.quality : 'unknown';
  els.quality.dataset.quality = quality;
  const qualityWord = quality === 'unknown' && live ? 'not measured yet' : (QUALITY_TEXT[quality] ?? quality);
  const qualityText = `Connection quality: ${qualityWord}`;
  els.quality.setAttribute('aria-label', qualityText);
  els.quality.title = qualityText;

  // Autoplay unblock.
  els.startAudio.hidden = !(live && !session.canPlaybackAudio);

  // Error and notice.
  els.error.hidden = !error;
  if (error) {
    els.error.dataset.errorCode = error.code;
    if (error.reason) els.error.dataset.reason = error.reason;
    else delete els.error.dataset.reason;
    setText(els.errorTitle, error.title);
    setText(els.errorMessage, error.message);
    setText(els.errorHint, error.hint);
    els.errorHint.hidden = !error.hint;
  } else {
    delete els.error.dataset.errorCode;
  }
  els.micError.hidden = !secondary;
  setText(els.micError, secondary ? `${secondary.message} ${secondary.hint}` : '');
  if (secondary) els.micError.dataset.errorCode = secondary.code;
  els.notice.hidden = !notice;
  setText(els.notice, notice);

  renderLatency(els, session);
}

/**
 * Shows the camera and screen-share controls (only those the session's token allows), the
 * local preview and the "the agent can see" indicator.
 * @param {Record<string, HTMLElement>} els from findElements
 * @param {import('./vision.js').VideoShare} video
 * @param {{canFlip: boolean}} options canFlip: the device has more than one camera
 */
export function renderVideo(els, video, { canFlip }) {
  const { allowed, cameraStatus, screenStatus, error } = video;
  els.camera.hidden = !allowed.camera;
  els.screen.hidden = !allowed.screen;
  for (const [button, label, status, [onText, offText]] of [
    [els.camera, els.cameraLabel, cameraStatus, ['Stop camera', 'Camera']],
    [els.screen, els.screenLabel, screenStatus, ['Stop sharing', 'Share screen']],
  ]) {
    button.disabled = status === 'pending';
    button.setAttribute('aria-pressed', String(status === 'on'));
    setText(label, status === 'on' ? onText : offText);
  }
  els.cameraField.hidden = !allowed.camera;
  setText(els.settingsTitle, allowed.camera ? 'Audio and camera settings' : 'Audio settings');

  const track = video.previewTrack;
  els.videoPreview.hidden = !track;
  const current = els.preview.srcObject?.getVideoTracks?.()[0] ?? null;
  if (track !== current) els.preview.srcObject = track ? new MediaStream([track]) : null;
  els.videoPreview.dataset.source = screenStatus === 'on' ? 'screen' : 'camera';
  els.seeing.hidden = !video.seeing;
  setText(els.seeingText, screenStatus === 'on' ? 'The agent can see your screen' : 'The agent can see your camera');
  els.flipCamera.hidden = !(cameraStatus === 'on' && screenStatus !== 'on' && canFlip);

  els.videoError.hidden = !error;
  setText(els.videoError, error ? `${error.message} ${error.hint}` : '');
  if (error) els.videoError.dataset.errorCode = error.code;
  else delete els.videoError.dataset.errorCode;
}

function renderMute(els, session) {
  const status = session.micStatus;
  els.mute.dataset.mic = status;
  els.mute.disabled = status === 'pending' || status === 'off';
  els.mute.setAttribute('aria-pressed', String(status === 'muted'));
  const [text, title] = {
    on: ['Mute', 'Mute your microphone'],
    muted: ['Unmute', 'Your microphone is muted: press to unmute'],
    pending: ['Mute', 'The microphone is starting'],
    unavailable: ['Retry mic', 'The microphone is not working: press to try again'],
    off: ['Mute', 'Not connected'],
  }[status];
  setText(els.muteLabel, text);
  els.mute.title = title;
}

function renderLatency(els, session) {
  const { last, median, count } = session.latency.summary();
  els.latency.hidden = count === 0;
  if (count === 0) {
    delete els.latency.dataset.lastMs;
    els.latency.dataset.count = '0';
    return;
  }
  els.latency.dataset.lastMs = String(last);
  els.latency.dataset.medianMs = String(Math.round(median));
  els.latency.dataset.count = String(count);
  const text = count > 1 ? `Response time ${seconds(last)} \u00b7 median ${seconds(median)} over ${count} turns` : `Response time ${seconds(last)}`;
  setText(els.latency, text);
  els.latency.title = 'From the end of your speech to the first sound of the answer';
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function camel(id) {
  return id.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}
