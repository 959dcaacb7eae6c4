"use strict";
// The interactive reference: renders the served spec (openapi.json, beside this page) and sends real calls.
// Every text from the spec or an answer is set with textContent, never as HTML.
(function () {
  const TOKEN = "opgate.docs.token";
  const WORKSPACE = "opgate.docs.workspace";
  let spec = null;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children || []) if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  }

  // Inline `code` spans of the spec's Markdown-ish text, as text nodes and <code> elements.
  function prose(text) {
    const p = el("p");
    String(text || "").split(/(`[^`]*`)/).forEach((part) => {
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) p.appendChild(el("code", { text: part.slice(1, -1) }));
      else if (part) p.appendChild(document.createTextNode(part));
    });
    return p;
  }

  function resolve(schema) {
    let s = schema || {};
    for (let i = 0; i < 10 && s.$ref; i++) {
      const name = s.$ref.split("/").pop();
      s = (spec.components && spec.components.schemas && spec.components.schemas[name]) || {};
    }
    return s;
  }

  function refName(schema) {
    return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
  }

  function typeOf(schema) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema);
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    const alts = schema.anyOf || schema.oneOf;
    if (alts) return alts.map(typeOf).join(" | ");
    let t = schema.type;
    if (Array.isArray(t)) return t.map((x) => (x === "array" ? "array of " + typeOf(schema.items) : x)).join(" | ");
    if (t === "array") return "array of " + typeOf(schema.items);
    return t || "any";
  }

  function fieldsTable(schema) {
    const s = resolve(schema);
    const props = s.properties || {};
    const names = Object.keys(props);
    if (!names.length) return el("p", { class: "muted", text: "No fields: send {}." });
    const required = new Set(s.required || []);
    const rows = names.map((name) => {
      const p = props[name];
      const desc = p.description || resolve(p).description || "";
      return el("tr", {}, [
        el("td", {}, [el("code", { text: name })]),
        el("td", { text: typeOf(p) }),
        el("td", { text: required.has(name) ? "yes" : "" }),
        el("td", {}, [prose(desc)]),
      ]);
    });
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, ["field", "type", "required", "description"].map((h) => el("th", { text: h })))]),
      el("tbody", {}, rows),
    ]);
  }

  function operations() {
    const ops = [];
    for (const [path, item] of Object.entries(spec.paths || {})) {
      const op = item.post;
      if (!op || !path.startsWith("/v1/op/")) continue;
      ops.push({ path, op });
    }
    return ops;
  }

  function headers(op, idempotencyKey) {
    const h = { "Content-Type": "application/json", Accept: "application/json, application/x-ndjson" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) h.Authorization = "Bearer " + token;
    const ws = sessionStorage.getItem(WORKSPACE);
    if (ws) h["X-Workspace-ID"] = ws;
    if (idempotencyKey) h["Idempotency-Key"] = idempotencyKey;
    return h;
  }

  // The value a response link names (`$response.body#/0/id`) in `body` (an object, or the array of lines).
  function pointer(body, expr) {
    const m = /^\$response\.body#(.*)$/.exec(expr || "");
    if (!m) return undefined;
    let v = body;
    for (const raw of m[1].split("/").slice(1)) {
      const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
      if (v === null || typeof v !== "object") return undefined;
      v = v[key];
    }
    return v;
  }

  function showLinks(box, op, body) {
    box.replaceChildren();
    const links = (((op.responses || {})["200"] || {}).links) || {};
    for (const link of Object.values(links)) {
      const fields = Object.entries(link.requestBody || {});
      const values = fields.map(([field, expr]) => [field, pointer(body, expr)]);
      if (!values.length || values.some(([, v]) => v === undefined || v === null)) continue;
      const label = link.operationId + " with " + values.map(([f, v]) => f + " = " + v).join(", ");
      box.appendChild(el("button", {
        type: "button", class: "secondary", text: "→ " + label,
        onclick: () => prefill(link.operationId, Object.fromEntries(values)),
      }));
    }
  }

  function prefill(operationId, values) {
    const section = document.getElementById("op-" + operationId);
    if (!section) return;
    const area = section.querySelector("textarea");
    // Only what the link gives: the example's other ids would name nothing of the caller's.
    area.value = JSON.stringify(values, null, 2);
    section.scrollIntoView({ block: "start" });
    area.focus();
  }

  async function send(op, area, idem, statusEl, answer, linksBox, button) {
    let input;
    try {
      input = area.value.trim() === "" ? {} : JSON.parse(area.value);
    } catch (e) {
      statusEl.className = "status bad";
      statusEl.textContent = "The body is not JSON: " + e.message;
      return;
    }
    button.disabled = true;
    answer.replaceChildren();
    linksBox.replaceChildren();
    statusEl.className = "status";
    statusEl.textContent = "sending…";
    const started = performance.now();
    try {
      const resp = await fetch("v1/op/" + encodeURIComponent(op.operationId).replace(/%2E/gi, "."), {
        method: "POST", headers: headers(op, idem.value.trim()), body: JSON.stringify(input),
        credentials: "omit", cache: "no-store",
      });
      const rid = resp.headers.get("x-request-id") || "";
      const type = resp.headers.get("content-type") || "";
      const head = resp.status + " " + resp.statusText + (rid ? " · " + rid : "");
      statusEl.className = "status " + (resp.ok ? "ok" : "bad");
      statusEl.textContent = head + " · receiving…";
      if (type.startsWith("application/x-ndjson") && resp.body) {
        const items = [];
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        const addLine = (line) => {
          if (!line.trim()) return;
          let value = null;
          try { value = JSON.parse(line); } catch (e) { value = null; }
          const failed = value && typeof value === "object" && value.error !== undefined && Object.keys(value).length === 1;
          if (!failed && value !== null) items.push(value);
          answer.appendChild(el("div", { class: "line" + (failed ? " error" : ""), text: line }));
          statusEl.textContent = head + " · " + items.length + " line" + (items.length === 1 ? "" : "s") + "…";
        };
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffered.indexOf("\n")) >= 0) {
            addLine(buffered.slice(0, nl));
            buffered = buffered.slice(nl + 1);
          }
        }
        addLine(buffered + decoder.decode());
        const ms = Math.round(performance.now() - started);
        statusEl.textContent = head + " · " + items.length + " line" + (items.length === 1 ? "" : "s") + " · " + ms + " ms";
        answer.dataset.lines = String(items.length);
        showLinks(linksBox, op, items);
      } else {
        const text = await resp.text();
        let shown = text;
        let parsed;
        try { parsed = JSON.parse(text); shown = JSON.stringify(parsed, null, 2); } catch (e) { parsed = undefined; }
        answer.appendChild(el("pre", { text: shown }));
        const ms = Math.round(performance.now() - started);
        statusEl.textContent = head + " · " + ms + " ms";
        if (resp.ok && parsed !== undefined) showLinks(linksBox, op, parsed);
      }
      answer.dataset.status = String(resp.status);
    } catch (e) {
      statusEl.className = "status bad";
      statusEl.textContent = "The request failed: " + e.message;
    } finally {
      button.disabled = false;
    }
  }

  function snippet(op, body) {
    const json = JSON.stringify(body);
    const quoted = "'" + json.replace(/'/g, "'\\''") + "'";
    return "curl " + location.origin + "/v1/op/" + op.operationId + " \\\n" +
      "  -H \"Authorization: Bearer $OPGATE_TOKEN\" -H 'Content-Type: application/json' \\\n" +
      "  -d " + quoted;
  }

  function section(entry) {
    const op = entry.op;
    const id = op.operationId;
    const content = ((op.requestBody || {}).content || {})["application/json"] || {};
    const example = content.example !== undefined ? content.example : {};
    const ok = (op.responses || {})["200"] || {};
    const okTypes = Object.keys(ok.content || {});
    const streaming = op["x-streaming"] === true || okTypes.includes("application/x-ndjson");
    const sideEffect = op["x-side-effect"] || "";
    const [resource, action] = id.split(".");

    const area = el("textarea", { spellcheck: "false", "aria-label": id + " request body" });
    area.value = JSON.stringify(example, null, 2);
    const idem = el("input", { type: "text", placeholder: "Idempotency-Key (optional)", "aria-label": "Idempotency-Key", spellcheck: "false" });
    const statusEl = el("span", { class: "status", role: "status" });
    const answer = el("div", { class: "answer", "aria-label": id + " answer" });
    const linksBox = el("div", { class: "links" });
    const button = el("button", { type: "button", class: "send", text: "Send" });
    button.addEventListener("click", () => send(op, area, idem, statusEl, answer, linksBox, button));

    const okSchema = (ok.content || {})[okTypes[0]] || {};
    const answerType = okSchema.schema ? (streaming ? "NDJSON: one " + typeOf((okSchema.schema || {}).items) + " per line" : typeOf(okSchema.schema)) : "";
    const errors = Object.keys(op.responses || {}).filter((s) => s !== "200").join(", ");

    return el("section", { class: "op", id: "op-" + id, "data-operation": id }, [
      el("h2", { text: id }),
      prose(op.summary),
      el("div", { class: "badges" }, [
        op["x-scope"] ? el("span", { class: "badge", text: "scope " + op["x-scope"] }) : null,
        sideEffect ? el("span", { class: "badge " + sideEffect, text: sideEffect }) : null,
        streaming ? el("span", { class: "badge", text: "NDJSON stream" }) : null,
      ]),
      el("div", { class: "paths" }, [
        el("code", { text: "POST /v1/op/" + id }), " or ", el("code", { text: "POST /v1/" + resource + "/" + action }),
      ]),
      el("h4", { text: "Request" }),
      fieldsTable(content.schema),
      el("h4", { text: "Answer" }),
      el("p", { text: answerType + (errors ? " · errors: " + errors : "") }),
      el("div", { class: "try" }, [
        el("strong", { text: "Try it" }),
        area,
        el("div", { class: "row" }, [button, sideEffect === "read" ? null : idem, statusEl]),
        answer,
        linksBox,
      ]),
      el("details", {}, [el("summary", { text: "curl" }), el("pre", { class: "snippet", text: snippet(op, example) })]),
    ]);
  }

  function render() {
    document.getElementById("api-title").textContent = (spec.info && spec.info.title) || "API";
    document.getElementById("api-version").textContent = spec.info && spec.info.version ? "v" + spec.info.version : "";
    const main = document.getElementById("main");
    const nav = document.getElementById("nav-list");
    main.replaceChildren();
    nav.replaceChildren();
    if (spec.info && spec.info.description) main.appendChild(prose(spec.info.description));
    const groups = new Map();
    for (const t of spec.tags || []) groups.set(t.name, []);
    for (const entry of operations()) {
      const tag = (entry.op.tags || [entry.op.operationId.split(".")[0]])[0];
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag).push(entry);
    }
    for (const [tag, entries] of groups) {
      if (!entries.length) continue;
      nav.appendChild(el("h3", { text: tag }));
      main.appendChild(el("h1", { text: tag, id: "tag-" + tag }));
      for (const entry of entries) {
        nav.appendChild(el("a", { href: "#op-" + entry.op.operationId, text: entry.op.operationId, "data-operation": entry.op.operationId }));
        main.appendChild(section(entry));
      }
    }
    if (location.hash) {
      const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
      if (target) target.scrollIntoView();
    }
  }

  function showAuth() {
    const token = sessionStorage.getItem(TOKEN);
    const ws = sessionStorage.getItem(WORKSPACE);
    document.getElementById("auth-state").textContent = token
      ? "authorized (…" + token.slice(-4) + ")" + (ws ? " in " + ws : "")
      : "not authorized";
  }

  document.getElementById("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value.trim();
    const ws = document.getElementById("workspace").value.trim();
    if (token) sessionStorage.setItem(TOKEN, token); else sessionStorage.removeItem(TOKEN);
    if (ws) sessionStorage.setItem(WORKSPACE, ws); else sessionStorage.removeItem(WORKSPACE);
    document.getElementById("token").value = "";
    showAuth();
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(WORKSPACE);
    document.getElementById("token").value = "";
    document.getElementById("workspace").value = "";
    showAuth();
  });
  document.getElementById("filter").addEventListener("input", (e) => {
    const q = e.target.value.trim().toLowerCase();
    for (const a of document.querySelectorAll("nav a")) a.hidden = q !== "" && !a.dataset.operation.includes(q);
    for (const s of document.querySelectorAll("section.op")) s.hidden = q !== "" && !s.dataset.operation.includes(q);
  });
  showAuth();

  fetch("openapi.json", { credentials: "omit", cache: "no-store" })
    .then((r) => { if (!r.ok) throw new Error("openapi.json answered " + r.status); return r.json(); })
    .then((doc) => { spec = doc; render(); document.body.dataset.ready = "true"; })
    .catch((e) => {
      document.getElementById("main").replaceChildren(el("p", { class: "status bad", text: "Could not load the API description: " + e.message }));
    });
})();
