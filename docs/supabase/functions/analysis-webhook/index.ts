/**
 * analysis-webhook: a Supabase Database Webhook on `public.analyses` (INSERT, UPDATE, DELETE)
 * that logs what happened to each analysis, and forwards those logs to product-analyzer's
 * `POST /v1/logs/edge`, so that they sit in CloudWatch Logs next to the service's own.
 *
 * Secrets (`supabase secrets set ...`, see ../README.md):
 *   PRODUCT_ANALYZER_URL       the service's base URL, e.g. https://api.example.com
 *   EDGE_LOG_TOKEN             the service's EDGE_LOG_TOKEN
 *   ANALYSIS_WEBHOOK_SECRET    the value the webhook sends in its `x-webhook-secret` header
 *   LATENCY_SLO_MS             optional; an analysis slower than this is logged as a warning (10000)
 * Without PRODUCT_ANALYZER_URL or EDGE_LOG_TOKEN the logs go to the console only.
 */

import { createEdgeLogger, edgeLogEndpoint, type EdgeLogger } from "../_shared/edge_logger.ts";

/** The columns of public.analyses this function reads (the table has more). */
interface AnalysisRow {
  id: string;
  user_id: string;
  status: "running" | "succeeded" | "failed";
  cached?: boolean;
  error_code?: string | null;
  timings?: { total?: number } | null;
  report?: { category?: string } | null;
}

/** What a Supabase Database Webhook POSTs. */
interface WebhookPayload {
  type: "INSERT" | "UPDATE" | "DELETE";
  table: string;
  schema: string;
  record: AnalysisRow | null;
  old_record: AnalysisRow | null;
}

// One logger per instance: Supabase reuses an instance for many requests, and the buffer with it.
const logger = createEdgeLogger({
  endpoint: edgeLogEndpoint(Deno.env.get("PRODUCT_ANALYZER_URL")),
  token: Deno.env.get("EDGE_LOG_TOKEN") ?? "",
  fn: "analysis-webhook",
  executionId: Deno.env.get("SB_EXECUTION_ID"),
  region: Deno.env.get("SB_REGION"),
});

const WEBHOOK_SECRET = Deno.env.get("ANALYSIS_WEBHOOK_SECRET") ?? "";
const SLOW_MS = Number(Deno.env.get("LATENCY_SLO_MS") ?? "10000");

Deno.serve(async (request) => {
  const log = logger.child({ request_id: request.headers.get("x-request-id") ?? crypto.randomUUID() });
  try {
    return await handle(request, log);
  } catch (error) {
    log.error("analysis-webhook failed", { error });
    return json({ error: "internal_error" }, 500);
  } finally {
    // Ship this request's logs after the response, without delaying it; flush() never rejects.
    EdgeRuntime.waitUntil(logger.flush());
  }
});

async function handle(request: Request, log: EdgeLogger): Promise<Response> {
  if (request.method !== "POST") return json({ error: "method_not_allowed" }, 405);
  if (!WEBHOOK_SECRET || !(await sameSecret(request.headers.get("x-webhook-secret") ?? "", WEBHOOK_SECRET))) {
    log.warn("webhook refused: wrong or missing x-webhook-secret");
    return json({ error: "unauthorized" }, 401);
  }
  let payload: WebhookPayload;
  try {
    payload = (await request.json()) as WebhookPayload;
  } catch {
    log.warn("webhook refused: body is not JSON");
    return json({ error: "malformed_request" }, 400);
  }
  if (typeof payload !== "object" || payload === null) {
    log.warn("webhook refused: body is not a JSON object");
    return json({ error: "malformed_request" }, 400);
  }
  if (payload.schema !== "public" || payload.table !== "analyses") {
    log.info("webhook ignored: not public.analyses", { schema: payload.schema, table: payload.table });
    return json({ ignored: true }, 200);
  }
  const row = payload.record ?? payload.old_record;
  if (row === null || typeof row !== "object") {
    log.warn("webhook refused: no record", { type: payload.type });
    return json({ error: "malformed_request" }, 400);
  }
  const fields = { analysis_id: row.id, user_id: row.user_id, change: payload.type };
  if (payload.type === "DELETE") {
    log.info("analysis deleted", fields);
  } else if (row.status === "succeeded") {
    const totalMs = row.timings?.total;
    const done = { ...fields, cached: row.cached ?? false, category: row.report?.category, total_ms: totalMs };
    log.info("analysis succeeded", done);
    if (typeof totalMs === "number" && totalMs > SLOW_MS) log.warn("analysis over its latency SLO", { ...done, slo_ms: SLOW_MS });
  } else if (row.status === "failed") {
    log.error("analysis failed", { ...fields, error_code: row.error_code ?? null });
  } else {
    log.debug("analysis running", fields);
  }
  return json({ ok: true }, 200);
}

/** Compare secrets by their SHA-256, so that the time taken says nothing about either. */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const digest = async (text: string) => new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const [a, b] = await Promise.all([digest(given), digest(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function json(body: unknown, status: number): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}
