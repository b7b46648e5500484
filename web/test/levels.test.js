import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SilentMicWatch } from '../src/levels.js';

/** Feeds `ms` of one level every 20 ms from time t; returns [end time, last answer]. */
function feed(watch, t, ms, level, open = true) {
  let silent = false;
  for (const end = t + ms; t < end; t += 20) silent = watch.sample(open, level, t);
  return [t, silent];
}

test('an open microphone that never made a sound is reported after the delay', () => {
  const watch = new SilentMicWatch({ afterMs: 5000 });
  let [t, silent] = feed(watch, 0, 4900, 0);
  assert.equal(silent, false);
  [t, silent] = feed(watch, t, 200, 0);
  assert.equal(silent, true);
});

test('one sound clears it, and long silences afterwards do not bring it back', () => {
  const watch = new SilentMicWatch({ afterMs: 5000 });
  let [t, silent] = feed(watch, 0, 6000, 0);
  assert.equal(silent, true);
  [t, silent] = feed(watch, t, 100, 0.05); // speech
  assert.equal(silent, false);
  [t, silent] = feed(watch, t, 60_000, 0); // the rest of a quiet call
  assert.equal(silent, false);
});

test('speech before the delay means it is never reported', () => {
  const watch = new SilentMicWatch({ afterMs: 5000 });
  let [t] = feed(watch, 0, 3000, 0);
  [t] = feed(watch, t, 1500, 0.1);
  const [, silent] = feed(watch, t, 20_000, 0);
  assert.equal(silent, false);
});

test('muting pauses the clock, and a muted microphone is never reported', () => {
  const watch = new SilentMicWatch({ afterMs: 5000 });
  let [t, silent] = feed(watch, 0, 4000, 0);
  [t, silent] = feed(watch, t, 10_000, 0, false);
  assert.equal(silent, false);
  [t, silent] = feed(watch, t, 4000, 0); // 4 s open again: the clock started over
  assert.equal(silent, false);
  [, silent] = feed(watch, t, 1100, 0);
  assert.equal(silent, true);
});

test('reset (another microphone) starts over', () => {
  const watch = new SilentMicWatch({ afterMs: 5000 });
  let [t] = feed(watch, 0, 100, 0.1);
  watch.reset();
  const [, silent] = feed(watch, t, 5100, 0);
  assert.equal(silent, true);
});

test('noise below -80 dBFS is silence; a quiet room is not', () => {
  const watch = new SilentMicWatch({ afterMs: 1000 });
  let [t, silent] = feed(watch, 0, 1100, 1e-6);
  assert.equal(silent, true);
  [, silent] = feed(watch, t, 20, 0.0005); // about -66 dBFS: room noise
  assert.equal(silent, false);
});
