/**
 * Microphone, speaker and camera selection: fills a <select>, remembers the choice in
 * localStorage, and keeps the list current when devices come and go.
 */
import { Room } from 'livekit-client';
import { load, store } from './storage.js';

/** @returns {boolean} whether this browser can route audio to a chosen output (setSinkId). */
export function supportsOutputSelection() {
  return typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
}

/** A <select> of media devices of one kind, with its choice remembered. */
export class DeviceSelect {
  /**
   * @param {HTMLSelectElement} select
   * @param {object} options
   * @param {MediaDeviceKind} options.kind 'audioinput', 'audiooutput' or 'videoinput'
   * @param {string} options.storageKey localStorage key
   * @param {string} options.noun e.g. "Microphone", used for unnamed devices
   * @param {(deviceId: string) => void} [options.onChange] called when the user picks a device
   */
  constructor(select, { kind, storageKey, noun, onChange }) {
    this.select = select;
    this.kind = kind;
    this.storageKey = storageKey;
    this.noun = noun;
    /** @type {MediaDeviceInfo[]} */
    this.devices = [];
    select.addEventListener('change', () => {
      store(this.storageKey, select.value);
      onChange?.(select.value);
    });
  }

  /** @returns {string} the id to use: the remembered device if present, else '' (browser default) */
  get deviceId() {
    const wanted = load(this.storageKey);
    if (wanted && this.devices.some((d) => d.deviceId === wanted)) return wanted;
    return this.select.value && this.select.value !== 'default' ? this.select.value : '';
  }

  /**
   * Re-reads the device list (labels appear only once permission is granted).
   * @returns {Promise<MediaDeviceInfo[]>}
   */
  async refresh() {
    let devices = [];
    try {
      devices = await Room.getLocalDevices(this.kind, false);
    } catch {
      devices = [];
    }
    this.devices = devices.filter((d) => d.deviceId !== '');
    this.#render();
    return this.devices;
  }

  /**
   * Shows `deviceId` as selected without storing it (e.g. the device in actual use).
   * @param {string|undefined} deviceId
   */
  showActive(deviceId) {
    if (deviceId && this.devices.some((d) => d.deviceId === deviceId)) this.select.value = deviceId;
  }

  #render() {
    const wanted = load(this.storageKey);
    const options = this.devices.map((device, index) => {
      const option = document.createElement('option');
      option.value = device.deviceId;
      option.textContent = device.label || (device.deviceId === 'default' ? `Default ${this.noun.toLowerCase()}` : `${this.noun} ${index + 1}`);
      return option;
    });
    if (options.length === 0) {
      const option = document.createElement('option');
      option.value = '';
      option.textContent = `Default ${this.noun.toLowerCase()}`;
      options.push(option);
    }
    this.select.replaceChildren(...options);
    if (wanted && this.devices.some((d) => d.deviceId === wanted)) this.select.value = wanted;
  }
}
