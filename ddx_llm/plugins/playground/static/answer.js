// One assistant answer as it arrives: reasoning apart from the answer, tool calls as calls,
// then the finish reason, the time to first token and the generation speed.
//
// Figures: TTFT is from sending the request to the first generated piece (reasoning, text or a
// tool call).  tokens/s is the decode speed after the first token: (tokens - 1) / (last piece -
// first piece), with `tokens` from the usage the service reports (stream_options.include_usage);
// a stream cut short has no usage, so its pieces are counted instead ("≈").  An answer that
// came in one or two pieces (not streamed, or a tool call sent whole once parsed) has no decode
// span: its rate is the whole request's ("overall").

import { duration, el, rate } from "./view.js";

export class AnswerView {
  constructor(started) {
    this.started = started;
    this.first = null;
    this.last = null;
    this.pieces = 0;
    this.content = "";
    this.reasoning = "";
    this.calls = [];
    this.finishReason = null;
    this.usage = null;
    this.model = null;
    this.fields = {};
    const field = (tag, name, props = {}, ...children) =>
      (this.fields[name] = el(tag, { ...props, dataset: { field: name } }, ...children));
    this.reasoningBox = el(
      "details",
      { className: "reasoning", open: true, hidden: true },
      el("summary", {}, "Reasoning"),
      field("div", "reasoning", { className: "text" }),
    );
    this.node = el(
      "article",
      { className: "message assistant", dataset: { state: "waiting" } },
      el("header", {}, el("span", { className: "role" }, "assistant"), field("span", "model", { className: "model" })),
      this.reasoningBox,
      field("div", "content", { className: "content" }),
      field("div", "tool-calls", { className: "tool-calls" }),
      field("p", "error", { className: "error", hidden: true }),
      el(
        "footer",
        { className: "stats" },
        field("span", "finish", { title: "finish reason" }, "…"),
        field("span", "ttft", { title: "time to first token" }),
        field("span", "rate", { title: "generation speed after the first token" }),
        field("span", "tokens", { title: "completion tokens" }),
      ),
    );
  }

  /** One chat.completion.chunk, received at `now` (performance.now()). */
  feed(chunk, now) {
    if (chunk.model) this.showModel(chunk.model);
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      if (choice.index) continue;
      this.delta(choice.delta || {}, now);
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
  }

  /** A whole chat.completion (stream false), received at `now`. */
  whole(completion, now) {
    if (completion.model) this.showModel(completion.model);
    this.usage = completion.usage || null;
    const choice = (completion.choices || [])[0] || {};
    const message = choice.message || {};
    this.delta(
      {
        content: message.content,
        reasoning_content: message.reasoning_content ?? message.reasoning,
        tool_calls: (message.tool_calls || []).map((call, index) => ({ index, ...call })),
      },
      now,
    );
    this.finishReason = choice.finish_reason || null;
  }

  delta(delta, now) {
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    const calls = delta.tool_calls || [];
    if (!reasoning && !delta.content && !calls.length) return;
    if (this.first === null) this.first = now;
    this.last = now;
    this.pieces += 1;
    this.node.dataset.state = "streaming";
    if (reasoning) {
      this.reasoning += reasoning;
      this.reasoningBox.hidden = false;
      this.fields.reasoning.textContent = this.reasoning;
    }
    if (delta.content) {
      this.content += delta.content;
      this.fields.content.textContent = this.content;
    }
    for (const piece of calls) this.toolCall(piece);
  }

  toolCall(piece) {
    let call = this.calls[piece.index];
    if (!call) {
      call = this.calls[piece.index] = { id: null, name: "", arguments: "", node: null };
      call.node = el("div", { className: "tool-call" });
      this.fields["tool-calls"].append(call.node);
    }
    if (piece.id) call.id = piece.id;
    if (piece.function?.name) call.name += piece.function.name;
    if (piece.function?.arguments) call.arguments += piece.function.arguments;
    call.node.dataset.name = call.name;
    call.node.replaceChildren(
      el("span", { className: "label" }, "tool call"),
      el(
        "code",
        { className: "call" },
        el("span", { className: "fn" }, call.name),
        "(",
        el("span", { className: "args" }, call.arguments),
        ")",
      ),
      call.id ? el("span", { className: "id" }, call.id) : null,
    );
  }

  showModel(model) {
    this.model = model;
    this.fields.model.textContent = model;
  }

  /** The answer ended: `state` is "done", "stopped" (the user stopped it) or "error". */
  finish(state, streamed) {
    this.node.dataset.state = state;
    const reason =
      state === "stopped" ? "stopped (disconnected)" : this.finishReason || (state === "error" ? "error" : "–");
    this.fields.finish.textContent = `finish: ${reason}`;
    this.node.dataset.finishReason = this.finishReason || "";
    const counted = this.usage?.completion_tokens;
    const tokens = counted ?? this.pieces;
    const approx = counted === undefined ? "≈" : "";
    this.fields.tokens.textContent = tokens ? `${approx}${tokens} tokens` : "";
    if (this.first === null) return; // nothing was generated (refused, failed first): no figures
    this.node.dataset.ttftMs = Math.round(this.first - this.started);
    const total = this.last - this.started;
    this.fields.ttft.textContent = streamed
      ? `TTFT ${duration(this.first - this.started)}`
      : `whole answer in ${duration(total)}`;
    if (streamed && this.pieces > 2 && this.last > this.first) {
      this.fields.rate.textContent = `${approx}${rate(tokens - 1, this.last - this.first)}`;
    } else if (tokens && total > 0) {
      this.fields.rate.textContent = `${approx}${rate(tokens, total)} overall`;
    }
  }

  fail(error) {
    this.fields.error.hidden = false;
    this.fields.error.textContent = error.describe ? error.describe() : String(error);
    if (error.code) this.node.dataset.errorCode = error.code;
  }

  /** The message to send back in the next turn (null when nothing was said). */
  message() {
    const calls = this.calls.filter(Boolean);
    if (!this.content && !calls.length) return null;
    const message = { role: "assistant", content: this.content || null };
    if (calls.length) {
      message.tool_calls = calls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: call.arguments },
      }));
    }
    return message;
  }
}
