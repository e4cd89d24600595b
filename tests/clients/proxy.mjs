// The seed's Next.js streaming proxy (app/api/llm/chat/route.ts) served by node:http, and a
// "browser" reading the SSE through it with fetch + a body reader.
// Usage: node proxy.mjs <server-url> <api-key>
//
// Prints one JSON object of observations on stdout (the Python test asserts on it); an unexpected
// failure exits non-zero with its stack on stderr.
import http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

// --- the seed's route module, verbatim but for the environment lookups (now arguments) and ----
// --- the TS types ------------------------------------------------------------------------------

function routeModule(LLM_URL, LLM_API_KEY) {
  const runtime = 'nodejs';
  const dynamic = 'force-dynamic';

  async function POST(req) {
    const body = await req.json();
    const upstream = await fetch(`${LLM_URL}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'X-API-Key': LLM_API_KEY,
      },
      body: JSON.stringify({ ...body, stream: true }),
      cache: 'no-store',
    });
    if (!upstream.ok || !upstream.body) {
      return new Response(`llm upstream ${upstream.status}`, { status: 502 });
    }
    return new Response(upstream.body, {
      status: 200,
      headers: {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache, no-transform',
        'Connection': 'keep-alive',
        'X-Accel-Buffering': 'no',
      },
    });
  }

  return { runtime, dynamic, POST };
}

// --- a minimal Next.js stand-in: node:http <-> Web Request/Response, streaming both ways -------
// (Next's own adapter does the same with its internals; node's stream/web bridges suffice here.)

function toWebRequest(req) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    for (const one of Array.isArray(value) ? value : [value]) headers.append(name, one);
  }
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
  return new Request(new URL(req.url, `http://${req.headers.host}`), {
    method: req.method,
    headers,
    body: hasBody ? Readable.toWeb(req) : undefined,
    duplex: 'half',
  });
}

/** Copy a Web Response to the ServerResponse chunk by chunk; when the browser goes away the
 * pipeline fails, which cancels the Web body stream and so the upstream fetch. */
async function sendWebResponse(response, res) {
  res.writeHead(response.status, Object.fromEntries(response.headers));
  res.flushHeaders();
  if (!response.body) return void res.end();
  await pipeline(Readable.fromWeb(response.body), res);
}

function serve(route) {
  const server = http.createServer(async (req, res) => {
    try {
      if (req.method !== 'POST' || req.url !== '/api/llm/chat') {
        res.writeHead(404).end();
        return;
      }
      await sendWebResponse(await route.POST(toWebRequest(req)), res);
    } catch (err) {
      if (err.code === 'ERR_STREAM_PREMATURE_CLOSE') return; // the browser left mid-stream
      if (!res.headersSent) res.writeHead(500).end(String(err));
      else res.destroy(err);
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const address = (server) => `http://127.0.0.1:${server.address().port}/api/llm/chat`;

// --- the browser: fetch the proxy, read the body, parse `data: ` lines until [DONE] ----------

async function browser(url, body, { stopAfter = Infinity, beforeLeaving } = {}) {
  const started = performance.now();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const result = {
    status: response.status,
    headers: Object.fromEntries(response.headers),
    reads: [],
    events: [],
    done: false,
    text: null,
  };
  if (!response.ok) {
    result.text = await response.text();
    return result;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  read: while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    const ms = Math.round(performance.now() - started);
    result.reads.push(ms);
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, end).trimEnd();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith('data: ')) continue;
      const data = line.slice('data: '.length);
      if (data === '[DONE]') {
        result.done = true;
        break read;
      }
      const chunk = JSON.parse(data);
      const choice = chunk.choices?.[0];
      result.events.push({
        ms,
        content: choice?.delta?.content ?? null,
        tool_calls: choice?.delta?.tool_calls ?? null,
        finish_reason: choice?.finish_reason ?? null,
        error: chunk.error ?? null,
      });
      if (result.events.filter((e) => e.content).length >= stopAfter) {
        await beforeLeaving?.(result);
        await reader.cancel(); // the user closed the tab
        break read;
      }
    }
  }
  result.text = result.events.map((e) => e.content ?? '').join('');
  return result;
}

/** Upstream generations in progress, from the service's /health. */
async function running(llmUrl) {
  const health = await (await fetch(`${llmUrl}/health`)).json();
  return health.requests?.running ?? null;
}

async function main() {
  const [llmUrl, key] = process.argv.slice(2);
  const good = await serve(routeModule(llmUrl, key));
  const bad = await serve(routeModule(llmUrl, `not-${key}`));
  const messages = [{ role: 'user', content: 'one two three four five six seven eight' }];
  try {
    const echo = await browser(address(good), {
      messages,
      mock: { scenario: 'echo', token_delay_ms: 100 },
    });
    const toolCall = await browser(address(good), { messages });

    // The user leaves after two words of a stream that would take 8 x 400 ms: the upstream
    // generation must stop long before the 6 x 400 ms it had left.
    const abandoned = await browser(
      address(good),
      { messages, mock: { scenario: 'echo', token_delay_ms: 400 } },
      {
        stopAfter: 2,
        beforeLeaving: async (result) => {
          result.upstream_running_before = await running(llmUrl);
        },
      },
    );
    const left = performance.now();
    let runningAfter = await running(llmUrl);
    while (runningAfter !== 0 && performance.now() - left < 1500) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      runningAfter = await running(llmUrl);
    }
    abandoned.upstream_running_after = runningAfter;
    abandoned.upstream_idle_ms = Math.round(performance.now() - left);

    const unauthorized = await browser(address(bad), { messages });
    process.stdout.write(JSON.stringify({ echo, tool_call: toolCall, abandoned, unauthorized }));
  } finally {
    for (const server of [good, bad]) {
      server.close();
      server.closeAllConnections(); // idle keep-alive sockets would hold the process for 5 s
    }
  }
}

await main();
