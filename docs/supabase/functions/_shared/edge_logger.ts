/**
 * A small structured logger for Supabase Edge Functions that forwards its events to
 * product-analyzer's `POST /v1/logs/edge` (which keeps them in CloudWatch Logs).
 *
 *   log.info("msg", {k: v}) ──▶ console (Supabase's own log view keeps working)
 *                           └─▶ bounded buffer ──(maxBatch events, or flushMs after the first)──▶ POST, bearer token
 *                                                                           timeout per attempt, one retry on 429/5xx/network
 *
 * Platform-neutral on purpose: only Web APIs (fetch, AbortSignal.timeout, setTimeout, TextEncoder,
 * CompressionStream when asked for gzip), so the same file runs in Deno, in Supabase's Edge
 * Runtime and in Node 20 (where the tests run it against the real service).
 *
 * Logging never throws into the caller and never blocks it: sends happen in the background.
 * Await `flush()` before the invocation ends; in Supabase hand it to `EdgeRuntime.waitUntil`
 * so that the response is not delayed by it. `flush()` resolves, never rejects, once every
 * event logged before the call has been sent or given up on.
 *
 * Delivery is at most twice per batch (a timed-out attempt may have been accepted and is sent
 * again) and best effort: a full buffer drops its oldest events, and a batch refused twice, or
 * refused for good (401, 404, 413, ...), is dropped. Drops are counted in `stats()` and told to
 * the console once per kind of failure, never with the token.
 */

export type Level = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, unknown>;
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** The console methods the logger echoes to; `globalThis.console` by default. */
export interface ConsoleLike {
  debug(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
}

export interface EdgeLoggerOptions {
  /** Full URL of the endpoint (see `edgeLogEndpoint`); empty: console only. */
  endpoint: string;
  /** EDGE_LOG_TOKEN of the service; empty: console only. */
  token: string;
  /** The function's name, on every event as `fn`. */
  fn: string;
  /** On every event as `execution_id` (Supabase: `Deno.env.get("SB_EXECUTION_ID")`). */
  executionId?: string;
  /** On every event as `region` (Supabase: `Deno.env.get("SB_REGION")`). */
  region?: string;
  /** The fetch to send with; the global one by default. */
  fetch?: FetchLike;
  /** Send once this many events are buffered (default 100, at most 10,000: the endpoint's limit). */
  maxBatch?: number;
  /** Send at most this long after the first buffered event (default 1000 ms). */
  flushMs?: number;
  /** Limit of one POST attempt, via AbortSignal.timeout (default 5000 ms). */
  timeoutMs?: number;
  /** Wait before the one retry, plus up to as much again of jitter (default 500 ms). */
  retryDelayMs?: number;
  /** Longest wait a 429/503's Retry-After may ask for before the retry (default 10,000 ms). */
  maxRetryDelayMs?: number;
  /** Most events kept waiting; past it the oldest go (default 5000). */
  maxBuffer?: number;
  /** Most JSON bytes per POST (default 512 KiB; the endpoint takes 1 MiB by default). */
  maxBatchBytes?: number;
  /** An event over this many JSON bytes keeps its first characters and loses its fields (default 64 KiB). */
  maxEventBytes?: number;
  /** Send `Content-Encoding: gzip` bodies, where CompressionStream exists (default false). */
  gzip?: boolean;
  /** Where the echo goes; `null`: no echo. */
  console?: ConsoleLike | null;
}

export interface EdgeLoggerStats {
  /** Events logged (buffered for sending). */
  logged: number;
  /** Events in batches the service accepted (202). */
  sent: number;
  /** Of those, events the service said it dropped (its own queue was full). */
  droppedByService: number;
  /** Events given up on: a full buffer, or a batch that failed. */
  dropped: number;
  /** Retries made. */
  retries: number;
  /** Batches given up on. */
  failedBatches: number;
  /** Events waiting now. */
  buffered: number;
}

export interface EdgeLogger {
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
  /** A logger whose events also carry `fields` (e.g. a request id); same buffer, same flush. */
  child(fields: Fields): EdgeLogger;
  /** Send everything logged so far; resolves (never rejects) when done or given up on. */
  flush(): Promise<void>;
  stats(): EdgeLoggerStats;
}

/** Where product-analyzer takes Edge Function logs, given its base URL (PRODUCT_ANALYZER_URL). */
export function edgeLogEndpoint(baseUrl: string | undefined): string {
  return baseUrl ? `${baseUrl.replace(/\/+$/, "")}/v1/logs/edge` : "";
}

const ENDPOINT_MAX_EVENTS = 10_000;
const TRUNCATED_MESSAGE_CHARS = 4096;
const RESERVED = ["timestamp", "level", "fn", "execution_id", "region", "event_message"] as const;

interface Pending {
  json: string;
  bytes: number;
}

type Outcome = { ok: true; droppedByService: number } | { ok: false; retry: boolean; why: string; waitMs?: number };

interface Shared {
  readonly options: Required<Omit<EdgeLoggerOptions, "executionId" | "region" | "console" | "fetch">> & {
    executionId?: string;
    region?: string;
  };
  readonly out: ConsoleLike | null;
  readonly fetch: FetchLike | null;
  readonly buffer: Pending[];
  readonly counts: Omit<EdgeLoggerStats, "buffered">;
  timer: ReturnType<typeof setTimeout> | undefined;
  chain: Promise<void>;
  sizeFlushQueued: boolean;
  lastFailure: string;
}

const encoder = new TextEncoder();

function positive(value: number | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  return Math.min(typeof value === "number" && Number.isFinite(value) && value > 0 ? value : fallback, max);
}

export function createEdgeLogger(options: EdgeLoggerOptions): EdgeLogger {
  const out = options.console === undefined ? globalThis.console : options.console;
  const endpoint = options.endpoint ?? "";
  const token = options.token ?? "";
  const maxBatchBytes = positive(options.maxBatchBytes, 512 * 1024);
  const shared: Shared = {
    options: {
      endpoint,
      token,
      fn: options.fn,
      executionId: options.executionId || undefined,
      region: options.region || undefined,
      maxBatch: Math.floor(positive(options.maxBatch, 100, ENDPOINT_MAX_EVENTS)),
      flushMs: positive(options.flushMs, 1000),
      timeoutMs: positive(options.timeoutMs, 5000),
      retryDelayMs: positive(options.retryDelayMs, 500),
      maxRetryDelayMs: positive(options.maxRetryDelayMs, 10_000),
      maxBuffer: Math.floor(positive(options.maxBuffer, 5000)),
      maxBatchBytes,
      maxEventBytes: positive(options.maxEventBytes, 64 * 1024, maxBatchBytes - 2),
      gzip: options.gzip === true,
    },
    out,
    fetch: shippingFetch(options, endpoint, token, out),
    buffer: [],
    counts: { logged: 0, sent: 0, droppedByService: 0, dropped: 0, retries: 0, failedBatches: 0 },
    timer: undefined,
    chain: Promise.resolve(),
    sizeFlushQueued: false,
    lastFailure: "",
  };
  return makeLogger(shared, {});
}

/** The fetch to ship with, or null (console only) without an endpoint URL, a token or a fetch. */
function shippingFetch(options: EdgeLoggerOptions, endpoint: string, token: string, out: ConsoleLike | null) {
  const chosen: FetchLike | undefined =
    options.fetch ?? (typeof fetch === "function" ? fetch.bind(globalThis) : undefined);
  if (!endpoint || !token || chosen === undefined) return null;
  try {
    new URL(endpoint);
  } catch {
    echo(out, "warn", "edge_logger: the log endpoint is not a URL; logging to the console only");
    return null;
  }
  return chosen;
}

function makeLogger(shared: Shared, bound: Fields): EdgeLogger {
  const log = (level: Level) => (message: string, fields?: Fields) => {
    try {
      record(shared, level, message, bound, fields);
    } catch {
      // Logging must never break the function.
    }
  };
  return {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    child: (fields: Fields) => makeLogger(shared, { ...bound, ...fields }),
    flush: () => flush(shared),
    stats: () => ({ ...shared.counts, buffered: shared.buffer.length }),
  };
}

function record(shared: Shared, level: Level, message: string, bound: Fields, fields: Fields | undefined): void {
  const { options } = shared;
  const event: Record<string, unknown> = {
    timestamp: new Date().toISOString(),
    level,
    fn: options.fn,
    execution_id: options.executionId,
    region: options.region,
    event_message: String(message),
  };
  for (const [key, value] of Object.entries({ ...bound, ...(fields ?? {}) })) {
    // A field named like one of ours is kept, renamed, rather than overwrite it.
    event[(RESERVED as readonly string[]).includes(key) ? `field_${key}` : key] = value;
  }
  let json = stringify(event) ?? stringify({ ...pick(event), fields_error: "unserializable" }) ?? "{}";
  let bytes = encoder.encode(json).length;
  if (bytes > options.maxEventBytes) {
    const short = { ...pick(event), event_message: String(message).slice(0, TRUNCATED_MESSAGE_CHARS) };
    json = stringify({ ...short, truncated: true, original_bytes: bytes }) ?? "{}";
    bytes = encoder.encode(json).length;
  }
  echo(shared.out, level, json);
  if (shared.fetch === null) return;
  shared.counts.logged += 1;
  shared.buffer.push({ json, bytes });
  if (shared.buffer.length > options.maxBuffer) {
    const over = shared.buffer.length - options.maxBuffer;
    shared.buffer.splice(0, over);
    shared.counts.dropped += over;
    fail(shared, "edge_logger: buffer full; dropped the oldest events", over);
  }
  if (shared.buffer.length >= options.maxBatch) {
    if (!shared.sizeFlushQueued) {
      shared.sizeFlushQueued = true;
      void flush(shared);
    }
  } else if (shared.timer === undefined) {
    shared.timer = setTimeout(() => {
      shared.timer = undefined;
      void flush(shared);
    }, options.flushMs);
  }
}

function pick(event: Record<string, unknown>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const key of RESERVED) kept[key] = event[key];
  return kept;
}

function echo(out: ConsoleLike | null, level: Level, line: string): void {
  if (out === null) return;
  try {
    out[level](line);
  } catch {
    // A broken console is no reason to fail.
  }
}

/** JSON of `value`, with Errors as {name, message, stack}, bigints as strings, cycles marked; null if impossible. */
function stringify(value: unknown): string | null {
  const ancestors: unknown[] = [];
  try {
    return JSON.stringify(value, function (this: unknown, _key: string, item: unknown) {
      if (typeof item === "bigint") return item.toString();
      if (item instanceof Error) item = { name: item.name, message: item.message, stack: item.stack };
      if (typeof item !== "object" || item === null) return item;
      while (ancestors.length > 0 && ancestors[ancestors.length - 1] !== this) ancestors.pop();
      if (ancestors.includes(item)) return "[Circular]";
      ancestors.push(item);
      return item;
    });
  } catch {
    return null;
  }
}

function flush(shared: Shared): Promise<void> {
  try {
    if (shared.timer !== undefined) {
      clearTimeout(shared.timer);
      shared.timer = undefined;
    }
    // One drain at a time, in order: a flush waits for the ones before it.
    const run = shared.chain.then(() => drain(shared));
    shared.chain = run.catch(() => undefined);
    return shared.chain;
  } catch {
    return Promise.resolve();
  }
}

async function drain(shared: Shared): Promise<void> {
  shared.sizeFlushQueued = false;
  // Only what is here now: events logged while this drain sends wait for the next flush.
  let budget = shared.buffer.length;
  while (budget > 0 && shared.buffer.length > 0 && shared.fetch !== null) {
    const batch = takeBatch(shared, budget);
    budget -= batch.length;
    await ship(shared, batch);
  }
}

function takeBatch(shared: Shared, budget: number): Pending[] {
  const { maxBatch, maxBatchBytes } = shared.options;
  let count = 0;
  let bytes = 2; // [ and ]
  for (const item of shared.buffer) {
    if (count >= Math.min(maxBatch, budget)) break;
    const extra = item.bytes + (count > 0 ? 1 : 0);
    if (count > 0 && bytes + extra > maxBatchBytes) break;
    bytes += extra;
    count += 1;
  }
  return shared.buffer.splice(0, count);
}

async function ship(shared: Shared, batch: Pending[]): Promise<void> {
  const body = `[${batch.map((item) => item.json).join(",")}]`;
  let outcome = await attempt(shared, body);
  if (!outcome.ok && outcome.retry) {
    shared.counts.retries += 1;
    const base = shared.options.retryDelayMs;
    const jittered = base + Math.random() * base;
    await sleep(Math.min(Math.max(outcome.waitMs ?? 0, jittered), shared.options.maxRetryDelayMs));
    outcome = await attempt(shared, body);
  }
  if (outcome.ok) {
    shared.counts.sent += batch.length;
    shared.counts.droppedByService += outcome.droppedByService;
    shared.lastFailure = "";
    return;
  }
  shared.counts.dropped += batch.length;
  shared.counts.failedBatches += 1;
  fail(shared, `edge_logger: could not send logs (${outcome.why})`, batch.length);
}

async function attempt(shared: Shared, body: string): Promise<Outcome> {
  const { endpoint, token, timeoutMs, gzip } = shared.options;
  const send = shared.fetch;
  if (send === null) return { ok: false, retry: false, why: "no endpoint" };
  try {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${token}`,
      "Content-Type": "application/json",
    };
    let payload: BodyInit = body;
    if (gzip && typeof CompressionStream === "function") {
      payload = await gzipped(body);
      headers["Content-Encoding"] = "gzip";
    }
    const response = await send(endpoint, {
      method: "POST",
      headers,
      body: payload,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text().catch(() => "");
    if (response.ok) return { ok: true, droppedByService: droppedIn(text) };
    const retry = response.status === 408 || response.status === 429 || response.status >= 500;
    return { ok: false, retry, why: `HTTP ${response.status}`, waitMs: retryAfterMs(response.headers.get("retry-after")) };
  } catch (error) {
    // Network errors, DNS, and the timeout (a TimeoutError DOMException) all land here.
    const name = typeof error === "object" && error !== null && "name" in error ? String(error.name) : "Error";
    return { ok: false, retry: true, why: name === "TimeoutError" ? `timed out after ${timeoutMs} ms` : name };
  }
}

async function gzipped(text: string): Promise<ArrayBuffer> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return await new Response(stream).arrayBuffer();
}

function droppedIn(text: string): number {
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === "object" && parsed !== null && "dropped" in parsed) {
      const dropped = (parsed as { dropped: unknown }).dropped;
      return typeof dropped === "number" && dropped > 0 ? dropped : 0;
    }
  } catch {
    // A 2xx with an unexpected body still means the events were taken.
  }
  return 0;
}

function retryAfterMs(header: string | null): number | undefined {
  if (header === null || !/^\d+$/.test(header.trim())) return undefined;
  return Number(header.trim()) * 1000;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Tell the console about a kind of failure once, until a send succeeds again (no token, no contents). */
function fail(shared: Shared, why: string, events: number): void {
  if (why === shared.lastFailure) return;
  shared.lastFailure = why;
  echo(shared.out, "warn", `${why}; ${events} events dropped (later drops of this kind are counted, not told)`);
}

