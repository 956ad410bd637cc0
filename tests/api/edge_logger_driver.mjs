// Drives the compiled docs/supabase/functions/_shared/edge_logger.ts (and, in the `webhook`
// scenario, the compiled analysis-webhook/index.ts) in Node 20 (global fetch,
// AbortSignal.timeout) against a running product-analyzer; tests/api/test_edge_function_example.py runs it.
//
//   node edge_logger_driver.mjs SCENARIO MODULE_JS ENDPOINT TOKEN [UNREACHABLE_ENDPOINT]
//
// Logs as an Edge Function would, awaits flush(), and prints one line `RESULT {json}` last on
// stdout. Any exception or unhandled rejection exits non-zero, which is what the test looks for.
import { pathToFileURL } from "node:url";

const [scenario, modulePath, endpoint, token, unreachable] = process.argv.slice(2);
const { createEdgeLogger } = scenario === "webhook" ? {} : await import(pathToFileURL(modulePath).href);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const realFetch = globalThis.fetch.bind(globalThis);

/** A fetch whose first call fails as `how` says (without reaching the service), then the real one. */
function failingOnce(how) {
  let calls = 0;
  const wrapped = async (url, init) => {
    calls += 1;
    if (calls === 1) {
      if (how === "503") return new Response('{"error":"upstream_unavailable"}', { status: 503 });
      if (how === "network") throw new TypeError("fetch failed");
      if (how === "hang") {
        // Never answers: only the logger's AbortSignal.timeout ends this attempt. Node's timeout timer
        // does not keep the process alive (a real pending socket would), so this timer stands in for it.
        const pending = setTimeout(() => {}, 30_000);
        return await new Promise((_, reject) =>
          init.signal.addEventListener("abort", () => {
            clearTimeout(pending);
            reject(init.signal.reason);
          }),
        );
      }
    }
    return realFetch(url, init);
  };
  wrapped.calls = () => calls;
  return wrapped;
}

/** Wait (at most 5 s) for `done()`, then give the logger's stats. */
async function until(done, logger) {
  for (let waited = 0; !done() && waited < 5000; waited += 20) await sleep(20);
  return logger.stats();
}

const base = { endpoint, token, fn: "analysis-webhook", executionId: "exec-1", region: "ca-central-1" };
const result = {};

if (scenario === "deliver") {
  // Time-based: one event and no flush(); it goes flushMs later.
  const timed = createEdgeLogger({ ...base, flushMs: 100 });
  timed.info("instance started", { scenario });
  result.timed = await until(() => timed.stats().sent === 1, timed);

  // Size-based: the time-based flush is a minute away; the third event fills a batch (maxBatch 3).
  const logger = createEdgeLogger({ ...base, maxBatch: 3, flushMs: 60_000 });
  const request = logger.child({ request_id: "req-1" });
  request.info("webhook received", { change: "INSERT", analysis_id: "a-1" });
  request.warn("analysis over its latency SLO", { total_ms: 12345.6, slo_ms: 10000 });
  request.error("analysis failed", { error: new Error("boom"), error_code: "vision_model_error" });
  result.afterFullBatch = await until(() => logger.stats().sent === 3, logger);

  // Less than a batch, sent by flush() as a Supabase function would: EdgeRuntime.waitUntil(logger.flush()).
  const circular = { table: "analyses" };
  circular.self = circular;
  request.info("payload", { payload: circular, big: 12n, level: "not-the-level" });
  request.debug("done", { n: 5 });
  await logger.flush();
  result.main = logger.stats();

  const encodings = [];
  const recording = (url, init) => {
    encodings.push(init.headers["Content-Encoding"] ?? "identity");
    return realFetch(url, init);
  };
  const zipped = createEdgeLogger({ ...base, fn: "gzip-fn", gzip: true, fetch: recording });
  zipped.info("compressed 1");
  zipped.info("compressed 2", { text: "x".repeat(5000) });
  await zipped.flush();
  result.gzip = { ...zipped.stats(), encodings };
} else if (scenario === "retry") {
  for (const how of ["503", "network", "hang"]) {
    const fetch = failingOnce(how);
    const timeoutMs = how === "hang" ? 1000 : 5000; // the retry is real: leave it room on a busy machine
    const logger = createEdgeLogger({ ...base, fn: `retry-${how}`, fetch, timeoutMs, retryDelayMs: 20 });
    logger.info(`first ${how}`);
    logger.info(`second ${how}`);
    await logger.flush();
    result[how] = { ...logger.stats(), calls: fetch.calls() };
  }
} else if (scenario === "refused") {
  const wrong = createEdgeLogger({ ...base, token: "not-the-token", retryDelayMs: 20 });
  for (let i = 0; i < 3; i++) wrong.info(`refused ${i}`);
  await wrong.flush();
  await wrong.flush(); // nothing left: resolves at once
  result.wrongToken = wrong.stats();

  const down = createEdgeLogger({ ...base, endpoint: unreachable, retryDelayMs: 20, timeoutMs: 1000 });
  down.error("nobody listens");
  await down.flush();
  result.unreachable = down.stats();
} else if (scenario === "webhook") {
  // The example function itself (MODULE_JS is the compiled analysis-webhook/index.js), with
  // stand-ins for the two globals Supabase provides: Deno.env/Deno.serve and EdgeRuntime.waitUntil.
  const env = {
    PRODUCT_ANALYZER_URL: endpoint.replace(/\/v1\/logs\/edge$/, ""),
    EDGE_LOG_TOKEN: token,
    ANALYSIS_WEBHOOK_SECRET: "whsec-7f3a91c2e5",
    SB_EXECUTION_ID: "exec-webhook",
    SB_REGION: "ca-central-1",
  };
  let handler;
  const background = [];
  globalThis.Deno = { env: { get: (key) => env[key] }, serve: (h) => ((handler = h), {}) };
  globalThis.EdgeRuntime = { waitUntil: (promise) => void background.push(promise) };
  let posted = 0; // log POSTs the service has answered
  globalThis.fetch = async (url, init) => {
    const response = await realFetch(url, init);
    posted += 1;
    return response;
  };
  await import(pathToFileURL(modulePath).href);

  const call = async (body, secret = "whsec-7f3a91c2e5") => {
    const request = new Request("http://functions.local/analysis-webhook", {
      method: "POST",
      headers: { "content-type": "application/json", "x-webhook-secret": secret },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const response = await handler(request, { remoteAddr: { hostname: "127.0.0.1", port: 1, transport: "tcp" } });
    return response.status;
  };
  const row = { id: "a-1", user_id: "u-1", cached: false, report: { category: "shoes" } };
  const change = (type, record) => ({ type, table: "analyses", schema: "public", record, old_record: null });
  const first = await call(change("UPDATE", { ...row, status: "succeeded", timings: { total: 12000 } }));
  result.postedAtFirstResponse = posted; // 0: the response did not wait for its logs
  result.statuses = [
    first,
    await call(change("UPDATE", { ...row, id: "a-2", status: "failed", error_code: "vision_model_error" })),
    await call(change("INSERT", { ...row, status: "running" }), "wrong-secret"),
    await call("{not json"),
  ];
  result.pendingAfterResponses = background.length;
  await Promise.all(background); // what Supabase does before it ends the instance
  result.postedAtEnd = posted;
} else {
  throw new Error(`unknown scenario ${scenario}`);
}

console.log(`RESULT ${JSON.stringify(result)}`);
