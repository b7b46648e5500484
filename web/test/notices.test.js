import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NoticeFilter, noticeFromData, noticeFromMetadata } from '../src/notices.js';

test('a notice is shown once though it comes twice (data message and room metadata)', () => {
  const filter = new NoticeFilter();
  const notice = { code: 'max_duration', message: 'The call reached its time limit.', closing: true };
  assert.deepEqual(filter.accept(notice, 1_000), notice);
  assert.equal(filter.accept({ ...notice }, 2_000), null);
  assert.deepEqual(filter.last, notice);
});

test('the same notice after five seconds, or another one, is shown again', () => {
  const filter = new NoticeFilter();
  const notice = { code: 'agent_reconnecting', message: 'One moment, reconnecting the assistant.' };
  assert.ok(filter.accept(notice, 0));
  assert.ok(filter.accept(notice, 5_000));
  assert.ok(filter.accept({ code: 'other', message: 'Something else.' }, 5_001));
});

test('a notice is normalised, and one without a message is none', () => {
  const filter = new NoticeFilter();
  assert.deepEqual(filter.accept({ message: 'Hi', closing: 'yes' }, 0), { code: '', message: 'Hi', closing: false });
  for (const bad of [null, undefined, {}, { message: '' }, { message: 42 }]) assert.equal(filter.accept(bad, 10_000), null);
  filter.reset();
  assert.equal(filter.last, null);
});

test('notices are read from a data message and from the room metadata', () => {
  const notice = { code: 'c', message: 'm', closing: true };
  assert.deepEqual(noticeFromData(new TextEncoder().encode(JSON.stringify(notice))), notice);
  assert.deepEqual(noticeFromMetadata(JSON.stringify({ 'voice.notice': notice, other: 1 })), notice);
  assert.equal(noticeFromData(new TextEncoder().encode('not json')), null);
  assert.equal(noticeFromMetadata(''), undefined);
  assert.equal(noticeFromMetadata('{"other": 1}'), undefined);
});
