import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allowedVideo } from '../src/vision.js';

const desktop = { getDisplayMedia: () => {} };
const phone = {}; // mobile browsers have no getDisplayMedia

test('a microphone-only token shows no video controls', () => {
  assert.deepEqual(allowedVideo(['microphone'], desktop), { camera: false, screen: false });
  assert.deepEqual(allowedVideo([], desktop), { camera: false, screen: false });
  assert.deepEqual(allowedVideo(undefined, desktop), { camera: false, screen: false });
});

test('each source the token allows turns on its control', () => {
  assert.deepEqual(allowedVideo(['microphone', 'camera'], desktop), { camera: true, screen: false });
  assert.deepEqual(allowedVideo(['microphone', 'screen_share'], desktop), { camera: false, screen: true });
  assert.deepEqual(allowedVideo(['microphone', 'camera', 'screen_share'], desktop), { camera: true, screen: true });
});

test('no screen sharing where the browser cannot (phones)', () => {
  assert.deepEqual(allowedVideo(['microphone', 'camera', 'screen_share'], phone), { camera: true, screen: false });
});
