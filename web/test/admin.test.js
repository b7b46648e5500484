import assert from 'node:assert/strict';
import test from 'node:test';

import {
  callerOf, dayCostSeries, formatCount, formatDuration, formatSeconds, formatUsd, hourSeries, lengthOf, monthRange,
  percentile, responseSeries,
} from '../src/admin-figures.js';

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

test('percentiles are nearest-rank; none of nothing', () => {
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([0.9, 0.3, 0.6], 50), 0.6);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  assert.equal(percentile([2], 95), 2);
});

test('the stats become chart series: turns by time, bars in the middle of their hour and day', () => {
  assert.deepEqual(responseSeries([{ at: 20, seconds: 1.5, room: 'b' }, { at: 10, seconds: 0.5, room: 'a' }]),
    [[10, 20], [0.5, 1.5]]);
  assert.deepEqual(hourSeries([{ start: 3600, calls: 2 }, { start: 7200, calls: 0 }]), [[5400, 9000], [2, 0]]);
  const [days, costs] = dayCostSeries([{ date: '2026-12-01', cost_usd: 0.25 }, { date: '2026-12-02', cost_usd: 1 }]);
  assert.deepEqual(days.map((d) => new Date(d * 1000).toISOString()), ['2026-12-01T12:00:00.000Z', '2026-12-02T12:00:00.000Z']);
  assert.deepEqual(costs, [0.25, 1]);
  assert.deepEqual(monthRange('2026-12').map((s) => new Date(s * 1000).toISOString()),
    ['2026-12-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z']);
});

test('money, counts and response times read short', () => {
  assert.equal(formatUsd(0), '$0.00');
  assert.equal(formatUsd(0.01234), '$0.0123');
  assert.equal(formatUsd(12.5), '$12.50');
  assert.equal(formatCount(950), '950');
  assert.equal(formatCount(2100), '2.10k');
  assert.equal(formatCount(120340), '120.3k');
  assert.equal(formatCount(3120340), '3.12M');
  assert.equal(formatSeconds(0.8125), '0.81 s');
  assert.equal(formatSeconds(null), '\u2014');
});
