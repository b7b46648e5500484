// Pure helpers of the operator console: wire shapes (GET /api/calls/stats, see
// token-server/token_server/openapi.yaml `CallStats`) to chart series, and numbers to text.
// No DOM here (unit-tested in Node).

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

/** The p-th percentile (0-100, nearest rank) of `values`; null when there are none. */
export function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Per-turn response times -> uPlot data [[at (Unix s)], [seconds]], oldest first. */
export function responseSeries(responseTimes) {
  const sorted = [...responseTimes].sort((a, b) => a.at - b.at);
  return [sorted.map((r) => r.at), sorted.map((r) => r.seconds)];
}

/** Calls per hour -> [[the hour's middle (Unix s)], [calls]] (a bar centred in its hour). */
export function hourSeries(callsPerHour) {
  return [callsPerHour.map((h) => h.start + 1800), callsPerHour.map((h) => h.calls)];
}

/** This month's days -> [[the day's middle (Unix s, UTC)], [cost (USD)]]. */
export function dayCostSeries(days) {
  return [days.map((d) => Date.parse(`${d.date}T12:00:00Z`) / 1000), days.map((d) => d.cost_usd)];
}

/** The UTC month of `yyyyMm` ("2026-12") as [first, next month's first] in Unix s. */
export function monthRange(yyyyMm) {
  const [year, month] = yyyyMm.split('-').map(Number);
  return [Date.UTC(year, month - 1, 1) / 1000, Date.UTC(year, month, 1) / 1000];
}

/** US dollars: cents for amounts of a dollar or more, four decimals below. */
export function formatUsd(usd) {
  const digits = Math.abs(usd) >= 1 || usd === 0 ? 2 : 4;
  return `$${usd.toFixed(digits)}`;
}

/** Token counts: 950, 12.3k, 4.56M. */
export function formatCount(n) {
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 2 : 1)}k`;
  return `${(n / 1e6).toFixed(2)}M`;
}

/** A response time in seconds as "0.81 s"; an em dash for none. */
export function formatSeconds(seconds) {
  return seconds === null || seconds === undefined ? '\u2014' : `${seconds.toFixed(2)} s`;
}
