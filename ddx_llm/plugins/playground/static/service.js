// The service's state: /health, polled every 2 s, and every 250 ms while something runs (a
// swap, a generation), for a second after it ended (the server may still be winding it down),
// and while a model loads; every 10 s while the tab is hidden.  Shown in the header; listeners
// get every new answer.

import { ApiError, json } from "./api.js";
import { byId, duration, percent } from "./view.js";

const SLOW_MS = 2000;
const FAST_MS = 250;
const SETTLE_MS = 1000;
const HIDDEN_MS = 10000;

export class ServiceState {
  constructor() {
    this.health = null;
    this.error = null;
    this.listeners = [];
    this.busy = 0;
    this.fastUntil = 0;
    this.wake = null;
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  /** Poll forever (one request at a time). */
  async run() {
    document.addEventListener("visibilitychange", () => this.poke());
    while (true) {
      await this.refresh();
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, this.fast() ? FAST_MS : document.hidden ? HIDDEN_MS : SLOW_MS);
      });
    }
  }

  fast() {
    return this.busy > 0 || performance.now() < this.fastUntil || this.health?.model_state === "loading";
  }

  /** Poll now, instead of at the next tick. */
  poke() {
    if (this.wake) this.wake();
  }

  /** Await `promise` with fast polling meanwhile, and poll once more when it is over. */
  async track(promise) {
    this.busy += 1;
    this.poke();
    try {
      return await promise;
    } finally {
      this.busy -= 1;
      this.fastUntil = performance.now() + SETTLE_MS;
      this.poke();
    }
  }

  async refresh() {
    try {
      this.health = await json("health");
      this.error = null;
    } catch (error) {
      this.error = error instanceof ApiError ? error : new ApiError(0, "network_error", String(error));
    }
    this.render();
    for (const listener of this.listeners) listener(this.health, this.error);
  }

  render() {
    const box = byId("health");
    const text = byId("health-text");
    const bar = byId("load-progress");
    if (this.error) {
      box.dataset.status = "down";
      text.textContent = `unreachable: ${this.error.describe()}`;
      bar.hidden = true;
      return;
    }
    const h = this.health;
    box.dataset.status = h.status;
    box.dataset.modelState = h.model_state;
    const parts = [h.backend, h.model || "no model", h.model_state];
    if (h.model_state === "loading") {
      parts.push(duration(h.model_load_elapsed_ms));
      if (typeof h.model_load_progress === "number") parts.push(percent(h.model_load_progress));
    }
    parts.push(`${h.requests.running} running, ${h.requests.waiting} waiting`);
    if (h.model_error) parts.push(`error: ${h.model_error}`);
    if (h.reasons && h.reasons.length) parts.push(h.reasons.join("; "));
    text.textContent = parts.join(" · ");
    const measured = h.model_state === "loading" && typeof h.model_load_progress === "number";
    bar.hidden = !measured;
    if (measured) bar.value = h.model_load_progress;
    else bar.removeAttribute("value");
  }
}
