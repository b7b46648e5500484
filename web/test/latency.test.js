import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyTracker } from '../src/latency.js';

/** Feeds `ms` of constant levels every 20 ms, from time t; returns the end time. */
function feed(tracker, t, ms, user, agent) {
  for (let end = t + ms; t < end; t += 20) {
    tracker.sampleUser(user, t);
    tracker.sampleAgent(agent, t);
  }
  return t;
}

test('measures from the end of user speech to the first agent audio', () => {
  const got = [];
  const tracker = new LatencyTracker({ onMeasurement: (m) => got.push(m) });
  tracker.agentAudioAvailable = true;
  let t = feed(tracker, 0, 500, 0, 0); // silence
  t = feed(tracker, t, 1000, 0.2, 0); // user speaks until t = 1480
  const lastLoud = t - 20;
  t = feed(tracker, t, 700, 0, 0); // agent thinks
  const agentStart = t;
  feed(tracker, t, 500, 0, 0.1); // agent answers
  assert.equal(got.length, 1);
  assert.equal(got[0].ms, agentStart - lastLoud);
  assert.equal(got[0].endSource, 'vad');
  assert.equal(got[0].startSource, 'audio');
});

test('a short noise is not speech, and the user talking again restarts the turn', () => {
  const got = [];
  const tracker = new LatencyTracker({ onMeasurement: (m) => got.push(m) });
  tracker.agentAudioAvailable = true;
  let t = feed(tracker, 0, 60, 0.2, 0); // click
  t = feed(tracker, t, 600, 0, 0);
  assert.equal(tracker.armedAt, null);
  t = feed(tracker, t, 400, 0.2, 0);
  t = feed(tracker, t, 400, 0, 0); // pause, turn ends
  t = feed(tracker, t, 400, 0.2, 0); // ...but the user goes on
  const end = t - 20;
  t = feed(tracker, t, 500, 0, 0);
  feed(tracker, t, 200, 0, 0.1);
  assert.equal(got.length, 1);
  assert.equal(got[0].userEndAt, end);
});

test('without agent audio the speaking state is used; a late final transcript does not re-arm', () => {
  const got = [];
  const tracker = new LatencyTracker({ onMeasurement: (m) => got.push(m) });
  let t = feed(tracker, 0, 400, 0.2, 0);
  t = feed(tracker, t, 600, 0, 0);
  tracker.agentState('speaking', t);
  assert.equal(got.length, 1);
  assert.equal(got[0].startSource, 'state');
  tracker.userTranscript(true, t + 100);
  tracker.agentState('speaking', t + 900);
  assert.equal(got.length, 1);
});

test('typed messages and final transcripts can end a turn', () => {
  const got = [];
  const tracker = new LatencyTracker({ onMeasurement: (m) => got.push(m) });
  tracker.agentAudioAvailable = true;
  tracker.userTyped(1000);
  tracker.sampleAgent(0.2, 1800);
  tracker.sampleAgent(0, 2500);
  tracker.userTranscript(true, 3000); // microphone never heard speech
  tracker.sampleAgent(0.2, 3400);
  assert.deepEqual(got.map((m) => [m.ms, m.endSource]), [[800, 'chat'], [400, 'transcript']]);
  assert.deepEqual(tracker.summary(), { last: 400, median: 600, count: 2 });
});
