// The seed's NestJS LlmService (src/modules/llm/llm.service.ts) without the framework: the class
// body is the seed's; ConfigService is a stand-in with Nest's get/getOrThrow built from the
// arguments.  Usage: node nest.mjs <server-url> <api-key>
//
// Prints one JSON object of observations on stdout (the Python test asserts on it); an unexpected
// failure exits non-zero with its stack on stderr.
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';

// --- the seed, verbatim but for the decorators and the TS types -------------------------------

export class LlmService {
  constructor(cfg) {
    this.cfg = cfg;
  }

  async chat(req) {
    const r = await fetch(`${this.cfg.get('LLM_URL')}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'X-API-Key': this.cfg.getOrThrow('LLM_API_KEY'),
      },
      body: JSON.stringify({ ...req, stream: false }),
    });
    if (!r.ok) throw new Error(`llm ${r.status}`);
    return await r.json();
  }

  async stream(req, sink) {
    const r = await fetch(`${this.cfg.get('LLM_URL')}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'X-API-Key': this.cfg.getOrThrow('LLM_API_KEY'),
      },
      body: JSON.stringify({ ...req, stream: true }),
    });
    if (!r.ok || !r.body) throw new Error(`llm ${r.status}`);
    for await (const chunk of r.body) {
      sink.write(chunk);
    }
    sink.end();
  }
}

// --- the environment --------------------------------------------------------------------------

/** @nestjs/config's ConfigService surface the seed uses, over fixed values. */
function configService(values) {
  return {
    get: (name) => values[name],
    getOrThrow: (name) => {
      if (values[name] === undefined) throw new TypeError(`Configuration key "${name}" does not exist`);
      return values[name];
    },
  };
}

/** A sink that remembers what arrived and when (ms since `started`). */
function recordingSink(started) {
  const writes = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      writes.push({ ms: Math.round(performance.now() - started), text: chunk.toString('utf8') });
      done();
    },
  });
  return { sink, writes };
}

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather for a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];
const MESSAGES = [
  { role: 'system', content: 'You answer briefly.' },
  { role: 'user', content: 'What is the weather in Berlin?' },
];

async function streamed(service, req) {
  const started = performance.now();
  const { sink, writes } = recordingSink(started);
  try {
    await service.stream(req, sink);
  } catch (err) {
    return { error: err.message, writes, ended: sink.writableEnded };
  }
  await finished(sink);
  return { error: null, writes, ended: sink.writableEnded };
}

async function rejected(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return err.message;
  }
}

async function main() {
  const [url, key] = process.argv.slice(2);
  const service = new LlmService(configService({ LLM_URL: url, LLM_API_KEY: key }));
  const stranger = new LlmService(configService({ LLM_URL: url, LLM_API_KEY: `not-${key}` }));
  const unconfigured = new LlmService(configService({ LLM_URL: url }));

  const result = {
    chat: await service.chat({ messages: MESSAGES, tools: TOOLS, temperature: 0.2, max_tokens: 64 }),
    chat_wrong_key: await rejected(stranger.chat({ messages: MESSAGES })),
    chat_without_key: await rejected(unconfigured.chat({ messages: MESSAGES })),
    chat_bad_request: await rejected(service.chat({ messages: MESSAGES, temperature: 'warm' })),
    stream_tool_call: await streamed(service, { messages: MESSAGES, tools: TOOLS }),
    stream_echo: await streamed(service, {
      messages: MESSAGES,
      mock: { scenario: 'echo', token_delay_ms: 100 },
    }),
    stream_wrong_key: await streamed(stranger, { messages: MESSAGES }),
  };
  process.stdout.write(JSON.stringify(result));
}

await main();
