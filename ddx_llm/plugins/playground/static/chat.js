// The conversation: send a turn (streamed or not), stop it, clear it.
//
// Stop aborts the fetch (AbortController): the browser closes the connection, the service sees
// the client leave and ends the generation — nothing keeps running on the server.

import { ApiError, call, errorOf } from "./api.js";
import { AnswerView } from "./answer.js";
import { ParamError, readParams } from "./params.js";
import { dataEvents } from "./sse.js";
import { byId, el } from "./view.js";

export class Chat {
  /** @param {import("./service.js").ServiceState} service */
  constructor(service) {
    this.service = service;
    this.history = [];
    this.controller = null;
    this.transcript = byId("transcript");
    this.prompt = byId("prompt");
    this.sendButton = byId("send");
    this.stopButton = byId("stop");
    byId("compose").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    this.stopButton.addEventListener("click", () => this.stop());
    byId("clear").addEventListener("click", () => this.clear());
  }

  running() {
    return this.controller !== null;
  }

  stop() {
    if (this.controller) this.controller.abort();
  }

  clear() {
    this.stop();
    this.history = [];
    this.transcript.replaceChildren();
  }

  showParamError(message) {
    const box = byId("params-error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  async send() {
    const text = this.prompt.value.trim();
    if (!text || this.running()) return;
    let request;
    try {
      request = readParams(this.service.health?.backend);
    } catch (error) {
      if (!(error instanceof ParamError)) throw error;
      this.showParamError(error.message);
      return;
    }
    this.showParamError(null);
    const turn = { role: "user", content: text };
    const messages = [...(request.system ? [request.system] : []), ...this.history, turn];
    const body = { ...request.fields, messages };
    this.prompt.value = "";
    this.transcript.querySelector(".hint")?.remove();
    this.transcript.append(
      el("article", { className: "message user" }, el("header", {}, el("span", { className: "role" }, "user")), el("div", { className: "content" }, text)),
    );
    const started = performance.now();
    const answer = new AnswerView(started);
    this.transcript.append(answer.node);
    answer.node.scrollIntoView({ block: "end" });
    this.controller = new AbortController();
    this.setRunning(true);
    let state = "done";
    try {
      await this.service.track(this.exchange(body, answer, this.controller.signal));
    } catch (error) {
      if (error.name === "AbortError") {
        state = "stopped";
      } else {
        state = "error";
        answer.fail(error);
      }
    } finally {
      answer.finish(state, body.stream);
      this.controller = null;
      this.setRunning(false);
      this.prompt.focus();
    }
    if (state !== "error") {
      const said = answer.message();
      this.history.push(turn, ...(said ? [said] : []));
    }
  }

  async exchange(body, answer, signal) {
    const response = await call("v1/chat/completions", { method: "POST", body, signal });
    if (!response.ok) throw await errorOf(response);
    if (!body.stream) {
      answer.whole(await response.json(), performance.now());
      return;
    }
    for await (const chunk of dataEvents(response)) {
      if (chunk.error) throw ApiError.fromBody(null, chunk.error); // in-band: after the 200
      answer.feed(chunk, performance.now());
      if (answer.node.isConnected) answer.node.scrollIntoView({ block: "end" });
    }
  }

  setRunning(running) {
    this.sendButton.disabled = running;
    this.stopButton.disabled = !running;
    document.body.dataset.generating = running ? "true" : "false";
  }
}
