// A headless Chromium for the Python tests, driven one JSON command per line.
//
//   node driver.mjs <chromium executable> <user data dir>
//
// Launches Debian's chromium through playwright-core (never a downloaded browser) with a fresh
// profile, then reads commands from stdin — {"id": 1, "op": "open", "url": "..."} — and writes
// one answer per command to stdout: {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok":
// false, "error": "..."}.  The page's console errors, uncaught exceptions and every request it
// makes (method, URL, headers, body) are recorded for the "log" command.  Ends on "quit" or at the end
// of stdin, closing the browser.  Closing a tab (or opening a fresh one under its name) forgets
// its log entries.  tests/browser/playwright_driver.py is the Python side.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [executablePath, userDataDir] = process.argv.slice(2);
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true, // --headless
  args: FLAGS,
  viewport: { width: 1440, height: 900 },
  deviceScaleFactor: 1,
  colorScheme: "light",
});
context.setDefaultTimeout(15000);
const pages = new Map(); // name -> page
const log = { requests: [], console: [], errors: [] };

function watch(name, page) {
  page.on("request", (request) =>
    log.requests.push({
      page: name,
      method: request.method(),
      url: request.url(),
      headers: request.headers(),
      body: request.postData(),
    }),
  );
  page.on("console", (message) => {
    if (message.type() === "error") log.console.push({ page: name, text: message.text() });
  });
  page.on("pageerror", (error) => log.errors.push({ page: name, text: String(error) }));
}

async function page(name = "main") {
  if (!pages.has(name)) {
    const spare = context.pages().find((open) => ![...pages.values()].includes(open));
    const created = spare ?? (await context.newPage());
    watch(name, created);
    pages.set(name, created);
  }
  return pages.get(name);
}

/** A function written as source ("(arg) => ..."), made here: page.evaluate() then calls it with
 * its argument (a string would be evaluated as an expression instead). */
function compile(source) {
  return new Function(`return (${source});`)();
}

const operations = {
  async open({ url, page: name, fresh = false }) {
    if (fresh) await operations.close({ page: name });
    const target = await page(name);
    const response = await target.goto(url, { waitUntil: "load" });
    return { status: response?.status() ?? null, url: target.url() };
  },
  async reload({ page: name }) {
    const response = await (await page(name)).reload({ waitUntil: "load" });
    return { status: response?.status() ?? null };
  },
  async fill({ selector, value, page: name }) {
    await (await page(name)).fill(selector, value);
  },
  async click({ selector, page: name }) {
    await (await page(name)).click(selector);
  },
  async select({ selector, value, page: name }) {
    await (await page(name)).selectOption(selector, value);
  },
  async check({ selector, checked = true, page: name }) {
    await (await page(name)).setChecked(selector, checked);
  },
  async wait({ selector, state = "visible", timeout, page: name }) {
    await (await page(name)).waitForSelector(selector, { state, timeout });
  },
  async waitFor({ js, arg, timeout, page: name }) {
    const handle = await (await page(name)).waitForFunction(compile(js), arg, { timeout, polling: 20 });
    return handle.jsonValue();
  },
  async eval({ js, arg, page: name }) {
    return (await page(name)).evaluate(compile(js), arg);
  },
  async text({ selector, page: name }) {
    return (await page(name)).textContent(selector);
  },
  async screenshot({ path, fullPage = false, page: name }) {
    await (await page(name)).screenshot({ path, fullPage });
    return path;
  },
  async close({ page: name = "main" }) {
    if (pages.has(name)) await pages.get(name).close();
    pages.delete(name);
    for (const kind of Object.keys(log)) log[kind] = log[kind].filter((entry) => entry.page !== name);
  },
  async log() {
    return log;
  },
  async quit() {
    await context.close();
    return null;
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  let answer;
  try {
    if (!(op in operations)) throw new Error(`unknown operation ${op}`);
    const value = await operations[op](args);
    answer = { id, ok: true, value: value === undefined ? null : value };
  } catch (error) {
    answer = { id, ok: false, error: String(error?.message || error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (op === "quit") process.exit(0);
}
await context.close();
