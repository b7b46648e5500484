// The operator console (admin.html): read-only views over the call-records API.
//
// Wire shapes (token-server/token_server/openapi.yaml): GET /api/calls?limit=N ->
// {"calls": [{room, participant_identity, participant_name, started_at, ended_at, end_reason,
// open, jobs, phone_number?, direction?}]}; GET /api/calls/<room> -> the same plus turns
// [{at, role, text, interrupted}], tool_calls [{at, name, arguments, output, is_error}],
// usage {input_tokens, output_tokens, total_tokens, responses}, events [{at, event, ...}].
// Both need "Authorization: Bearer <key>" with one of RECORDS_API_KEYS. The key stays in
// this tab (sessionStorage). Everything from the API is written with textContent.

const CALLS_URL = '/api/calls';
const LIST_LIMIT = 50;
const REFRESH_MS = 5000;
const KEY_ITEM = 'voice-appliance.operator-key';

const $ = (id) => document.getElementById(id);

/** Seconds as "m:ss" (or "h:mm:ss"). */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

/** Who called: the display name, the phone number, or the identity. */
export function callerOf(call) {
  return call.participant_name || call.phone_number || call.participant_identity || 'unknown caller';
}

/** A call's length so far (open) or in all, in seconds; null before it started. */
export function lengthOf(call, nowS) {
  if (!call.started_at) return null;
  return (call.ended_at ?? (call.open ? nowS : call.started_at)) - call.started_at;
}

function time(at) {
  return at ? new Date(at * 1000).toLocaleString() : '';
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.append(td);
  return td;
}

class ApiRefused extends Error {}

async function getJson(url, key) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body?.error?.message || `HTTP ${response.status}`;
    throw new (response.status === 401 || response.status === 403 ? ApiRefused : Error)(message);
  }
  return body;
}

function renderCalls(calls, nowS, onPick) {
  const live = calls.filter((c) => c.open);
  $('live-count').textContent = `(${live.length})`;
  const liveRows = live.map((call) => {
    const row = document.createElement('tr');
    cell(row, callerOf(call));
    cell(row, time(call.started_at));
    cell(row, formatDuration(lengthOf(call, nowS) ?? 0));
    cell(row, call.room);
    row.addEventListener('click', () => onPick(call.room));
    return row;
  });
  $('live').replaceChildren(...liveRows);
  const rows = calls.map((call) => {
    const row = document.createElement('tr');
    row.dataset.room = call.room;
    cell(row, callerOf(call));
    cell(row, time(call.started_at));
    const length = lengthOf(call, nowS);
    cell(row, length === null ? '' : formatDuration(length));
    cell(row, call.open ? 'live' : call.end_reason || '');
    row.tabIndex = 0;
    row.addEventListener('click', () => onPick(call.room));
    row.addEventListener('keydown', (event) => { if (event.key === 'Enter') onPick(call.room); });
    return row;
  });
  $('calls').replaceChildren(...rows);
}

function renderDetail(call) {
  $('detail').hidden = false;
  $('detail-title').textContent = `${callerOf(call)} \u2014 ${call.room}`;
  const usage = call.usage || {};
  $('detail-summary').textContent = [
    `Started ${time(call.started_at)}`,
    call.ended_at ? `ended ${time(call.ended_at)} (${call.end_reason || 'ended'})` : 'live',
    `${usage.total_tokens ?? 0} model tokens`,
  ].join(' \u00b7 ');
  $('detail-turns').replaceChildren(...(call.turns || []).map((turn) => {
    const item = document.createElement('li');
    item.className = `admin-turn admin-turn-${turn.role}`;
    const who = document.createElement('strong');
    who.textContent = turn.role === 'user' ? 'Caller' : 'Agent';
    item.append(who, ` ${turn.text}${turn.interrupted ? ' (interrupted)' : ''}`);
    return item;
  }));
  $('detail-tools').replaceChildren(...(call.tool_calls || []).map((tool) => {
    const item = document.createElement('li');
    item.textContent = `${tool.name}(${tool.arguments}) \u2192 ${tool.is_error ? 'error: ' : ''}${tool.output ?? ''}`;
    return item;
  }));
  $('detail-events').replaceChildren(...(call.events || []).map((event) => {
    const item = document.createElement('li');
    const { at, event: name, ...rest } = event;
    const extra = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(' ');
    item.textContent = `${time(at)} ${name}${extra ? ` ${extra}` : ''}`;
    return item;
  }));
}

function start() {
  let key = sessionStorage.getItem(KEY_ITEM) || '';
  let picked = null;
  let timer = null;

  const pick = async (room) => {
    picked = room;
    try {
      renderDetail(await getJson(`${CALLS_URL}/${encodeURIComponent(room)}`, key));
    } catch (error) {
      $('detail').hidden = false;
      $('detail-title').textContent = `Could not load ${room}: ${error.message}`;
    }
  };

  const refresh = async () => {
    try {
      const { calls } = await getJson(`${CALLS_URL}?limit=${LIST_LIMIT}`, key);
      $('key-form').hidden = true;
      $('console').hidden = false;
      renderCalls(calls, Date.now() / 1000, pick);
      $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (picked) await pick(picked);
    } catch (error) {
      if (error instanceof ApiRefused) {
        sessionStorage.removeItem(KEY_ITEM);
        clearInterval(timer);
        $('console').hidden = true;
        $('key-form').hidden = false;
        $('key-error').hidden = false;
        $('key-error').textContent = error.message;
      } else {
        $('updated').textContent = `Not updated: ${error.message}`;
      }
    }
  };

  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    key = $('key').value.trim();
    sessionStorage.setItem(KEY_ITEM, key);
    $('key-error').hidden = true;
    clearInterval(timer);
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  });
  if (key) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}

if (typeof document !== 'undefined') start();
