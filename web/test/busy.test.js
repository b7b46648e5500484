import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TRYING_AGAIN_NOTICE, waitForALine } from '../src/busy.js';

test('all lines busy: the countdown runs out, then the page says it is trying again', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_000_000 });
  const shown = [];
  const waiting = waitForALine(2, new AbortController().signal, (notice, busyUntil) => shown.push([notice, busyUntil]));
  assert.deepEqual(shown, [['All lines are busy. Trying again in 2 s\u2026', 1_002_000]]);
  t.mock.timers.tick(1_000);
  t.mock.timers.tick(1_000);
  assert.equal(await waiting, true);
  assert.deepEqual(shown.at(-1), [TRYING_AGAIN_NOTICE, 0]);
  assert.ok(shown.some(([notice]) => notice === 'All lines are busy. Trying again in 1 s\u2026'));
});

test('all lines busy: Disconnect ends the wait and clears the line', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 0 });
  const abort = new AbortController();
  const shown = [];
  const waiting = waitForALine(30, abort.signal, (notice, busyUntil) => shown.push([notice, busyUntil]));
  abort.abort();
  assert.equal(await waiting, false);
  assert.deepEqual(shown.at(-1), ['', 0]);
  assert.equal(await waitForALine(30, abort.signal, () => assert.fail('nothing shown once cancelled')), false);
});
