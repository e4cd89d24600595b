// The parameters form → the fields of a chat completions request.  A field that cannot be
// read (bad JSON, a bad number) throws ParamError naming it; nothing is sent then.

import { byId } from "./view.js";

export class ParamError extends Error {}

function parseJson(label, text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ParamError(`${label}: not valid JSON (${error.message})`);
  }
}

function tools() {
  const text = byId("p-tools").value.trim();
  if (!text) return null;
  const value = parseJson("Tools", text);
  if (!Array.isArray(value) || value.some((tool) => !tool || typeof tool !== "object")) {
    throw new ParamError("Tools: a JSON array of tool objects is expected");
  }
  return value;
}

function toolChoice(offered) {
  const choice = byId("p-tool-choice").value;
  if (choice !== "function") return choice || null;
  const name = offered?.[0]?.function?.name;
  if (!name) throw new ParamError("Tool choice: forcing a tool needs a tool with a function name");
  return { type: "function", function: { name } };
}

function responseFormat() {
  const type = byId("p-format").value;
  if (type === "json_object") return { type };
  if (type !== "json_schema") return null;
  const text = byId("p-schema").value.trim();
  if (!text) throw new ParamError("JSON schema: write the schema the answer must follow");
  const schema = parseJson("JSON schema", text);
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) {
    throw new ParamError("JSON schema: a JSON object is expected");
  }
  return { type, json_schema: { name: "playground", schema, strict: true } };
}

function maxTokens() {
  const text = byId("p-max-tokens").value.trim();
  if (!text) return null;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new ParamError("Max tokens: a whole number of at least 1 is expected");
  }
  return value;
}

function mockOptions() {
  const options = {};
  const scenario = byId("p-mock-scenario").value;
  if (scenario) options.scenario = scenario;
  const delay = byId("p-mock-delay").value.trim();
  if (delay) {
    const value = Number(delay);
    if (!(value >= 0 && value <= 10000)) throw new ParamError("Delay per token: 0 to 10000 ms");
    options.token_delay_ms = value;
  }
  return Object.keys(options).length ? options : null;
}

/**
 * The request fields the form asks for: `{fields, system}` where `fields` go into the body
 * as they are and `system` is the system message to put first (or null).
 * @param {string | undefined} backend the active backend (the mock's options go to the mock only)
 */
export function readParams(backend) {
  const fields = { stream: byId("p-stream").checked };
  if (fields.stream) fields.stream_options = { include_usage: true };
  const model = byId("p-model").value;
  if (model) fields.model = model;
  if (byId("p-temperature-set").checked) fields.temperature = Number(byId("p-temperature").value);
  const limit = maxTokens();
  if (limit !== null) fields.max_tokens = limit;
  const offered = tools();
  if (offered) fields.tools = offered;
  const choice = toolChoice(offered);
  if (choice) fields.tool_choice = choice;
  const format = responseFormat();
  if (format) fields.response_format = format;
  if (backend === "mock") {
    const mock = mockOptions();
    if (mock) fields.mock = mock;
  }
  const systemText = byId("p-system").value.trim();
  const system = systemText ? { role: "system", content: systemText } : null;
  return { fields, system };
}

/** Keep the temperature's label in step with its slider and switch. */
export function bindParams() {
  const slider = byId("p-temperature");
  const enabled = byId("p-temperature-set");
  const shown = byId("p-temperature-value");
  const update = () => {
    shown.textContent = enabled.checked ? Number(slider.value).toFixed(2) : "server default";
    slider.disabled = !enabled.checked;
  };
  slider.addEventListener("input", update);
  enabled.addEventListener("change", update);
  update();
}
