// The generated TypeScript SDK against a live gateway: calls, a 10,000-key stream, typed errors,
// idempotent replays, retries after 429, the workspace header and the environment.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import {
  Client,
  ERROR_CLASSES,
  InvalidArgumentError,
  NotFoundError,
  OpgateError,
  PermissionDeniedError,
  RateLimitedError,
  Stream,
  UnauthenticatedError,
  UnavailableError,
} from "../../../sdks/typescript/src/index.js";
import type { KeyDetails } from "../../../sdks/typescript/src/index.js";

// This file runs from build/tests/sdk/typescript/ under this directory.
const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../../../../..");
const ORG = "sdk";
const SEEDED = 10_000;
const MISSING_KEY = "key_01jf3m8v6k2x9q4w7e5r1t0y8z";

const opgate =
  process.env.OPGATE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "debug", "opgate");

let dataDir = "";
let server: ChildProcess | undefined;
let url = "";
let token = "";

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "opgate-sdk-ts-"));
  execFileSync(opgate, ["admin", "seed-keys", "--data-dir", dataDir, "--org", ORG, "--count", String(SEEDED)], {
    stdio: "ignore",
  });
  token = execFileSync(
    opgate,
    ["admin", "create-key", "--data-dir", dataDir, "--org", ORG, "--name", "t", "--permissions", "*"],
    { encoding: "utf8" },
  ).trim();
  server = spawn(opgate, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines = createInterface({ input: server.stderr! });
  url = await new Promise<string>((resolveUrl, reject) => {
    lines.on("line", (line) => {
      const match = /opgate listening on (http:\/\/\S+)/.exec(line);
      if (match) resolveUrl(match[1]);
    });
    server!.on("exit", (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server!.on("exit", r));
    server.kill("SIGTERM");
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

interface Seen {
  at: number;
  status: number;
  headers: Headers;
  sent: Headers;
}

/** A client whose exchanges are recorded through its `fetch` option. */
function recordingClient(options: { token?: string; maxRetries?: number } = {}): { client: Client; seen: Seen[] } {
  const seen: Seen[] = [];
  const recording: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    seen.push({ at: performance.now(), status: response.status, headers: response.headers, sent: new Headers(init?.headers) });
    return response;
  };
  return { client: new Client({ baseUrl: url, token: options.token ?? token, maxRetries: options.maxRetries, fetch: recording }), seen };
}

function client(): Client {
  return new Client({ baseUrl: url, token });
}

async function rejection<T extends OpgateError>(promise: Promise<unknown>, cls: new (...args: never[]) => T): Promise<T> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.equal((e as Error).constructor, cls);
    return e as T;
  }
  assert.fail(`expected ${cls.name}, got success`);
}

test("every operation of the spec has a method", () => {
  const spec = JSON.parse(readFileSync(join(ROOT, "spec", "openapi.json"), "utf8")) as { paths: Record<string, unknown> };
  const ids = Object.keys(spec.paths)
    .filter((p) => p.startsWith("/v1/op/"))
    .map((p) => p.slice("/v1/op/".length));
  assert.ok(ids.length > 20);
  const c = client() as unknown as Record<string, Record<string, unknown>>;
  const camel = (s: string) => s.replace(/_([a-z])/g, (_, ch: string) => ch.toUpperCase());
  for (const id of ids) {
    const [resource, action] = id.split(".");
    assert.equal(typeof c[camel(resource)][camel(action)], "function", id);
  }
});

test("create, then get", async () => {
  const c = client();
  const created = await c.apiKeys.create({ name: "sdk-ts", permissions: ["api_keys:read"] });
  assert.ok(created.key.startsWith("opg_"));
  assert.equal(created.key_details.name, "sdk-ts");
  assert.deepEqual(created.key_details.permissions, ["api_keys:read"]);
  const got = await c.apiKeys.get({ key_id: created.key_details.id });
  assert.deepEqual(got, created.key_details);
  assert.equal((await c.auth.whoami()).org, ORG);
});

test("a stream of ten thousand keys arrives item by item", async () => {
  const c = client();
  const stream = c.apiKeys.list();
  assert.ok(stream instanceof Stream);
  const ids = new Set<string>();
  for await (const key of stream) ids.add((key satisfies KeyDetails).id);
  assert.ok(ids.size >= SEEDED + 1, `${ids.size} keys`);
  const names = (await c.apiKeys.list({ limit: 3 }).toArray()).map((k) => k.name);
  assert.deepEqual(names, ["seed-0", "seed-1", "seed-2"]);
  // Leaving early closes the stream; the client goes on working.
  let n = 0;
  for await (const _ of c.apiKeys.list()) if (++n === 10) break;
  assert.equal((await c.auth.whoami()).org, ORG);
});

test("not found is its own class", async () => {
  const e = await rejection(client().apiKeys.get({ key_id: MISSING_KEY }), NotFoundError);
  assert.ok(e instanceof OpgateError);
  assert.equal(e.status, 404);
  assert.equal(e.code, "not_found");
  assert.equal(e.message, `key_id: no API key \`${MISSING_KEY}\` in this organization`);
  assert.ok(e.requestId?.startsWith("req_"));
  assert.deepEqual(e.details, { code: "not_found", message: e.message, request_id: e.requestId });
  assert.equal(e.streamed, false);
});

test("a bad token is unauthenticated", async () => {
  const bad = new Client({ baseUrl: url, token: "opg_not_a_real_key" });
  const e = await rejection(bad.auth.whoami(), UnauthenticatedError);
  assert.equal(e.status, 401);
  assert.equal(e.code, "unauthenticated");
});

test("invalid input is invalid_argument", async () => {
  const e = await rejection(client().apiKeys.create({ name: "" }), InvalidArgumentError);
  assert.equal(e.status, 400);
  assert.equal(e.code, "invalid_argument");
  assert.match(e.message, /^name:/);
});

test("a missing scope is permission_denied", async () => {
  const reader = await client().apiKeys.create({ name: "ts-reader", permissions: ["api_keys:read"] });
  const limited = new Client({ baseUrl: url, token: reader.key });
  const e = await rejection(limited.workspaces.create({ name: "ts-nope" }), PermissionDeniedError);
  assert.equal(e.status, 403);
  assert.equal(e.code, "permission_denied");
});

test("an idempotency key replays the first answer", async () => {
  const { client: c, seen } = recordingClient();
  const first = await c.workspaces.create({ name: "ts-idem" }, { idempotencyKey: "ts-idem-1" });
  const again = await c.workspaces.create({ name: "ts-idem" }, { idempotencyKey: "ts-idem-1" });
  assert.deepEqual(again, first);
  assert.ok(first.id.startsWith("ws_"));
  assert.equal(seen[0].headers.get("idempotent-replayed"), null);
  assert.equal(seen[1].headers.get("idempotent-replayed"), "true");
  assert.deepEqual(seen.map((s) => s.status), [200, 200]);
});

test("retried writes carry a generated idempotency key; exports none", async () => {
  const { client: c, seen } = recordingClient();
  await c.workspaces.create({ name: "ts-auto-key" });
  await c.apiKeys.create({ name: "ts-export" });
  assert.match(seen[0].sent.get("idempotency-key") ?? "", /^opgate-ts-/);
  assert.equal(seen[1].sent.get("idempotency-key"), null);
});

test("a 429 is retried after Retry-After", async () => {
  const limitedKey = (await client().apiKeys.create({ name: "ts-limited", rate_limit: 60 })).key;
  const { client: limited, seen } = recordingClient({ token: limitedKey, maxRetries: 5 });
  for (let i = 0; i < 200 && !seen.some((s) => s.status === 429); i++) {
    assert.equal((await limited.auth.whoami()).org, ORG);
  }
  const i = seen.findIndex((s) => s.status === 429);
  assert.ok(i >= 0, "the rate limit was never reached");
  const wait = Number(seen[i].headers.get("retry-after"));
  assert.ok(wait >= 1);
  assert.ok(seen[i + 1].at - seen[i].at >= wait * 1000 * 0.95, "retried too soon");
  assert.equal(seen[seen.length - 1].status, 200);
});

test("without retries a 429 throws", async () => {
  const limitedKey = (await client().apiKeys.create({ name: "ts-limited-2", rate_limit: 1 })).key;
  const limited = new Client({ baseUrl: url, token: limitedKey, maxRetries: 0 });
  await limited.auth.whoami();
  const e = await rejection(limited.auth.whoami(), RateLimitedError);
  assert.equal(e.status, 429);
  assert.equal(e.code, "rate_limited");
  assert.ok((e.retryAfter ?? 0) >= 1);
});

test("the workspace header scopes calls", async () => {
  const ws = (await client().workspaces.create({ name: "ts-scoped" })).id;
  const scoped = new Client({ baseUrl: url, token, workspace: ws });
  const key = (await scoped.apiKeys.create({ name: "ts-in-ws" })).key_details;
  assert.equal(key.workspace_id, ws);
  assert.deepEqual((await scoped.apiKeys.list().toArray()).map((k) => k.id), [key.id]);
});

test("the environment configures the client", async () => {
  const saved = { ...process.env };
  process.env.OPGATE_URL = url;
  process.env.OPGATE_TOKEN = token;
  delete process.env.OPGATE_WORKSPACE;
  try {
    const c = new Client();
    assert.equal((await c.auth.whoami()).org, ORG);
    assert.ok(!JSON.stringify(c).includes(token));
  } finally {
    process.env = saved;
  }
});

test("an error line ends a stream with its class", async () => {
  // The gateway's own format for a stream that fails after its first line (contract: one error line).
  const body =
    '{"id":"key_1","name":"a"}\n{"error":{"code":"unavailable","message":"storage is unavailable","request_id":"req_9"}}\n';
  const fake: typeof fetch = async () =>
    new Response(body, { status: 200, headers: { "content-type": "application/x-ndjson" } });
  const c = new Client({ baseUrl: "http://127.0.0.1:9", token: "t", fetch: fake });
  const items: unknown[] = [];
  const e = await rejection(
    (async () => {
      for await (const item of c.apiKeys.list()) items.push(item);
    })(),
    UnavailableError,
  );
  assert.equal(items.length, 1);
  assert.equal(e.status, 503);
  assert.equal(e.code, "unavailable");
  assert.equal(e.requestId, "req_9");
  assert.equal(e.streamed, true);
  assert.equal(e.message, "storage is unavailable");
});

test("error classes cover every code of the spec", () => {
  const spec = JSON.parse(readFileSync(join(ROOT, "spec", "openapi.json"), "utf8")) as {
    components: { schemas: { Code: { oneOf: { const: string }[] } } };
  };
  const codes = spec.components.schemas.Code.oneOf.map((v) => v.const).sort();
  assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), codes);
});
