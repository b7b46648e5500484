/** localStorage that never throws (storage can be disabled, e.g. in private mode). */

/**
 * Reads a remembered string.
 * @param {string} key
 * @returns {string} the value, or '' when absent or unavailable
 */
export function load(key) {
  try {
    return globalThis.localStorage?.getItem(key) ?? '';
  } catch {
    return '';
  }
}

/**
 * Remembers a string; silently does nothing when storage is unavailable.
 * @param {string} key
 * @param {string} value
 */
export function store(key, value) {
  try {
    globalThis.localStorage?.setItem(key, value);
  } catch {
    /* the choice then lasts for this page only */
  }
}
