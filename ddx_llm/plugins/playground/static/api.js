// Talking to the service: URLs relative to the page, the API key, errors in ddx-llm's shape.
//
// The page lives at <prefix>/playground, so "." from it is the service's root whatever the
// prefix (root_path) is: every API URL is built from there, never from "/".

const KEY_STORAGE = "ddx-llm.playground.api-key";

/** The service's root URL (with its path prefix, if any). */
export const serviceRoot = new URL(".", document.baseURI);

/** The absolute URL of an API path given without its leading slash ("v1/models"). */
export function apiUrl(path) {
  return new URL(path, serviceRoot);
}

/** The API key of this tab: sessionStorage only (gone when the tab closes; never a cookie,
 * never localStorage, never a URL). */
export const apiKey = {
  get() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  },
  set(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

/** An error answer: `code`, `message` and `detail` as ddx-llm sends them (or as close as a
 * non-JSON answer allows), with the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }

  /** "404 model_not_found: message — detail" */
  describe() {
    const status = this.status ? `${this.status} ` : "";
    let text = `${status}${this.code}: ${this.message}`;
    if (this.detail !== undefined && this.detail !== null) {
      text += ` — ${typeof this.detail === "string" ? this.detail : JSON.stringify(this.detail)}`;
    }
    return text;
  }

  /** From an error body (`{code, message, detail}`, or only OpenAI's `error` envelope). */
  static fromBody(status, body) {
    const source = body && typeof body === "object" ? body : {};
    const envelope = source.error && typeof source.error === "object" ? source.error : {};
    const code = source.code || envelope.code || envelope.type || `http_${status}`;
    const message = source.message || envelope.message || "the request failed";
    return new ApiError(status, code, message, source.detail);
  }
}

/** Turn a non-2xx response into an ApiError. */
export async function errorOf(response) {
  const text = await response.text();
  try {
    return ApiError.fromBody(response.status, JSON.parse(text));
  } catch {
    return new ApiError(response.status, `http_${response.status}`, text.slice(0, 300) || response.statusText);
  }
}

/** Request headers: JSON, and the key as a Bearer token when there is one. */
export function headers(json = false) {
  const sent = { Accept: "application/json" };
  if (json) sent["Content-Type"] = "application/json";
  const key = apiKey.get();
  if (key) sent.Authorization = `Bearer ${key}`;
  return sent;
}

/** fetch() an API path; a network failure becomes an ApiError with status 0. */
export async function call(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body !== undefined), signal, cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  try {
    return await fetch(apiUrl(path), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", `the service did not answer (${error.message})`);
  }
}

/** GET or POST an API path and return its JSON; non-2xx answers throw ApiError. */
export async function json(path, options) {
  const response = await call(path, options);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}
