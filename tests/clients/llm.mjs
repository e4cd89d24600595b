// The seed's Next.js service-side client (app/lib/llm.ts) with the OpenAI Node SDK, run against a
// live ddx-llm in mock mode.  Usage: node llm.mjs <server-url> <api-key>
//
// Prints one JSON object of observations on stdout (the Python test asserts on it); an unexpected
// failure exits non-zero with its stack on stderr.
import OpenAI from 'openai';

// --- the seed, verbatim but for the environment lookups (now arguments) and the TS types -----

export function llmClient(LLM_URL, LLM_API_KEY) {
  return new OpenAI({
    baseURL: `${LLM_URL}/v1`,
    apiKey: LLM_API_KEY ?? 'dummy',
  });
}

export async function chat(LLM_URL, LLM_API_KEY, LLM_MODEL, prompt) {
  const r = await llmClient(LLM_URL, LLM_API_KEY).chat.completions.create({
    model: LLM_MODEL ?? 'mlx-community/Qwen3-4B-Instruct-2507-4bit',
    messages: [{ role: 'user', content: prompt }],
    stream: false,
  });
  return r.choices[0]?.message?.content ?? '';
}

// --- what a developer does next with the same client ----------------------------------------

const MODEL = 'mlx-community/Qwen3-4B-Instruct-2507-4bit';
const PROMPT = 'What is the weather in Berlin?';
const USER = [{ role: 'user', content: PROMPT }];

/** The SDK error as plain data: class, status, what it kept of our {code, message, detail}. */
function describeError(err) {
  return {
    class: err.constructor.name,
    isAPIError: err instanceof OpenAI.APIError,
    status: err.status ?? null,
    message: err.message,
    error: err.error ?? null,
    code: err.code ?? null,
    requestID: err.requestID ?? null,
  };
}

async function capture(promise) {
  try {
    await promise;
    return { thrown: false };
  } catch (err) {
    if (!(err instanceof OpenAI.OpenAIError)) throw err;
    return { thrown: true, ...describeError(err) };
  }
}

async function toolCallStream(client) {
  const calls = [];
  let finish = null;
  let chunks = 0;
  const stream = await client.chat.completions.create({ model: MODEL, messages: USER, stream: true });
  for await (const chunk of stream) {
    chunks += 1;
    const choice = chunk.choices[0];
    if (!choice) continue;
    for (const delta of choice.delta.tool_calls ?? []) {
      const call = (calls[delta.index] ??= { id: '', name: '', arguments: '' });
      call.id += delta.id ?? '';
      call.name += delta.function?.name ?? '';
      call.arguments += delta.function?.arguments ?? '';
    }
    finish = choice.finish_reason ?? finish;
  }
  return { chunks, calls, finish_reason: finish };
}

async function echoStream(client, mock) {
  const started = performance.now();
  const pieces = [];
  let finish = null;
  // `mock` is not in the SDK's types: the Node SDK sends the body object as given (as Python's
  // extra_body would), so a vendor field needs no special call.
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: USER,
    stream: true,
    mock,
  });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) {
      pieces.push({ text: choice.delta.content, ms: Math.round(performance.now() - started) });
    }
    finish = choice?.finish_reason ?? finish;
  }
  return { text: pieces.map((p) => p.text).join(''), pieces, finish_reason: finish };
}

async function failingStream(client) {
  const received = [];
  const outcome = await capture(
    (async () => {
      const stream = await client.chat.completions.create({
        model: MODEL,
        messages: USER,
        stream: true,
        mock: { scenario: 'error' },
      });
      for await (const chunk of stream) received.push(chunk.choices[0]?.delta?.content ?? '');
    })(),
  );
  return { ...outcome, received: received.join('') };
}

async function main() {
  const [url, key] = process.argv.slice(2);
  const client = llmClient(url, key);

  const completion = await client.chat.completions.create({ model: MODEL, messages: USER });
  const seedChat = await chat(url, key, undefined, PROMPT);
  const wrongKey = await capture(chat(url, `not-${key}`, undefined, PROMPT));
  const badRequest = await capture(
    client.chat.completions.create({ model: MODEL, messages: USER, n: 2 }),
  );
  const unknownModel = await capture(chat(url, key, 'no-such/model', PROMPT));
  const { data: models } = await client.models.list();

  const result = {
    sdk_version: OpenAI.VERSION ?? null,
    completion: {
      message: completion.choices[0].message,
      finish_reason: completion.choices[0].finish_reason,
      usage: completion.usage,
    },
    seed_chat: seedChat,
    tool_call_stream: await toolCallStream(client),
    echo_stream: await echoStream(client, { scenario: 'echo', token_delay_ms: 20 }),
    error_stream: await failingStream(client),
    wrong_key: wrongKey,
    bad_request: badRequest,
    unknown_model: unknownModel,
    model_ids: models.map((m) => m.id),
  };
  process.stdout.write(JSON.stringify(result));
}

await main();
