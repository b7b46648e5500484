import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectionError, ConnectionErrorReason, DisconnectReason } from 'livekit-client';
import { readOptions } from '../src/config.js';
import { agentTimeoutError, connectError, describeDisconnect, microphoneError } from '../src/errors.js';

test('microphone failures are told apart', () => {
  const denied = Object.assign(new Error('Permission denied'), { name: 'NotAllowedError' });
  const missing = Object.assign(new Error('Requested device not found'), { name: 'NotFoundError' });
  const busy = Object.assign(new Error('Could not start audio source'), { name: 'NotReadableError' });
  assert.equal(microphoneError(denied).code, 'mic-permission-denied');
  assert.equal(microphoneError(missing).code, 'mic-not-found');
  assert.equal(microphoneError(busy).code, 'mic-in-use');
});

test('disconnect reasons have plain words', () => {
  assert.equal(describeDisconnect(DisconnectReason.CLIENT_INITIATED).byUser, true);
  const deleted = describeDisconnect(DisconnectReason.ROOM_DELETED);
  assert.equal(deleted.name, 'ROOM_DELETED');
  assert.equal(deleted.byUser, false);
  assert.match(describeDisconnect(undefined).text, /unexpectedly/);
});

test('LiveKit connection errors', () => {
  const refused = new ConnectionError('unauthorized', ConnectionErrorReason.NotAllowed, 401);
  assert.equal(connectError(refused).code, 'livekit-refused');
  const unreachable = new ConnectionError('could not establish signal connection', ConnectionErrorReason.ServerUnreachable);
  assert.equal(connectError(unreachable).code, 'livekit-unreachable');
});

test('agent timeout says what to do', () => {
  const error = agentTimeoutError({ joined: false, seconds: 20 });
  assert.equal(error.message, 'The agent did not join within 20 s.');
  assert.match(error.hint, /agent worker/);
});

test('query-string options', () => {
  assert.deepEqual(readOptions(''), { tokenEndpoint: '/api/token', preConnectBuffer: true, agentJoinTimeoutMs: 20000, debug: false });
  const custom = readOptions('?preconnect=0&join_timeout_ms=3000&debug=1');
  assert.equal(custom.preConnectBuffer, false);
  assert.equal(custom.agentJoinTimeoutMs, 3000);
  assert.equal(custom.debug, true);
});
