import assert from 'node:assert/strict';
import test from 'node:test';

import { callerOf, formatDuration, lengthOf } from '../src/admin.js';

test('durations read as m:ss or h:mm:ss', () => {
  assert.equal(formatDuration(0), '0:00');
  assert.equal(formatDuration(65.4), '1:05');
  assert.equal(formatDuration(3725), '1:02:05');
});

test('the caller is named by display name, phone number, then identity', () => {
  assert.equal(callerOf({ participant_name: 'Ada', phone_number: '+1555', participant_identity: 'u1' }), 'Ada');
  assert.equal(callerOf({ phone_number: '+15551234567', participant_identity: 'sip_+15551234567' }), '+15551234567');
  assert.equal(callerOf({ participant_identity: 'u1' }), 'u1');
  assert.equal(callerOf({}), 'unknown caller');
});

test('a live call lasts until now, an ended one until its end', () => {
  assert.equal(lengthOf({ started_at: 100, ended_at: null, open: true }, 160), 60);
  assert.equal(lengthOf({ started_at: 100, ended_at: 130, open: false }, 160), 30);
  assert.equal(lengthOf({ started_at: null }, 160), null);
});
