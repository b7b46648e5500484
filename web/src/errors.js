/**
 * Every failure the user can see, turned into plain words: what happened and
 * what to do next. Nothing here touches the DOM.
 */
import {
  ConnectionError,
  ConnectionErrorReason,
  DisconnectReason,
  MediaDeviceFailure,
} from 'livekit-client';

/** An error meant for the user: a stable `code`, a short title, the message and a hint. */
export class AppError extends Error {
  /**
   * @param {string} code stable identifier, e.g. "server-unreachable" (shown as data-error-code)
   * @param {string} title short headline
   * @param {string} message what happened, in plain words
   * @param {string} [hint] what to do next
   */
  constructor(code, title, message, hint = '') {
    super(message);
    this.name = 'AppError';
    this.code = code;
    this.title = title;
    this.hint = hint;
  }

  /** @returns {{code: string, title: string, message: string, hint: string}} */
  toJSON() {
    return { code: this.code, title: this.title, message: this.message, hint: this.hint };
  }
}

/**
 * Explains a failure to open the microphone.
 * @param {unknown} error the error thrown by getUserMedia / setMicrophoneEnabled
 * @returns {AppError}
 */
export function microphoneError(error) {
  const failure = MediaDeviceFailure.getFailure(error);
  switch (failure) {
    case MediaDeviceFailure.PermissionDenied:
      return new AppError(
        'mic-permission-denied',
        'Microphone blocked',
        'The browser did not allow this page to use the microphone.',
        'Allow microphone access in the browser\u2019s site settings (the icon left of the address bar), then press \u201cRetry mic\u201d. You can still type messages.',
      );
    case MediaDeviceFailure.NotFound:
      return new AppError(
        'mic-not-found',
        'No microphone found',
        'This device has no microphone the browser can use.',
        'Plug in or enable a microphone, pick it under Audio settings, then press \u201cRetry mic\u201d. You can still type messages.',
      );
    case MediaDeviceFailure.DeviceInUse:
      return new AppError(
        'mic-in-use',
        'Microphone busy',
        'The microphone is in use by another application or could not be started.',
        'Close other apps that use the microphone, or pick another one under Audio settings.',
      );
    default:
      return new AppError(
        'mic-error',
        'Microphone problem',
        `The microphone could not be started${detail(error)}.`,
        'Pick another microphone under Audio settings, or reload the page.',
      );
  }
}

/**
 * Explains a failure to start the camera or share the screen.
 * @param {unknown} error the error thrown by setCameraEnabled / setScreenShareEnabled
 * @param {'camera'|'screen'} [kind]
 * @returns {AppError}
 */
export function cameraError(error, kind = 'camera') {
  const failure = MediaDeviceFailure.getFailure(error);
  if (kind === 'screen') {
    return new AppError(
      'screen-error',
      'Screen sharing problem',
      `The screen could not be shared${detail(error)}.`,
      'Try again, and pick a screen, window or tab to share.',
    );
  }
  switch (failure) {
    case MediaDeviceFailure.PermissionDenied:
      return new AppError(
        'camera-permission-denied',
        'Camera blocked',
        'The browser did not allow this page to use the camera.',
        'Allow camera access in the browser\u2019s site settings (the icon left of the address bar), then press \u201cCamera\u201d again.',
      );
    case MediaDeviceFailure.NotFound:
      return new AppError('camera-not-found', 'No camera found', 'This device has no camera the browser can use.', 'Plug in or enable a camera, then try again.');
    case MediaDeviceFailure.DeviceInUse:
      return new AppError(
        'camera-in-use',
        'Camera busy',
        'The camera is in use by another application or could not be started.',
        'Close other apps that use the camera, or pick another one under Settings.',
      );
    default:
      return new AppError('camera-error', 'Camera problem', `The camera could not be started${detail(error)}.`, 'Pick another camera under Settings, or reload the page.');
  }
}

/**
 * Explains a failure of `room.connect()` (the LiveKit signalling or media connection).
 * @param {unknown} error
 * @returns {AppError}
 */
export function connectError(error) {
  if (error instanceof ConnectionError) {
    switch (error.reason) {
      case ConnectionErrorReason.NotAllowed:
        return new AppError(
          'livekit-refused',
          'Media server refused the session',
          `The media server did not accept the access token${error.status ? ` (HTTP ${error.status})` : ''}.`,
          'The appliance\u2019s API key and secret may not match between the token server and LiveKit. Ask the administrator to check the configuration.',
        );
      case ConnectionErrorReason.Cancelled:
        return new AppError('cancelled', 'Cancelled', 'The connection attempt was cancelled.');
      case ConnectionErrorReason.Timeout:
      case ConnectionErrorReason.ServerUnreachable:
      case ConnectionErrorReason.WebSocket:
      default:
        return new AppError(
          'livekit-unreachable',
          'Media server unreachable',
          `Could not connect to the media server${detail(error)}.`,
          'Check that the appliance is running and that UDP media ports are not blocked by a firewall, then try again.',
        );
    }
  }
  return new AppError(
    'connect-failed',
    'Could not connect',
    `The session could not be started${detail(error)}.`,
    'Try again. If it keeps failing, check the appliance\u2019s logs.',
  );
}

const REASON_TEXT = new Map([
  [DisconnectReason.CLIENT_INITIATED, 'You ended the session.'],
  [DisconnectReason.DUPLICATE_IDENTITY, 'The same identity joined from another tab or device.'],
  [DisconnectReason.SERVER_SHUTDOWN, 'The media server is shutting down.'],
  [DisconnectReason.PARTICIPANT_REMOVED, 'You were removed from the session.'],
  [DisconnectReason.ROOM_DELETED, 'The conversation was closed by the server (the agent may have ended it).'],
  [DisconnectReason.STATE_MISMATCH, 'The media server lost track of this session.'],
  [DisconnectReason.JOIN_FAILURE, 'Joining the session failed.'],
  [DisconnectReason.MIGRATION, 'The session moved to another server.'],
  [DisconnectReason.SIGNAL_CLOSE, 'The connection to the media server was lost and could not be restored.'],
  [DisconnectReason.ROOM_CLOSED, 'The conversation was closed by the server.'],
  [DisconnectReason.CONNECTION_TIMEOUT, 'The connection to the media server timed out.'],
  [DisconnectReason.MEDIA_FAILURE, 'Audio could not be exchanged with the media server (a firewall may block UDP).'],
  [DisconnectReason.AGENT_ERROR, 'The agent hit an error and ended the session.'],
]);

/**
 * Describes why the room was disconnected.
 * @param {number|undefined} reason a DisconnectReason value
 * @returns {{name: string, text: string, byUser: boolean}}
 */
export function describeDisconnect(reason) {
  const name = reason === undefined ? 'UNKNOWN_REASON' : DisconnectReason[reason] ?? String(reason);
  return {
    name,
    text: REASON_TEXT.get(reason) ?? 'The connection ended unexpectedly.',
    byUser: reason === DisconnectReason.CLIENT_INITIATED,
  };
}

/**
 * Turns an unexpected disconnect into an AppError.
 * @param {number|undefined} reason a DisconnectReason value
 * @returns {AppError}
 */
export function disconnectError(reason) {
  const { name, text } = describeDisconnect(reason);
  const error = new AppError('disconnected', 'Disconnected', text, 'Press Connect to start a new conversation.');
  error.reason = name;
  return error;
}

/**
 * The agent never joined (or never became ready) within the timeout.
 * @param {{joined: boolean, seconds: number}} info
 * @returns {AppError}
 */
export function agentTimeoutError({ joined, seconds }) {
  return joined
    ? new AppError(
        'agent-timeout',
        'The agent is not ready',
        `The agent joined but did not become ready within ${seconds} s.`,
        'It may still be starting. Wait a little, or press Disconnect and then Connect to try again. If it keeps happening, check the agent worker\u2019s logs.',
      )
    : new AppError(
        'agent-timeout',
        'The agent did not join',
        `The agent did not join within ${seconds} s.`,
        'Check that the agent worker is running and connected to LiveKit (see its logs), then press Disconnect and Connect again. You can keep waiting: the conversation starts if the agent joins late.',
      );
}

/** @returns {AppError} the agent left mid-call and no other took over within the grace period */
export function agentLeftError() {
  return new AppError('agent-left', 'The agent left', 'The agent left the conversation and no other took over.', 'Press Disconnect, then Connect to start a new conversation.');
}

/**
 * @param {unknown} error why the browser could not switch the speaker
 * @returns {AppError}
 */
export function speakerError(error) {
  return new AppError('speaker-error', 'Speaker not available', `Could not switch the speaker: ${error?.message ?? error}.`, 'Pick another speaker.');
}

/**
 * @param {unknown} error why a typed message could not be sent (null: there is no call)
 * @returns {AppError}
 */
export function chatError(error) {
  if (error === null) return new AppError('not-connected', 'Not connected', 'Connect first to send a message.');
  return new AppError('chat-failed', 'Message not sent', `The message could not be sent: ${error?.message ?? error}.`, 'Check the connection and try again.');
}

/**
 * The server ended the call and said why (a closing notice on `voice.notice`).
 * @param {{code: string, message: string}} notice
 * @returns {AppError}
 */
export function callEndedError(notice) {
  const error = new AppError('call-ended', 'Call ended', notice.message, 'Press Connect to try again.');
  error.reason = notice.code;
  return error;
}

function detail(error) {
  const text = error instanceof Error ? error.message : typeof error === 'string' ? error : '';
  return text ? `: ${text.replace(/\s+/g, ' ').slice(0, 200)}` : '';
}
