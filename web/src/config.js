/**
 * Constants of the web client, in one place.
 *
 * A few can be overridden from the page's query string, for testing and
 * debugging only: `?preconnect=0` turns the microphone pre-connect buffer off,
 * `?join_timeout_ms=5000` shortens the "agent did not join" timeout,
 * `?debug=1` turns on livekit-client's debug logging.
 */

/** Same-origin token endpoint (the front door proxies `/api/*` to the token server). */
export const TOKEN_ENDPOINT = '/api/token';

/** How long the token request may take before we call the server unreachable. */
export const TOKEN_TIMEOUT_MS = 15_000;

/** How long we wait for the agent to join and become ready. */
export const AGENT_JOIN_TIMEOUT_MS = 20_000;

/**
 * After the agent leaves mid-call, how long we show "Reconnecting the assistant…" before we
 * call it gone: the appliance replaces a lost agent within seconds (a worker restart takes longer).
 */
export const AGENT_RETURN_GRACE_MS = 30_000;

/** Text-stream topics used by livekit-agents. */
export const TOPIC_TRANSCRIPTION = 'lk.transcription';
export const TOPIC_CHAT = 'lk.chat';

/**
 * The appliance's notices to callers: reliable data messages, UTF-8 JSON
 * `{code, message, closing}`, sent by the server when no agent can take the call
 * (then the room is closed: `closing` is true) or while a new agent is being brought in.
 */
export const TOPIC_NOTICE = 'voice.notice';
/** The notice's code while a new agent is brought into the call. */
export const NOTICE_AGENT_RECONNECTING = 'agent_reconnecting';

/** Participant attributes and stream attributes used by livekit-agents. */
export const ATTR_AGENT_STATE = 'lk.agent.state';
export const ATTR_PUBLISH_ON_BEHALF = 'lk.publish_on_behalf';
export const ATTR_SEGMENT_ID = 'lk.segment_id';
export const ATTR_TRANSCRIPTION_FINAL = 'lk.transcription_final';
export const ATTR_TRANSCRIBED_TRACK_ID = 'lk.transcribed_track_id';

/** localStorage keys. */
export const STORAGE_MIC = 'voice-client.microphone';
export const STORAGE_SPEAKER = 'voice-client.speaker';
export const STORAGE_CAMERA = 'voice-client.camera';
export const STORAGE_NAME = 'voice-client.display-name';

/** Audio level analysis: sampling period and voice-activity thresholds (RMS, 0..1). */
export const LEVEL_SAMPLE_MS = 20;
export const USER_SPEECH_THRESHOLD = 0.02;
export const AGENT_SPEECH_THRESHOLD = 0.01;

/** "Your microphone is sending silence": an open microphone that stayed below this RMS (-80 dBFS) this long. */
export const SILENT_MIC_LEVEL = 1e-4;
export const SILENT_MIC_AFTER_MS = 5_000;

/**
 * Reads the run-time options, applying query-string overrides.
 * @param {string} [search] location.search of the page
 * @returns {{preConnectBuffer: boolean, agentJoinTimeoutMs: number, tokenEndpoint: string, debug: boolean}}
 */
export function readOptions(search = '') {
  const params = new URLSearchParams(search);
  const timeout = Number.parseInt(params.get('join_timeout_ms') ?? '', 10);
  return {
    tokenEndpoint: TOKEN_ENDPOINT,
    preConnectBuffer: params.get('preconnect') !== '0',
    agentJoinTimeoutMs: Number.isFinite(timeout) && timeout > 0 ? timeout : AGENT_JOIN_TIMEOUT_MS,
    debug: params.get('debug') === '1',
  };
}
