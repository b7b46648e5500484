import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fetchToken, resolveServerUrl, tokenHttpError } from '../src/token.js';

const location = { href: 'https://appliance.local/' };

function answer(status, body, contentType = 'application/json') {
  return async () =>
    new Response(typeof body === 'string' ? body : JSON.stringify(body), { status, headers: { 'Content-Type': contentType } });
}

test('201 answer gives the connection details', async () => {
  let sent;
  const fetchImpl = async (url, init) => {
    sent = { url, init };
    return answer(201, { server_url: 'wss://appliance.local', participant_token: 'jwt', room_name: 'r', participant_identity: 'u' })();
  };
  const got = await fetchToken({ endpoint: '/api/token', participantName: ' Alex ', fetchImpl, location });
  // A token server that does not name its sources allowed the microphone only.
  assert.deepEqual(got, { serverUrl: 'wss://appliance.local/', token: 'jwt', roomName: 'r', identity: 'u', publishSources: ['microphone'] });
  assert.equal(sent.url, '/api/token');
  assert.equal(sent.init.method, 'POST');
  assert.deepEqual(JSON.parse(sent.init.body), { participant_name: 'Alex' });
});

test('an empty name is not sent', async () => {
  let body;
  const fetchImpl = async (_url, init) => {
    body = JSON.parse(init.body);
    return answer(201, { server_url: 'ws://x', participant_token: 't' })();
  };
  await fetchToken({ endpoint: '/api/token', participantName: '  ', fetchImpl, location });
  assert.deepEqual(body, {});
});

test('network failure means server unreachable', async () => {
  const fetchImpl = async () => {
    throw new TypeError('Failed to fetch');
  };
  await assert.rejects(fetchToken({ endpoint: '/api/token', fetchImpl, location }), { code: 'server-unreachable' });
});

test('a refusal shows the server message', async () => {
  const fetchImpl = answer(403, { error: { code: 'forbidden', message: 'Sessions are disabled.' } });
  await assert.rejects(fetchToken({ endpoint: '/api/token', fetchImpl, location }), (error) => {
    assert.equal(error.code, 'token-refused');
    assert.equal(error.message, 'Sessions are disabled.');
    assert.equal(error.serverCode, 'forbidden');
    return true;
  });
});

test('a 5xx with a JSON message is a server error with that message', async () => {
  const fetchImpl = answer(500, { error: { code: 'internal', message: 'LiveKit credentials missing' } });
  await assert.rejects(fetchToken({ endpoint: '/api/token', fetchImpl, location }), {
    code: 'token-server-error',
    message: 'LiveKit credentials missing',
  });
});

test('a bare 502 from the front door means unreachable', () => {
  assert.equal(tokenHttpError(502, null).code, 'server-unreachable');
  assert.equal(tokenHttpError(404, null).code, 'server-unreachable');
  assert.equal(tokenHttpError(400, null).code, 'token-refused');
});

test('an answer without a token is invalid', async () => {
  const fetchImpl = answer(201, { server_url: 'ws://x' });
  await assert.rejects(fetchToken({ endpoint: '/api/token', fetchImpl, location }), { code: 'token-invalid' });
});

test('server URLs are made absolute websocket URLs', () => {
  assert.equal(resolveServerUrl('ws://10.0.0.2:7880', { href: 'http://a/' }), 'ws://10.0.0.2:7880/');
  assert.equal(resolveServerUrl('', { href: 'https://box.local/' }), 'wss://box.local/');
  assert.equal(resolveServerUrl('/', { href: 'http://box.local:8080/x' }), 'ws://box.local:8080/');
  assert.equal(resolveServerUrl('ws://box.local', { href: 'https://box.local/' }), 'wss://box.local/');
});

test('cost guards say the limit is reached, not that the server failed', () => {
  const spent = tokenHttpError(503, { error: { code: 'budget_exhausted', message: "today's call budget (USD 5) is spent; calls resume in 60 min" } });
  assert.equal(spent.code, 'limit-reached');
  assert.equal(spent.title, 'No more calls for now');
  assert.match(spent.message, /calls resume in 60 min/);
  const minutes = tokenHttpError(429, { error: { code: 'minutes_exhausted', message: 'this identity has used its 10 minutes of calls today; more in 300 min' } });
  assert.equal(minutes.code, 'limit-reached');
  assert.equal(minutes.title, 'You have used today\u2019s minutes');
});

test('503 at_capacity means every line is busy, with when to ask again', async () => {
  const fetchImpl = async () =>
    new Response(JSON.stringify({ error: { code: 'at_capacity', message: 'all 8 lines are busy; retry in 5 s' } }), {
      status: 503,
      headers: { 'Content-Type': 'application/json', 'Retry-After': '7' },
    });
  await assert.rejects(fetchToken({ endpoint: '/api/token', fetchImpl, location }), (error) => {
    assert.equal(error.code, 'lines-busy');
    assert.equal(error.title, 'All lines are busy');
    assert.equal(error.retryAfterS, 7);
    assert.equal(error.serverCode, 'at_capacity');
    return true;
  });
  assert.equal(tokenHttpError(503, { error: { code: 'at_capacity', message: 'x' } }).retryAfterS, 5);
  assert.equal(tokenHttpError(503, { error: { code: 'at_capacity', message: 'x' } }, '100000').retryAfterS, 300);
});

test('the sources the token may publish are passed on', async () => {
  const fetchImpl = answer(201, {
    server_url: 'ws://x', participant_token: 't', publish_sources: ['microphone', 'camera', 'screen_share'],
  });
  const got = await fetchToken({ endpoint: '/api/token', fetchImpl, location });
  assert.deepEqual(got.publishSources, ['microphone', 'camera', 'screen_share']);
});
