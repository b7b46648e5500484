/**
 * "All lines are busy": the token endpoint refused a call because every line is taken (no room
 * was made), so the page counts down its Retry-After and asks again, like a queue on the phone.
 */
import { fetchToken } from './token.js';

/** Shown between a countdown's end and the next answer of the token endpoint. */
export const TRYING_AGAIN_NOTICE = 'Trying again\u2026';

/** How often (ms) the countdown is redrawn. */
const TICK_MS = 250;

/**
 * Counts down `seconds`, showing "All lines are busy. Trying again in N s…".
 * @param {number} seconds how long to wait (the endpoint's Retry-After)
 * @param {AbortSignal} signal cancels the wait (the caller pressed Disconnect)
 * @param {(notice: string, busyUntil: number) => void} show called with the line to show and
 *   when the next request goes out (epoch ms; 0 once the wait is over)
 * @returns {Promise<boolean>} true when the wait ran out (ask again), false when cancelled
 */
export function waitForALine(seconds, signal, show) {
  if (signal.aborted) return Promise.resolve(false);
  const busyUntil = Date.now() + seconds * 1000;
  return new Promise((resolve) => {
    const countdown = () => {
      const left = Math.max(0, Math.ceil((busyUntil - Date.now()) / 1000));
      show(`All lines are busy. Trying again in ${left} s\u2026`, busyUntil);
      return left;
    };
    const finish = (again) => {
      clearInterval(timer);
      signal.removeEventListener('abort', cancelled);
      show(again ? TRYING_AGAIN_NOTICE : '', 0);
      resolve(again);
    };
    const cancelled = () => finish(false);
    const timer = setInterval(() => {
      if (countdown() === 0) finish(true);
    }, TICK_MS);
    signal.addEventListener('abort', cancelled, { once: true });
    countdown();
  });
}

/**
 * Asks the token endpoint for a call, waiting in line (`waitForALine`) while every line is busy.
 * @param {Parameters<typeof fetchToken>[0]} request `signal` also cancels the wait
 * @param {(notice: string, busyUntil: number) => void} show see `waitForALine`
 * @returns {ReturnType<typeof fetchToken>} the token answer
 * @throws {import('./errors.js').AppError} what fetchToken throws; `lines-busy` once the wait is cancelled
 */
export async function fetchTokenInLine(request, show) {
  for (;;) {
    try {
      return await fetchToken(request);
    } catch (error) {
      if (error?.code === 'lines-busy' && (await waitForALine(error.retryAfterS, request.signal, show))) continue;
      throw error;
    }
  }
}
