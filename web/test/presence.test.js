import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectionState, ParticipantKind, RoomEvent } from 'livekit-client';
import { AgentPresence } from '../src/presence.js';

/** A connected room that holds handlers, so a test can play participants joining and leaving. */
function room() {
  const handlers = new Map();
  return {
    state: ConnectionState.Connected,
    remoteParticipants: new Map(),
    on(event, handler) {
      handlers.set(event, handler);
    },
    off(event) {
      handlers.delete(event);
    },
    emit(event, ...args) {
      handlers.get(event)?.(...args);
    },
  };
}

const agent = (identity, state) => ({ identity, kind: ParticipantKind.AGENT, attributes: { 'lk.agent.state': state } });

function follow(r) {
  const presence = new AgentPresence({ returnGraceMs: 30_000 });
  const events = [];
  presence.addEventListener('state', (e) => events.push(['state', e.detail.state, e.detail.tracked]));
  presence.addEventListener('error', (e) => events.push(['error', e.detail.error.code]));
  presence.follow(r, { joinTimeoutMs: 20_000 });
  return { presence, events };
}

test('an agent that leaves is awaited for the grace period, then it is gone', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const r = room();
  const { presence, events } = follow(r);
  r.emit(RoomEvent.ParticipantConnected, agent('agent-1', 'listening'));
  r.emit(RoomEvent.ParticipantDisconnected, agent('agent-1', 'listening'));
  assert.deepEqual(events.slice(-1), [['state', 'reconnecting', false]], 'reconnecting, not disconnected, meanwhile');
  t.mock.timers.tick(29_999);
  assert.equal(events.some(([kind]) => kind === 'error'), false);
  t.mock.timers.tick(1);
  assert.deepEqual(events.slice(-2), [['state', 'disconnected', false], ['error', 'agent-left']]);
  presence.stop();
});

test('a new agent ready within the grace period takes over', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const r = room();
  const { presence, events } = follow(r);
  r.emit(RoomEvent.ParticipantConnected, agent('agent-1', 'speaking'));
  r.emit(RoomEvent.ParticipantDisconnected, agent('agent-1', 'speaking'));
  r.emit(RoomEvent.ParticipantConnected, agent('agent-2', 'initializing'));
  assert.deepEqual(events.at(-1), ['state', 'reconnecting', false], 'not ready yet: still awaited');
  r.emit(RoomEvent.ParticipantAttributesChanged, {}, agent('agent-2', 'listening'));
  assert.deepEqual(events.at(-1), ['state', 'listening', true]);
  t.mock.timers.tick(60_000);
  assert.equal(events.some(([kind]) => kind === 'error'), false);
  presence.stop();
});

test('no agent within the join timeout is an agent-timeout error', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { presence, events } = follow(room());
  assert.deepEqual(events, [['state', 'connecting', true]]);
  t.mock.timers.tick(20_000);
  assert.deepEqual(events.slice(-2), [['state', 'failed', true], ['error', 'agent-timeout']]);
  presence.stop();
});
