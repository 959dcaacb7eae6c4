/**
 * The transport under every generated method: one `POST /v1/op/<operation_id>` per call, with the token,
 * the workspace, retries with backoff for 429 and 503 (honouring `Retry-After`), timeouts, an
 * `Idempotency-Key` for retried writes, and NDJSON streams decoded a line at a time as they arrive.
 */

import {
  OpgateConnectionError,
  OpgateProtocolError,
  OpgateTimeoutError,
  errorFromLine,
  errorFromResponse,
} from "./errors.js";

/** Where a gateway listens unless told otherwise (`opgate serve`'s default). */
export const DEFAULT_URL = "http://127.0.0.1:8080";

/** The header that selects the workspace a call works in. */
export const WORKSPACE_HEADER = "X-Workspace-ID";

/** How a client reaches its gateway; every field is optional. */
export interface ClientOptions {
  /** Base URL of the gateway; default `OPGATE_URL`, else `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** Bearer token (an API key or a session token); default `OPGATE_TOKEN`. */
  token?: string;
  /** Workspace to work in (`ws_...`), sent as `X-Workspace-ID`; default `OPGATE_WORKSPACE`. */
  workspace?: string;
  /** Milliseconds to wait for a response (for a stream: its headers); default 30,000. */
  timeoutMs?: number;
  /** Extra attempts after a 429 or 503 (or a connection that could not be made); default 2. */
  maxRetries?: number;
  /** The longest `Retry-After` (milliseconds) worth waiting for; a longer one fails at once. Default 60,000. */
  maxRetryDelayMs?: number;
  /** The `fetch` to use (default: the global one): for proxies, logging, tests. */
  fetch?: typeof fetch;
}

/** Per-call options, after the input object. */
export interface RequestOptions {
  /** `X-Request-Id` to send; the gateway generates one otherwise. */
  requestId?: string;
  /** Overrides the client's timeout for this call. */
  timeoutMs?: number;
  /** Aborts the call (and a stream being read). */
  signal?: AbortSignal;
}

/** Per-call options of a write or destructive operation. */
export interface CallOptions extends RequestOptions {
  /**
   * `Idempotency-Key`: a retry with the same key and body gets the first response
   * (`Idempotent-Replayed: true`). Generated when retries are on and none is given.
   */
  idempotencyKey?: string;
}

/** The side-effect class of an operation, which decides how a failed call may be retried. */
export type SideEffect = "read" | "write" | "export" | "destructive";

function environment(name: string): string | undefined {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const value = proc?.env?.[name];
  return value === undefined || value === "" ? undefined : value;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/** 500 ms, 1 s, 2 s, ... up to 8 s, each with up to half of it taken off at random. */
function backoff(attempt: number): number {
  const base = Math.min(500 * 2 ** attempt, 8000);
  return base * (0.5 + Math.random() / 2);
}

function retryAfterMs(response: Response): number | undefined {
  const value = response.headers.get("retry-after");
  if (value === null) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? Math.max(seconds, 0) * 1000 : undefined;
}

function randomKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return `opgate-ts-${c.randomUUID()}`;
  return `opgate-ts-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The items of a streaming operation. Iterate it with `for await`: the request is sent when iteration
 * starts, and each NDJSON line is decoded as it arrives, so memory stays flat over any number of items.
 * An error line that ends a failed stream is thrown as its `OpgateError` subclass (with `streamed` set).
 * Leaving the loop early closes the connection.
 */
export class Stream<T> implements AsyncIterable<T> {
  constructor(private readonly open: () => Promise<Response>) {}

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    const response = await this.open();
    const requestId = response.headers.get("x-request-id") ?? undefined;
    if (response.body === null) return;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    try {
      while (!done) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new OpgateConnectionError(`the stream broke off: ${String(e)}`, { cause: e });
        }
        done = chunk.done;
        buffer += done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
        let newline = buffer.indexOf("\n");
        while (newline >= 0 || (done && buffer.length > 0)) {
          const end = newline >= 0 ? newline : buffer.length;
          const line = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 1);
          newline = buffer.indexOf("\n");
          if (line === "") continue;
          let item: unknown;
          try {
            item = JSON.parse(line);
          } catch (e) {
            throw new OpgateProtocolError(`a stream line is not JSON: ${line.slice(0, 200)}`, {
              status: response.status,
              requestId,
              cause: e,
            });
          }
          const error = errorFromLine(item, requestId);
          if (error !== undefined) throw error;
          yield item as T;
        }
      }
    } finally {
      if (!done) await reader.cancel().catch(() => undefined);
      reader.releaseLock();
    }
  }

  /** Every item, collected into an array (for small streams). */
  async toArray(): Promise<T[]> {
    const items: T[] = [];
    for await (const item of this) items.push(item);
    return items;
  }
}

/**
 * A connection to one gateway with one bearer token and optionally one workspace. Every option falls back
 * to the environment as the `opgate` CLI does (`OPGATE_URL`, `OPGATE_TOKEN`, `OPGATE_WORKSPACE`).
 */
export class BaseClient {
  /** The gateway's base URL, without a trailing slash. */
  readonly baseUrl: string;
  /** The workspace every call names with `X-Workspace-ID`, if any. */
  readonly workspace: string | undefined;
  readonly maxRetries: number;
  readonly maxRetryDelayMs: number;
  readonly timeoutMs: number;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions = {}) {
    const baseUrl = options.baseUrl ?? environment("OPGATE_URL") ?? DEFAULT_URL;
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new TypeError(`\`${baseUrl}\` is not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`\`${baseUrl}\` is not an http:// or https:// URL`);
    }
    if (url.search !== "" || url.hash !== "") {
      throw new TypeError(`\`${baseUrl}\` has a query or fragment; give the gateway's base URL`);
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#token = options.token ?? environment("OPGATE_TOKEN");
    this.workspace = options.workspace ?? environment("OPGATE_WORKSPACE");
    this.maxRetries = options.maxRetries ?? 2;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 60_000;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Never the token. */
  toJSON(): Record<string, unknown> {
    return {
      baseUrl: this.baseUrl,
      workspace: this.workspace,
      token: this.#token ? "<redacted>" : undefined,
    };
  }

  /**
   * Calls any operation by id with a JSON object: the output object. For a streaming operation use
   * `stream`. `retry: false` leaves 503s alone (429s are always retried: the gateway refuses them before
   * the operation runs).
   */
  async call<T = unknown>(
    operation: string,
    input: object = {},
    options: CallOptions & { retry?: boolean } = {},
  ): Promise<T> {
    return this.request<T>(operation, input, options.retry === false ? "export" : "read", options);
  }

  /** Calls any streaming operation by id: its items, as they arrive. */
  stream<T = unknown>(operation: string, input: object = {}, options: CallOptions = {}): Stream<T> {
    return this.requestStream<T>(operation, input, "read", options);
  }

  /** One call answering one JSON object (what the generated methods use). */
  async request<T>(
    operation: string,
    input: object,
    sideEffect: SideEffect,
    options: CallOptions,
  ): Promise<T> {
    const { response, clear } = await this.send(operation, input, sideEffect, options);
    try {
      const requestId = response.headers.get("x-request-id") ?? undefined;
      if ((response.headers.get("content-type") ?? "").trim().startsWith("application/x-ndjson")) {
        await response.body?.cancel();
        throw new OpgateProtocolError(`\`${operation}\` answered a stream where one object was expected`, {
          status: response.status,
          requestId,
        });
      }
      let text: string;
      try {
        text = await response.text();
      } catch (e) {
        throw this.transportError(e, "the response broke off");
      }
      try {
        return JSON.parse(text) as T;
      } catch (e) {
        throw new OpgateProtocolError(`the response is not JSON: ${text.slice(0, 200)}`, {
          status: response.status,
          requestId,
          cause: e,
        });
      }
    } finally {
      clear();
    }
  }

  /** One call answering an NDJSON stream, sent when iteration starts (what the generated methods use). */
  requestStream<T>(
    operation: string,
    input: object,
    sideEffect: SideEffect,
    options: CallOptions,
  ): Stream<T> {
    return new Stream<T>(async () => {
      const { response, clear } = await this.send(operation, input, sideEffect, options);
      // The timeout covers waiting for the stream to start, not reading it.
      clear();
      if (!(response.headers.get("content-type") ?? "").trim().startsWith("application/x-ndjson")) {
        await response.body?.cancel();
        throw new OpgateProtocolError(`\`${operation}\` answered one object where a stream was expected`, {
          status: response.status,
          requestId: response.headers.get("x-request-id") ?? undefined,
        });
      }
      return response;
    });
  }

  private async send(
    operation: string,
    input: object,
    sideEffect: SideEffect,
    options: CallOptions,
  ): Promise<{ response: Response; clear: () => void }> {
    const body = JSON.stringify(input ?? {});
    if (!body.startsWith("{")) throw new TypeError("the input must be a JSON object");
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (this.#token) headers["Authorization"] = `Bearer ${this.#token}`;
    if (this.workspace) headers[WORKSPACE_HEADER] = this.workspace;
    if (options.requestId !== undefined) headers["X-Request-Id"] = options.requestId;
    // A write or destructive call may be retried after a 503 only under one Idempotency-Key (the gateway
    // then runs it at most once); export calls refuse the header, so a 503 is not retried for them.
    const idempotent = sideEffect === "write" || sideEffect === "destructive";
    let key = options.idempotencyKey;
    if (key === undefined && idempotent && this.maxRetries > 0) key = randomKey();
    if (key !== undefined) headers["Idempotency-Key"] = key;
    const retryStatuses = sideEffect === "export" ? [429] : [429, 503];
    const url = `${this.baseUrl}/v1/op/${operation}`;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;

    for (let attempt = 0; ; attempt++) {
      const controller = new AbortController();
      const onAbort = () => controller.abort(options.signal?.reason);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, timeoutMs);
      const clear = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      };
      let response: Response;
      try {
        response = await this.#fetch(url, { method: "POST", headers, body, signal: controller.signal });
      } catch (e) {
        clear();
        if (timedOut)
          throw new OpgateTimeoutError(`${operation} timed out after ${timeoutMs} ms`, { cause: e });
        if (options.signal?.aborted) throw e;
        // fetch fails this way only when no answer came; a refused connection never reached the gateway.
        if (attempt < this.maxRetries && isConnectionRefused(e)) {
          await sleep(backoff(attempt), options.signal);
          continue;
        }
        throw this.transportError(e, `cannot reach ${this.baseUrl}`);
      }
      if (response.ok) return { response, clear };
      let text = "";
      try {
        text = await response.text();
      } catch {
        text = "";
      } finally {
        clear();
      }
      if (retryStatuses.includes(response.status) && attempt < this.maxRetries) {
        const delay = retryAfterMs(response) ?? backoff(attempt);
        if (delay <= this.maxRetryDelayMs) {
          await sleep(delay, options.signal);
          continue;
        }
      }
      throw errorFromResponse(
        response.status,
        text,
        response.headers.get("x-request-id") ?? undefined,
        response.headers,
      );
    }
  }

  private transportError(e: unknown, what: string): OpgateConnectionError {
    const cause = (e as { cause?: { message?: string } })?.cause?.message;
    return new OpgateConnectionError(`${what}: ${cause ?? String(e)}`, { cause: e });
  }
}

function isConnectionRefused(e: unknown): boolean {
  const code = (e as { cause?: { code?: string } })?.cause?.code;
  return code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN";
}
