// An MCP session with the official TypeScript SDK's client (Streamable HTTP transport) against the real
// gateway: initialize, tools/list for keys with different scopes (the SDK checks every tool's schemas),
// tools/call of a read, an idempotent write and its replay, a destructive call, a scope refusal, a stream
// page by page (the SDK validates each page against the tool's output schema), and an unknown tool.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../..");
const opgate =
  process.env.OPGATE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "debug", "opgate");
const ORG = "agents";

let dataDir = "";
let server;
let url = "";
let admin = "";
let reader = "";

function key(permissions) {
  return execFileSync(
    opgate,
    ["admin", "create-key", "--data-dir", dataDir, "--org", ORG, "--name", "mcp", "--permissions", permissions],
    { encoding: "utf8" },
  ).trim();
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "opgate-mcp-client-"));
  execFileSync(opgate, ["admin", "seed-keys", "--data-dir", dataDir, "--org", ORG, "--count", "120"], {
    stdio: "ignore",
  });
  admin = key("*");
  reader = key("api_keys:read");
  server = spawn(opgate, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines = createInterface({ input: server.stderr });
  url = await new Promise((resolveUrl, reject) => {
    lines.on("line", (line) => {
      const match = /opgate listening on (http:\/\/\S+)/.exec(line);
      if (match) resolveUrl(match[1]);
    });
    server.on("exit", (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
});

after(() => {
  server?.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
});

async function connect(token) {
  const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  const client = new Client({ name: "opgate-mcp-client-test", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

/** The contract's error of a tool error result. */
function contractError(result) {
  assert.equal(result.isError, true, JSON.stringify(result));
  return JSON.parse(result.content[0].text).error;
}

test("a session: initialize, list, read, idempotent write, destructive call, refusal, stream", async () => {
  const { client, transport } = await connect(admin);
  assert.equal(transport.protocolVersion, "2025-11-25");
  assert.equal(client.getServerVersion().name, "opgate");
  assert.deepEqual(client.getServerCapabilities().tools, { listChanged: false });

  const { tools } = await client.listTools();
  const byName = new Map(tools.map((t) => [t.name, t]));
  assert.ok(byName.size >= 29, `${byName.size} tools`);
  assert.equal(byName.get("api_keys.list").annotations.readOnlyHint, true);
  assert.equal(byName.get("api_keys.revoke").annotations.destructiveHint, true);
  assert.match(byName.get("api_keys.create").description, /secret material/);

  const whoami = await client.callTool({ name: "auth.whoami", arguments: {} });
  assert.equal(whoami.isError, false);
  assert.equal(whoami.structuredContent.org, ORG);

  const created = await client.callTool({
    name: "workspaces.create",
    arguments: { name: "from-an-agent", idempotency_key: "agent-1" },
  });
  assert.equal(created.isError, false);
  const replayed = await client.callTool({
    name: "workspaces.create",
    arguments: { name: "from-an-agent", idempotency_key: "agent-1" },
  });
  assert.deepEqual(replayed.structuredContent, created.structuredContent);
  assert.deepEqual(replayed._meta, { "opgate/idempotent_replayed": true });

  const deleted = await client.callTool({
    name: "workspaces.delete",
    arguments: { workspace_id: created.structuredContent.id },
  });
  assert.equal(deleted.isError, false, JSON.stringify(deleted));

  const missing = await client.callTool({ name: "api_keys.get", arguments: { key_id: "key_01jf3m8v6k2x9q4w7e5r1t0y8z" } });
  assert.equal(contractError(missing).code, "not_found");

  // A stream, page by page: the SDK checks each page against the tool's output schema.
  const ids = [];
  let cursor;
  let pages = 0;
  do {
    const page = await client.callTool({ name: "api_keys.list", arguments: cursor ? { limit: 50, cursor } : { limit: 50 } });
    assert.equal(page.isError, false);
    assert.ok(page.structuredContent.items.length <= 50);
    ids.push(...page.structuredContent.items.map((k) => k.id));
    cursor = page.structuredContent.next_cursor;
    pages += 1;
  } while (cursor);
  assert.equal(ids.length, 122, "120 seeded keys and the two made here");
  assert.equal(new Set(ids).size, ids.length);
  assert.equal(pages, 3);

  await assert.rejects(client.callTool({ name: "nope.nope", arguments: {} }), /unknown tool `nope.nope`/);
  await client.close();
});

test("a reader sees its tools only, and is refused the others as tool errors", async () => {
  const { client } = await connect(reader);
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), ["api_keys.get", "api_keys.list", "auth.whoami"]);
  const refused = await client.callTool({ name: "api_keys.revoke", arguments: { key_id: "key_01jf3m8v6k2x9q4w7e5r1t0y8z" } });
  const error = contractError(refused);
  assert.equal(error.code, "permission_denied");
  assert.match(error.message, /requires scope `api_keys:write`/);
  await client.close();
});

test("a bad token is refused at connect with 401", async () => {
  await assert.rejects(connect("opg_not_a_real_key"), /401|Unauthorized|unauthenticated/i);
});
