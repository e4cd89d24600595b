// The Vercel AI SDK 6 with its Anthropic provider (@ai-sdk/anthropic), as a Next.js app uses it,
// against a live ddx-llm's Messages surface in mock mode.  Usage:
//   node ai_sdk_anthropic.mjs <server-url> <api-key> <model-id>
//
// Prints one JSON object of observations on stdout (tests/live/test_messages_live.py asserts on
// it); an unexpected failure exits non-zero with its stack on stderr.
//
// The mock backend's scenario rides in the request's vendor field `mock`, for which the provider
// has no option: the provider's `fetch` (a documented option) adds it to the JSON body.  The
// application code — generateText, streamText, tools — is what an app writes.
import { createAnthropic } from '@ai-sdk/anthropic';
import { APICallError, generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

globalThis.AI_SDK_LOG_WARNINGS = false; // stdout carries the observations only

const [url, apiKey, MODEL] = process.argv.slice(2);
const PROMPT = 'What is the weather in Berlin today';
const sent = []; // every body the provider sent, after the mock field was added

function anthropic(pickScenario) {
  return createAnthropic({
    baseURL: `${url}/v1`,
    apiKey,
    fetch: async (input, init) => {
      const body = JSON.parse(init.body);
      const mock = pickScenario(body);
      if (mock) body.mock = mock;
      sent.push(body);
      return fetch(input, { ...init, body: JSON.stringify(body) });
    },
  });
}

const echo = (delay = 0) => () => ({ scenario: 'echo', token_delay_ms: delay });
/** A tool call first (the mock's default), then, once the tool result is in, the echo. */
const toolThenEcho = (body) => {
  const last = body.messages.at(-1);
  const answered = Array.isArray(last.content) && last.content.some((b) => b.type === 'tool_result');
  return answered ? { scenario: 'echo' } : null;
};

const weather = tool({
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, forecast: 'sunny' }),
});

async function generated() {
  const result = await generateText({
    model: anthropic(echo())(MODEL),
    prompt: PROMPT,
    maxOutputTokens: 64,
    maxRetries: 0,
  });
  return {
    text: result.text,
    finishReason: result.finishReason,
    usage: { input: result.usage.inputTokens, output: result.usage.outputTokens },
    responseId: result.response.id,
    modelId: result.response.modelId,
    warnings: result.warnings,
  };
}

async function stopped() {
  const result = await generateText({
    model: anthropic(echo())(MODEL),
    prompt: PROMPT,
    maxOutputTokens: 64,
    stopSequences: ['Berlin'],
    maxRetries: 0,
  });
  return {
    text: result.text,
    finishReason: result.finishReason,
    rawFinishReason: result.rawFinishReason ?? null,
    stopSequence: result.providerMetadata?.anthropic?.stopSequence ?? null,
  };
}

async function streamed() {
  const started = performance.now();
  const times = [];
  const pieces = [];
  const result = streamText({ model: anthropic(echo(40))(MODEL), prompt: PROMPT, maxRetries: 0 });
  for await (const piece of result.textStream) {
    pieces.push(piece);
    times.push(Math.round(performance.now() - started));
  }
  const usage = await result.usage;
  return {
    pieces,
    times,
    text: await result.text,
    finishReason: await result.finishReason,
    usage: { input: usage.inputTokens, output: usage.outputTokens },
  };
}

async function reasoned() {
  const result = await generateText({
    model: anthropic(() => ({ scenario: 'reasoning' }))(MODEL),
    prompt: PROMPT,
    maxRetries: 0,
  });
  return { reasoning: result.reasoningText ?? null, text: result.text };
}

async function toolRoundTrip() {
  const result = await generateText({
    model: anthropic(toolThenEcho)(MODEL),
    prompt: PROMPT,
    tools: { get_weather: weather },
    stopWhen: stepCountIs(2),
    maxRetries: 0,
  });
  const [first, second] = result.steps;
  const requests = sent.slice(-2);
  return {
    steps: result.steps.length,
    calls: first.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
    results: first.toolResults.map((r) => ({ id: r.toolCallId, output: r.output })),
    firstFinish: first.finishReason,
    finalText: second?.text ?? null,
    finalFinish: second?.finishReason ?? null,
    sentTools: requests[0].tools,
    sentResult: requests[1].messages.at(-1),
  };
}

async function streamedToolCall() {
  const result = streamText({
    model: anthropic(() => null)(MODEL),
    prompt: PROMPT,
    tools: { get_weather: tool({ inputSchema: z.object({ city: z.string() }) }) },
    maxRetries: 0,
  });
  const inputDeltas = [];
  const calls = [];
  for await (const part of result.fullStream) {
    if (part.type === 'tool-input-delta') inputDeltas.push(part.delta);
    if (part.type === 'tool-call') calls.push({ name: part.toolName, input: part.input });
  }
  return { inputDeltas, calls, finishReason: await result.finishReason };
}

async function failures() {
  let notFound = null;
  try {
    await generateText({ model: anthropic(() => null)('claude-nope'), prompt: 'hi', maxRetries: 0 });
  } catch (err) {
    notFound = {
      isAPICallError: APICallError.isInstance(err),
      status: err.statusCode ?? null,
      message: err.message,
      retryable: err.isRetryable ?? null,
    };
  }
  const errors = [];
  const result = streamText({
    model: anthropic(() => ({ scenario: 'error' }))(MODEL),
    prompt: PROMPT,
    maxRetries: 0,
    onError: ({ error }) => errors.push(error),
  });
  const text = [];
  for await (const piece of result.textStream) text.push(piece);
  return { notFound, midStream: { text: text.join(''), errors } };
}

const observations = {
  generated: await generated(),
  stopped: await stopped(),
  streamed: await streamed(),
  reasoned: await reasoned(),
  toolRoundTrip: await toolRoundTrip(),
  streamedToolCall: await streamedToolCall(),
  failures: await failures(),
};
console.log(JSON.stringify(observations));
