import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Transcript, transcribedSpeaker } from '../src/transcript.js';

/** A stand-in for livekit-client's TextStreamReader. */
function stream(id, attributes, chunks, trailer = {}) {
  const info = { id, attributes: { ...attributes } };
  return {
    info,
    async *[Symbol.asyncIterator]() {
      for (const chunk of chunks) yield chunk;
      info.attributes = { ...info.attributes, ...trailer };
    },
  };
}

test('agent speech is streamed into one entry and marked final from the trailer', async () => {
  const t = new Transcript();
  const seen = [];
  const reader = stream('s1', { 'lk.segment_id': 'SG_1', 'lk.transcription_final': 'false' }, ['Hello', ' there', '!'], {
    'lk.transcription_final': 'true',
  });
  await t.readTranscriptionStream(reader, { speaker: 'agent', identity: 'agent', onUpdate: (e) => seen.push([e.text, e.final]) });
  assert.deepEqual(seen, [['Hello', false], ['Hello there', false], ['Hello there!', false], ['Hello there!', true]]);
  const [entry] = t.list();
  assert.equal(entry.id, 'SG_1');
  assert.equal(entry.speaker, 'agent');
});

test('user interim updates replace the text of the same segment', async () => {
  const t = new Transcript();
  const seg = { 'lk.segment_id': 'SG_u' };
  await t.readTranscriptionStream(stream('a', { ...seg, 'lk.transcription_final': 'false' }, ['what is']), { speaker: 'user', identity: 'me' });
  assert.equal(t.list()[0].final, false);
  await t.readTranscriptionStream(stream('b', { ...seg, 'lk.transcription_final': 'false' }, ['what is the']), { speaker: 'user', identity: 'me' });
  await t.readTranscriptionStream(stream('c', { ...seg, 'lk.transcription_final': 'true' }, ['What is the time?']), { speaker: 'user', identity: 'me' });
  const list = t.list();
  assert.equal(list.length, 1);
  assert.equal(list[0].text, 'What is the time?');
  assert.equal(list[0].final, true);
});

test('entries are ordered by their place, not their arrival', () => {
  const t = new Transcript();
  t.upsert('agent-1', { speaker: 'agent', at: 200 });
  t.upsert('user-1', { speaker: 'user', at: 100 });
  assert.deepEqual(t.list().map((e) => e.id), ['user-1', 'agent-1']);
});

test('the transcribed speaker is found by identity or track', () => {
  const local = { identity: 'me', trackSids: ['TR_mic'] };
  assert.equal(transcribedSpeaker({ attributes: {} }, 'me', local), 'user');
  assert.equal(transcribedSpeaker({ attributes: { 'lk.transcribed_track_id': 'TR_mic' } }, 'agent', local), 'user');
  assert.equal(transcribedSpeaker({ attributes: { 'lk.transcribed_track_id': 'TR_agent' } }, 'agent', local), 'agent');
});
