import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Chat } from '../src/chat.js';
import { LatencyTracker } from '../src/latency.js';
import { Transcript } from '../src/transcript.js';

/** A room whose local participant records what it sends (or fails to). */
function room({ fail = null } = {}) {
  const sent = [];
  return {
    sent,
    localParticipant: {
      async sendText(text, options) {
        if (fail) throw new Error(fail);
        sent.push([text, options.topic]);
      },
    },
  };
}

function chat() {
  const transcript = new Transcript();
  return { transcript, chat: new Chat({ transcript, latency: new LatencyTracker({ userThreshold: 0.02, agentThreshold: 0.01 }) }) };
}

test('a typed message goes to the agent on lk.chat and into the transcript', async () => {
  const { chat: c, transcript } = chat();
  const r = room();
  assert.deepEqual(await c.send(r, 'user-1', '  Hello there  '), { sent: true, error: null });
  assert.deepEqual(r.sent, [['Hello there', 'lk.chat']]);
  const [entry] = transcript.list();
  assert.equal(entry.id, 'chat-local-1');
  assert.deepEqual([entry.speaker, entry.kind, entry.identity, entry.text, entry.final], ['user', 'chat', 'user-1', 'Hello there', true]);
});

test('a message that cannot be sent is marked failed and says why', async () => {
  const { chat: c, transcript } = chat();
  const { sent, error } = await c.send(room({ fail: 'data channel closed' }), 'user-1', 'Hello');
  assert.equal(sent, false);
  assert.equal(error.code, 'chat-failed');
  assert.match(error.message, /data channel closed/);
  assert.equal(transcript.list()[0].failed, true);
});

test('an empty message is not sent; without a call the page says to connect first', async () => {
  const { chat: c, transcript } = chat();
  assert.deepEqual(await c.send(room(), 'user-1', '   '), { sent: false, error: null });
  const { sent, error } = await c.send(null, 'user-1', 'Hello');
  assert.equal(sent, false);
  assert.equal(error.code, 'not-connected');
  assert.equal(transcript.list().length, 0);
});

test('local entry ids never repeat across chat messages and notices', () => {
  const { chat: c } = chat();
  assert.deepEqual([c.nextId('chat-local'), c.nextId('notice'), c.nextId('chat-local')], ['chat-local-1', 'notice-2', 'chat-local-3']);
});
