/**
 * The few Deno and Supabase Edge Runtime globals these examples use, declared so that
 * `tsc --noEmit -p docs/supabase/functions` checks them without Deno installed. Deno and
 * Supabase bring the real (larger) declarations; this file is never deployed (nothing imports it).
 */

declare namespace Deno {
  interface Env {
    get(key: string): string | undefined;
  }
  const env: Env;

  interface ServeHandlerInfo {
    remoteAddr: { hostname: string; port: number; transport: string };
  }
  type ServeHandler = (request: Request, info: ServeHandlerInfo) => Response | Promise<Response>;
  interface HttpServer {
    finished: Promise<void>;
    shutdown(): Promise<void>;
  }
  function serve(handler: ServeHandler): HttpServer;
}

/** Supabase's Edge Runtime: https://supabase.com/docs/guides/functions/background-tasks */
declare namespace EdgeRuntime {
  /** Keep the instance alive until `promise` settles, without delaying the response. */
  function waitUntil<T>(promise: Promise<T>): void;
}
