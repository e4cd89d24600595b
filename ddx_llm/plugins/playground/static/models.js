// The registry (GET v1/models with its extras), which model is resident, and swaps
// (POST v1/models/load): the load in progress while it runs, then its result or its error.

import { ApiError, json } from "./api.js";
import { byId, duration, el, params, percent, tokensCount } from "./view.js";

export class ModelsPanel {
  /** @param {import("./service.js").ServiceState} service */
  constructor(service) {
    this.service = service;
    this.models = [];
    this.swapping = null; // the id being loaded by this page
    this.list = byId("models");
    this.status = byId("swap-status");
    this.picker = byId("p-model");
    this.list.addEventListener("click", (event) => {
      const button = event.target.closest("button.load");
      if (button) this.swap(button.closest("li").dataset.modelId);
    });
    service.onChange((health) => this.showStates(health));
  }

  async load() {
    try {
      this.models = (await json("v1/models")).data;
    } catch (error) {
      this.report("error", error.describe ? error.describe() : String(error), error.code);
      return;
    }
    this.list.replaceChildren(...this.models.map((model) => this.item(model)));
    this.picker.replaceChildren(
      el("option", { value: "" }, "the resident model"),
      ...this.models.map((model) => el("option", { value: model.id }, model.id)),
    );
    this.showStates(this.service.health);
  }

  item(model) {
    const extras = [
      model.family,
      params(model.total_params_b),
      model.quantization,
      `${tokensCount(model.context_window)} context`,
      model.multimodal ? "multimodal" : null,
    ].filter(Boolean);
    return el(
      "li",
      { dataset: { modelId: model.id }, title: `${model.arch} · owned by ${model.owned_by}` },
      el(
        "div",
        { className: "about" },
        el("strong", {}, model.label || model.id),
        el("code", { className: "id" }, model.id),
        el("span", { className: "extras" }, extras.join(" · ")),
      ),
      el("button", { type: "button", className: "load" }, "Load"),
    );
  }

  /** Mark the resident model and its state; while this page swaps, show the load's progress. */
  showStates(health) {
    if (!health) return;
    for (const row of this.list.children) {
      const resident = row.dataset.modelId === health.model;
      row.dataset.state = resident ? health.model_state : "";
      const button = row.querySelector("button.load");
      button.disabled = this.swapping !== null || (resident && health.model_state === "ready");
      button.textContent = !resident
        ? "Load"
        : { ready: "Loaded", loading: "Loading…", failed: "Retry" }[health.model_state] || "Load";
    }
    if (this.swapping && health.model === this.swapping && health.model_state === "loading") {
      let text = `Loading ${this.swapping}… ${duration(health.model_load_elapsed_ms)}`;
      if (typeof health.model_load_progress === "number") {
        text += ` (${percent(health.model_load_progress)})`;
      }
      this.report("pending", text);
    }
  }

  async swap(modelId) {
    if (this.swapping) return;
    this.swapping = modelId;
    this.report("pending", `Loading ${modelId}…`);
    this.showStates(this.service.health);
    try {
      const result = await this.service.track(
        json("v1/models/load", { method: "POST", body: { model_id: modelId } }),
      );
      const text = result.swapped
        ? `Loaded ${modelId} in ${duration(result.load_ms)} (load_ms ${result.load_ms})`
        : `${modelId} was already loaded`;
      this.report("ok", text);
      this.status.dataset.loadMs = result.load_ms;
    } catch (error) {
      const failure = error instanceof ApiError ? error : new ApiError(0, "error", String(error));
      this.report("error", `Swap to ${modelId} failed: ${failure.describe()}`, failure.code);
    } finally {
      this.swapping = null;
      this.showStates(this.service.health);
    }
  }

  report(outcome, text, code) {
    this.status.dataset.outcome = outcome;
    if (code) this.status.dataset.code = code;
    else delete this.status.dataset.code;
    delete this.status.dataset.loadMs;
    this.status.textContent = text;
  }
}
