// The Vercel AI SDK 6 (what a Next.js app uses) with its OpenAI provider against a live ddx-llm
// in mock mode, through both of the provider's APIs: `openai.chat(...)` (chat completions) and
// `openai.responses(...)` (the Responses API, the provider's default): generateText, streamText,
// a tool call round trip each way, and for Responses two ways of continuing a conversation
// (the app resending the messages — assistant turns then go as `item_reference`s to stored
// items — and `previousResponseId`).
//
// Usage: node ai_sdk_openai.mjs <server-url> <api-key> <model>
// Prints one JSON object: what the SDK returned for each run, and every HTTP exchange as sent
// and received (the Python test validates each body and event with the OpenAI SDK's types).
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const [url, key, MODEL] = process.argv.slice(2);
const PROMPT = 'What is the weather in Berlin?';
const exchanges = [];
const pending = [];
let scenario = 'echo';

/** Whether a request body already carries a tool result (the round trip's second step). */
function hasToolResult(body) {
  const items = body.input ?? body.messages ?? [];
  return items.some((item) => item.type === 'function_call_output' || item.role === 'tool');
}

// The mock backend's scenario is a vendor field of the body; an app would not send it, so it is
// added here, on the wire: tool_call first, echo once a tool result is there.
async function recordingFetch(input, init) {
  const body = JSON.parse(init.body);
  body.mock = { scenario: hasToolResult(body) ? 'echo' : scenario };
  const response = await fetch(input, { ...init, body: JSON.stringify(body) });
  const exchange = { url: String(input), request: body, status: response.status,
                     contentType: response.headers.get('content-type'), body: null };
  exchanges.push(exchange);
  pending.push(response.clone().text().then((text) => { exchange.body = text; }));
  return response;
}

const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: key, fetch: recordingFetch });

const weather = tool({
  description: 'The current weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `Sunny, 21 degrees in ${city}`,
});

function summary(result) {
  return {
    text: result.text,
    finishReason: result.finishReason,
    usage: result.usage,
    steps: result.steps.map((step) => ({
      finishReason: step.finishReason,
      text: step.text,
      toolCalls: step.toolCalls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input })),
      toolResults: step.toolResults.map((r) => ({ id: r.toolCallId, output: r.output })),
    })),
    responseId: result.providerMetadata?.openai?.responseId ?? null,
  };
}

// streamText reports errors to onError instead of throwing: keep them for the test.
const streamErrors = [];

async function streamed(options) {
  const result = streamText({ ...options, onError: ({ error }) => streamErrors.push(String(error)) });
  const pieces = [];
  for await (const piece of result.textStream) pieces.push(piece);
  return {
    pieces,
    ...summary({
      text: await result.text,
      finishReason: await result.finishReason,
      usage: await result.usage,
      steps: await result.steps,
      providerMetadata: await result.providerMetadata,
    }),
  };
}

async function runs(model) {
  scenario = 'echo';
  const text = await generateText({ model, prompt: PROMPT });
  const stream = await streamed({ model, prompt: PROMPT });
  scenario = 'tool_call';
  const tools = { get_weather: weather };
  const toolTrip = await generateText({ model, prompt: PROMPT, tools, stopWhen: stepCountIs(3) });
  const streamTrip = await streamed({ model, prompt: PROMPT, tools, stopWhen: stepCountIs(3) });
  return { text: summary(text), stream, toolTrip: summary(toolTrip), streamTrip, textResult: text };
}

async function main() {
  const chat = await runs(openai.chat(MODEL));
  const responses = await runs(openai.responses(MODEL));

  // Continue the Responses conversation: the app resends the messages (its assistant turns go
  // as item references, since the provider stores by default) ...
  scenario = 'echo';
  const model = openai.responses(MODEL);
  const messages = [...responses.textResult.response.messages, { role: 'user', content: 'And Paris?' }];
  const resent = await generateText({ model, messages });
  // ... or it names the previous response.
  const previousResponseId = responses.textResult.providerMetadata.openai.responseId;
  const chained = await generateText({
    model, prompt: 'And Rome?', providerOptions: { openai: { previousResponseId } },
  });
  await Promise.all(pending);
  delete chat.textResult;
  delete responses.textResult;
  process.stdout.write(JSON.stringify({
    chat, responses, resent: summary(resent), chained: summary(chained), streamErrors, exchanges,
  }));
}

await main();
