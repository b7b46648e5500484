// The operator console (admin.html): read-only views over the call-records API.
//
// Wire shapes (token-server/token_server/openapi.yaml): GET /api/calls?limit=N ->
// {"calls": [{room, participant_identity, participant_name, started_at, ended_at, end_reason,
// open, jobs, phone_number?, direction?, agent_state?}]}; GET /api/calls/<room> -> the same
// plus turns [{at, role, text, interrupted, response_s?, sources?}], tool_calls [{at, name,
// arguments, output, is_error}], usage {input_tokens, output_tokens, total_tokens, responses},
// events [{at, event, ...}]; GET /api/calls/stats -> `CallStats` (response times of the last
// hour, calls per hour, usage and cost today / this month / per day). All need
// "Authorization: Bearer <key>" with one of RECORDS_API_KEYS. The key stays in this tab
// (sessionStorage). Everything from the API is written with textContent.

import { Chart } from './admin-charts.js';
import {
  callerOf, dayCostSeries, formatCount, formatDuration, formatSeconds, formatUsd, hourSeries, lengthOf,
  monthRange, percentile, responseSeries,
} from './admin-figures.js';

const CALLS_URL = '/api/calls';
const STATS_URL = '/api/calls/stats';
const LIST_LIMIT = 50;
const REFRESH_MS = 5000;
const KEY_ITEM = 'voice-appliance.operator-key';
const TOKEN_ROWS = [['input_audio', 'Input audio'], ['input_text', 'Input text'], ['output_audio', 'Output audio'],
  ['output_text', 'Output text']];

const $ = (id) => document.getElementById(id);

function time(at) {
  return at ? new Date(at * 1000).toLocaleString() : '';
}

/** A start time, short: "3:12 AM" today, "12/1, 11:13 PM" before. */
function shortTime(at) {
  if (!at) return '';
  const date = new Date(at * 1000);
  const today = date.toDateString() === new Date().toDateString();
  return date.toLocaleString([], today ? { hour: 'numeric', minute: '2-digit' }
    : { month: 'numeric', day: 'numeric', hour: 'numeric', minute: '2-digit' });
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
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

function pickable(row, room, onPick) {
  row.dataset.room = room;
  row.tabIndex = 0;
  row.addEventListener('click', () => onPick(room, true));
  row.addEventListener('keydown', (event) => { if (event.key === 'Enter') onPick(room, true); });
  return row;
}

function renderCalls(calls, nowS, onPick) {
  const live = calls.filter((c) => c.open);
  $('live-count').textContent = `(${live.length})`;
  $('tile-live').textContent = String(live.length);
  $('live-empty').hidden = live.length > 0;
  document.querySelector('[data-testid=live-calls]').hidden = live.length === 0;
  $('live').replaceChildren(...live.map((call) => {
    const row = document.createElement('tr');
    cell(row, callerOf(call));
    cell(row, formatDuration(lengthOf(call, nowS) ?? 0));
    const state = cell(row, call.agent_state || 'joining');
    state.className = `admin-state admin-state-${call.agent_state || 'joining'}`;
    cell(row, call.room, 'admin-room admin-wide-only');
    return pickable(row, call.room, onPick);
  }));
  $('calls').replaceChildren(...calls.map((call) => {
    const row = document.createElement('tr');
    cell(row, callerOf(call));
    cell(row, shortTime(call.started_at));
    const length = lengthOf(call, nowS);
    cell(row, length === null ? '' : formatDuration(length));
    cell(row, call.open ? 'live' : call.end_reason || '');
    return pickable(row, call.room, onPick);
  }));
}

function capNote(period) {
  return period.cap_usd ? `of ${formatUsd(period.cap_usd)} cap` : 'no cap set';
}

function renderStats(stats, charts) {
  const seconds = stats.response_times.map((r) => r.seconds);
  $('tile-response').textContent = formatSeconds(percentile(seconds, 50));
  $('tile-response-note').textContent = seconds.length
    ? `median of ${seconds.length} turn${seconds.length === 1 ? '' : 's'} in the last hour; p95 ${formatSeconds(percentile(seconds, 95))}`
    : 'no turns in the last hour';
  const { today, month, days } = stats.usage;
  $('tile-calls').textContent = String(stats.calls_per_hour.filter((h) => h.start >= Date.parse(`${today.date}T00:00:00Z`) / 1000)
    .reduce((sum, h) => sum + h.calls, 0));
  $('tile-cost-day').textContent = formatUsd(today.cost_usd);
  $('tile-cost-day-note').textContent = capNote(today);
  $('tile-cost-month').textContent = formatUsd(month.cost_usd);
  $('tile-cost-month-note').textContent = capNote(month);

  const rows = TOKEN_ROWS.map(([key, label]) => {
    const row = document.createElement('tr');
    cell(row, label);
    cell(row, formatCount(today.tokens[key] ?? 0), 'admin-num');
    cell(row, formatCount(month.tokens[key] ?? 0), 'admin-num');
    return row;
  });
  const cost = document.createElement('tr');
  cost.className = 'admin-total';
  cell(cost, 'Estimated cost');
  cell(cost, formatUsd(today.cost_usd), 'admin-num');
  cell(cost, formatUsd(month.cost_usd), 'admin-num');
  const talk = document.createElement('tr');
  cell(talk, 'Calls ended (talk time)');
  cell(talk, `${today.calls} (${formatDuration(today.call_seconds)})`, 'admin-num');
  cell(talk, `${month.calls} (${formatDuration(month.call_seconds)})`, 'admin-num');
  $('usage').replaceChildren(...rows, cost, talk);

  const pad = stats.window_s / 100; // a turn just now is drawn whole, not cut by the edge
  charts.response.xRange = () => [stats.now - stats.window_s, stats.now + pad];
  charts.response.update(responseSeries(stats.response_times));
  const first = stats.calls_per_hour[0]?.start ?? stats.now - 86_400;
  charts.calls.xRange = () => [first, first + stats.calls_per_hour.length * 3600];
  charts.calls.update(hourSeries(stats.calls_per_hour));
  charts.cost.xRange = () => monthRange(month.month);
  charts.cost.update(dayCostSeries(days));
}

function listItem(text) {
  const item = document.createElement('li');
  item.textContent = text;
  return item;
}

function renderDetail(call) {
  $('detail').hidden = false;
  $('detail-title').textContent = `${callerOf(call)} \u2014 ${call.room}`;
  const usage = call.usage || {};
  $('detail-summary').textContent = [
    `Started ${time(call.started_at)}`,
    call.ended_at ? `ended ${time(call.ended_at)} (${call.end_reason || 'ended'})` : `live, agent ${call.agent_state || 'joining'}`,
    `${usage.total_tokens ?? 0} model tokens`,
  ].join(' \u00b7 ');
  $('detail-turns').replaceChildren(...(call.turns || []).map((turn) => {
    const item = document.createElement('li');
    item.className = `admin-turn admin-turn-${turn.role}`;
    const who = document.createElement('strong');
    who.textContent = turn.role === 'user' ? 'Caller' : 'Agent';
    item.append(who, ` ${turn.text}${turn.interrupted ? ' (interrupted)' : ''}`);
    if (turn.response_s !== undefined) {
      const took = document.createElement('span');
      took.className = 'admin-took';
      took.textContent = ` replied in ${formatSeconds(turn.response_s)}`;
      item.append(took);
    }
    if (turn.sources?.length) {
      const sources = document.createElement('span');
      sources.className = 'admin-sources';
      sources.textContent = `Sources: ${turn.sources.join('; ')}`;
      item.append(sources);
    }
    return item;
  }));
  $('detail-tools').replaceChildren(...(call.tool_calls || []).map((tool) => listItem(
    `${tool.name}(${tool.arguments}) \u2192 ${tool.is_error ? 'error: ' : ''}${tool.output ?? ''}`)));
  $('detail-events').replaceChildren(...(call.events || []).map((event) => {
    const { at, event: name, ...rest } = event;
    const extra = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(' ');
    return listItem(`${time(at)} ${name}${extra ? ` ${extra}` : ''}`);
  }));
}

function makeCharts() {
  return {
    response: new Chart(document.querySelector('[data-testid=chart-response]'), {
      kind: 'points', label: 'response', yLabel: 'seconds', yFormat: (v) => `${+v.toFixed(2)}`, yMin: 1.5 }),
    calls: new Chart(document.querySelector('[data-testid=chart-calls]'), {
      kind: 'bars', label: 'calls', yLabel: 'calls', yFormat: (v) => (Number.isInteger(v) ? String(v) : ''),
      color: 'listening', yMin: 3 }),
    cost: new Chart(document.querySelector('[data-testid=chart-cost]'), {
      kind: 'bars', label: 'cost', yLabel: 'USD', yFormat: (v) => `$${+v.toPrecision(3)}`, color: 'thinking', yMin: 0.01 }),
  };
}

function start() {
  let key = sessionStorage.getItem(KEY_ITEM) || '';
  let picked = null;
  let timer = null;
  let charts = null;

  const pick = async (room, byHand = false) => {
    picked = room;
    try {
      renderDetail(await getJson(`${CALLS_URL}/${encodeURIComponent(room)}`, key));
      if (byHand) $('detail').scrollIntoView({ behavior: 'smooth', block: 'start' });
    } catch (error) {
      $('detail').hidden = false;
      $('detail-title').textContent = `Could not load ${room}: ${error.message}`;
    }
  };

  const refresh = async () => {
    try {
      const [{ calls }, stats] = await Promise.all([
        getJson(`${CALLS_URL}?limit=${LIST_LIMIT}`, key), getJson(STATS_URL, key)]);
      $('key-form').hidden = true;
      $('console').hidden = false;
      charts ??= makeCharts();
      renderCalls(calls, Date.now() / 1000, pick);
      renderStats(stats, charts);
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
