//! The Markdown API reference, generated from the committed OpenAPI document (not from the code), so the
//! reference always says what the published spec says: an index, one page per resource, and a page of types.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The banner at the top of every generated page.
pub const GENERATED_HEADER: &str =
    "<!-- Generated from spec/openapi.json by scripts/gen-spec. Do not edit: edit the code and regenerate. -->";

/// Resources the `opgate` CLI has typed commands for: operation `<resource>.<action>` is
/// `opgate <resource> <action>` with one `--flag` per input field, underscores turned into hyphens
/// (`api_keys.create` with `rate_limit` is `opgate api-keys create --rate-limit N`), and `--clear-<field>` to
/// send `null` where the field's description gives `null` a meaning ("`null` clears it"). Every operation is
/// also documented as `opgate call <id> '<json>'`.
pub const CLI_RESOURCES: &[&str] = &[
    "api_keys",
    "auth",
    "audit",
    "workspaces",
    "environments",
    "service_accounts",
    "webhooks",
];

/// The reference pages for `spec`: file name (relative to `docs/api-reference/`) to contents.
pub fn reference(spec: &Value) -> Result<BTreeMap<String, String>, String> {
    let ops = operations(spec)?;
    let schemas = spec
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or("the spec has no components.schemas")?;
    let mut pages = BTreeMap::new();
    pages.insert("index.md".to_owned(), index(spec, &ops)?);
    let mut resources: Vec<&str> = ops.iter().map(|o| o.resource.as_str()).collect();
    resources.dedup();
    for resource in resources {
        let mine: Vec<&Op> = ops.iter().filter(|o| o.resource == resource).collect();
        pages.insert(
            format!("{resource}.md"),
            resource_page(resource, &mine, schemas),
        );
    }
    pages.insert("types.md".to_owned(), types_page(schemas));
    Ok(pages)
}

/// `GET /llms.txt` of a gateway serving `spec` (the [llms.txt](https://llmstxt.org) convention): the title,
/// the description as a quote, how to call an operation (HTTP or MCP), then one line per operation linking
/// to its section of the Markdown reference served under `/docs/` (`pages`, from [`reference()`]). Only pages
/// that exist are linked, so every link answers.
pub fn llms_txt(spec: &Value, pages: &BTreeMap<String, String>) -> String {
    let text = |pointer: &str| spec.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let title = Some(text("/info/title"))
        .filter(|t| !t.is_empty())
        .unwrap_or("API");
    let mut out = format!("# {title}\n\n");
    let description = text("/info/description")
        .split("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ");
    if !description.trim().is_empty() {
        out.push_str(&format!("> {}\n\n", description.trim()));
    }
    out.push_str(
        "Every operation is `POST /v1/op/<operation_id>` with `Authorization: Bearer <token>` and a JSON object \
         body; the answer is the output object, or NDJSON (one object per line) for a stream. AI agents can call \
         the same operations as MCP tools at `POST /mcp` (Streamable HTTP, the same Bearer token): each tool is \
         named by its operation id and shows only to tokens holding its scope. The reference pages below are \
         Markdown.\n\n## Operations\n\n",
    );
    for op in operations(spec).unwrap_or_default() {
        let page = format!("{}.md", op.resource);
        if !pages.contains_key(&page) {
            continue;
        }
        out.push_str(&format!(
            "- [{id}](/docs/{page}#{anchor}): {summary}{stream} Scope {scope}, side effect `{side}`.\n",
            id = op.id,
            anchor = slug(&op.id),
            summary = op.summary.trim(),
            stream = if op.streaming { " (a stream)" } else { "" },
            scope = op.scope,
            side = op.side_effect,
        ));
    }
    let mut optional = Vec::new();
    if pages.contains_key("index.md") {
        optional.push("- [Calling conventions, scopes and errors](/docs/index.md)\n");
    }
    if pages.contains_key("types.md") {
        optional.push("- [Every type](/docs/types.md)\n");
    }
    optional.push("- [OpenAPI 3.1 document](/openapi.json)\n");
    out.push_str("\n## Reference\n\n");
    for line in optional {
        out.push_str(line);
    }
    out
}

/// One operation as the committed spec describes it (its canonical `/v1/op/<id>` path), shared by the
/// reference pages and the SDK generators.
pub(crate) struct Op {
    pub(crate) id: String,
    pub(crate) resource: String,
    pub(crate) action: String,
    pub(crate) summary: String,
    /// The scope as Markdown (`` `api_keys:write` ``, or words for an operation open to any principal).
    pub(crate) scope: String,
    pub(crate) side_effect: String,
    pub(crate) streaming: bool,
    /// Whether the operation takes an `Idempotency-Key` header.
    pub(crate) idempotent: bool,
    /// Whether the request body must be given (its type has required fields).
    pub(crate) body_required: bool,
    pub(crate) input: Value,
    /// The output type; for a stream, the type of one line.
    pub(crate) output: Value,
    pub(crate) example: Value,
    pub(crate) errors: Vec<(String, String)>,
}

/// The operations of `spec`, sorted by id.
pub(crate) fn operations(spec: &Value) -> Result<Vec<Op>, String> {
    let paths = spec
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the spec has no paths")?;
    let mut ops = Vec::new();
    for (path, item) in paths {
        let Some(id) = path.strip_prefix("/v1/op/") else {
            continue;
        };
        let post = item
            .get("post")
            .ok_or_else(|| format!("{path} has no POST"))?;
        let text = |key: &str| {
            post.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (resource, action) = id
            .split_once('.')
            .ok_or_else(|| format!("operation id `{id}` has no dot"))?;
        let streaming = post
            .get("x-streaming")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let success = post
            .pointer("/responses/200/content")
            .and_then(Value::as_object);
        let output = success
            .and_then(|c| c.values().next())
            .and_then(|m| m.get("schema"))
            .cloned()
            .unwrap_or(Value::Null);
        // A stream's schema is the array of its lines: each line is one item.
        let output = match output.get("items") {
            Some(item) if streaming => item.clone(),
            _ => output,
        };
        let body = post.pointer("/requestBody/content/application~1json");
        let idempotent = post
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("name").and_then(Value::as_str) == Some("Idempotency-Key"));
        let mut errors = Vec::new();
        if let Some(responses) = post.get("responses").and_then(Value::as_object) {
            for (status, response) in responses.iter().filter(|(s, _)| s.as_str() != "200") {
                let code = response
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .unwrap_or("")
                    .to_owned();
                errors.push((status.clone(), code));
            }
        }
        ops.push(Op {
            id: id.to_owned(),
            resource: resource.to_owned(),
            action: action.to_owned(),
            summary: text("summary"),
            scope: match post.get("x-scope").and_then(Value::as_str) {
                Some(scope) => format!("`{scope}`"),
                None => "any authenticated principal".to_owned(),
            },
            side_effect: text("x-side-effect"),
            streaming,
            idempotent,
            body_required: post
                .pointer("/requestBody/required")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            input: body
                .and_then(|b| b.get("schema"))
                .cloned()
                .unwrap_or(Value::Null),
            output,
            example: body
                .and_then(|b| b.get("example"))
                .cloned()
                .unwrap_or(Value::Null),
            errors,
        });
    }
    ops.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ops)
}

/// GitHub's heading anchor for `text`.
fn slug(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn type_link(name: &str, from_types_page: bool) -> String {
    let page = if from_types_page { "" } else { "types.md" };
    format!("[`{name}`]({page}#{})", slug(name))
}

pub(crate) fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")?
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

/// A short human rendering of a schema's type: `string`, `integer | null`, `array of string`, a type link.
fn type_of(schema: &Value, on_types_page: bool) -> String {
    if let Some(name) = ref_name(schema) {
        return type_link(name, on_types_page);
    }
    if let Some(variants) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        return variants
            .iter()
            .map(|v| type_of(v, on_types_page))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return format!(
            "one of {}",
            values
                .iter()
                .map(|v| format!("`{}`", v_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(value) = schema.get("const") {
        return format!("`{}`", v_text(value));
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec!["any"],
    };
    types
        .iter()
        .map(|t| match *t {
            "array" => format!(
                "array of {}",
                schema
                    .get("items")
                    .map_or("any".into(), |i| type_of(i, on_types_page))
            ),
            "string" => match schema.get("format").and_then(Value::as_str) {
                Some(f) => format!("string ({f})"),
                None => "string".into(),
            },
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" \\| ")
}

fn v_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Range, length and pattern constraints as words, e.g. `1–128 characters`.
fn constraints(schema: &Value) -> Vec<String> {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64).map(|n| n.to_string());
    let mut out = Vec::new();
    let pair = |lo: Option<String>, hi: Option<String>, unit: &str| match (lo, hi) {
        (Some(lo), Some(hi)) => Some(format!("{lo}–{hi}{unit}")),
        (Some(lo), None) => Some(format!("at least {lo}{unit}")),
        (None, Some(hi)) => Some(format!("at most {hi}{unit}")),
        (None, None) => None,
    };
    out.extend(pair(num("minLength"), num("maxLength"), " characters"));
    let min = num("minimum").filter(|m| m != "0" || schema.get("maximum").is_some());
    out.extend(pair(min, num("maximum"), ""));
    out.extend(pair(num("minItems"), num("maxItems"), " items"));
    out.extend(
        schema
            .get("pattern")
            .and_then(Value::as_str)
            .map(|p| format!("pattern `{p}`")),
    );
    out
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The field table of an object schema (following a `$ref`).
fn field_table(schema: &Value, schemas: &Map<String, Value>, on_types_page: bool) -> String {
    let resolved = ref_name(schema)
        .and_then(|n| schemas.get(n))
        .unwrap_or(schema);
    let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
        return "No fields.\n".to_owned();
    };
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
    let mut out = String::from("| field | type | required | description |\n|---|---|---|---|\n");
    for (name, prop) in props {
        let mut description = prop
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let words = constraints(prop);
        if !words.is_empty() {
            description.push_str(&format!(" ({})", words.join(", ")));
        }
        if let Some(default) = prop.get("default") {
            description.push_str(&format!(" Default: `{default}`."));
        }
        out.push_str(&format!(
            "| `{name}` | {} | {} | {} |\n",
            type_of(prop, on_types_page),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                "no"
            },
            escape_cell(description.trim())
        ));
    }
    out
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

fn index(spec: &Value, ops: &[Op]) -> Result<String, String> {
    let title = spec
        .pointer("/info/title")
        .and_then(Value::as_str)
        .unwrap_or("API");
    let version = spec
        .pointer("/info/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    let description = spec
        .pointer("/info/description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out =
        format!("{GENERATED_HEADER}\n\n# {title} API reference (v{version})\n\n{description}\n\n");
    out.push_str(
        "## Operations\n\n| operation | summary | scope | side effect |\n|---|---|---|---|\n",
    );
    for op in ops {
        out.push_str(&format!(
            "| [`{}`]({}.md#{}) | {}{} | {} | `{}` |\n",
            op.id,
            op.resource,
            slug(&op.id),
            escape_cell(&op.summary),
            if op.streaming { " (NDJSON stream)" } else { "" },
            op.scope,
            op.side_effect
        ));
    }
    out.push_str(
        "\n## Calling an operation\n\n\
         Every operation is `POST /v1/op/<operation_id>`, or the alias `POST /v1/<resource>/<action>`, with \
         `Authorization: Bearer <token>` (an API key or a session token) and a JSON object body (`Content-Type: application/json`; an empty body \
         means `{}`). Success is status 200 with the output object as the body, or an NDJSON stream \
         (`application/x-ndjson`, one JSON object per line) for streaming operations. Every response carries \
         `X-Request-Id`. AI agents call the same operations as MCP tools at `POST /mcp` (the tool name is the \
         operation id; see the project README, \"Agents (MCP)\"), and `GET /llms.txt` on a gateway indexes this \
         reference for language models. Each operation's example is also shown as a call of the generated Python and \
         TypeScript SDKs (`opgate spec --sdk python|typescript --out DIR`), whose `client` is \
         `Client(base_url=..., token=...)` and `new Client({ baseUrl, token })`.\n\n\
         Every operation also takes the header `X-Workspace-ID: ws_...`: an organization-wide caller (an admin \
         key, a session) then works in that workspace only; a workspace key naming any workspace but its own \
         gets 403. Keys and audit records belong to a mode (`live` or `test`, from the key: `opg_test_...` keys \
         are test keys); a caller sees its own mode's only.\n\n\
         Scopes: `*` holds every scope, `<resource>:*` every scope of that resource, and `<resource>:write` \
         implies `<resource>:read`. The presets `*:read` (shown as `read`) and `*:write` (`read-write`) hold \
         every read scope and every write scope.\n\n## Errors\n\n\
         Every error has the body `{\"error\": {\"code\": \"...\", \"message\": \"...\", \"request_id\": \"...\"}}`.\n\n\
         | status | code | when |\n|---|---|---|\n",
    );
    let responses = spec
        .pointer("/components/responses")
        .and_then(Value::as_object)
        .ok_or("the spec has no components.responses")?;
    let mut rows: Vec<(u16, String, String)> = Vec::new();
    for (code, response) in responses {
        let status = response
            .pointer("/content/application~1json/example/error/code")
            .and_then(|_| status_of(spec, code))
            .unwrap_or(0);
        let when = response
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let when = when.split_once(": ").map_or(when, |(_, w)| w);
        rows.push((status, code.clone(), when.to_owned()));
    }
    rows.sort();
    for (status, code, when) in rows {
        out.push_str(&format!(
            "| {status} | `{code}` | {} |\n",
            escape_cell(&when)
        ));
    }
    out.push_str("\nA streaming operation that fails after its first line ends the stream with one `{\"error\": {...}}` line.\n");
    Ok(out)
}

/// The status under which some operation references `components/responses/<code>`.
pub(crate) fn status_of(spec: &Value, code: &str) -> Option<u16> {
    let target = format!("#/components/responses/{code}");
    let paths = spec.get("paths")?.as_object()?;
    for item in paths.values() {
        for (status, r) in item.pointer("/post/responses")?.as_object()? {
            if r.get("$ref").and_then(Value::as_str) == Some(target.as_str()) {
                return status.parse().ok();
            }
        }
    }
    known_status(code)
}

/// Statuses of codes that no operation references yet (e.g. 405, raised by the router; 502 and 504 of
/// upstream operations, when none is configured).
fn known_status(code: &str) -> Option<u16> {
    Some(match code {
        "method_not_allowed" => 405,
        "conflict" => 409,
        "idempotency_mismatch" => 422,
        "rate_limited" => 429,
        "not_found" => 404,
        "bad_gateway" => 502,
        "gateway_timeout" => 504,
        _ => return None,
    })
}

fn resource_page(resource: &str, ops: &[&Op], schemas: &Map<String, Value>) -> String {
    let mut out =
        format!("{GENERATED_HEADER}\n\n# `{resource}`\n\n[← all operations](index.md)\n\n");
    for op in ops {
        out.push_str(&format!(
            "- [`{}`](#{}) — {}\n",
            op.id,
            slug(&op.id),
            op.summary
        ));
    }
    for op in ops {
        let response = if op.streaming {
            format!(
                "an NDJSON stream of {}, one per line",
                type_of(&op.output, false)
            )
        } else {
            format!("{} (JSON)", type_of(&op.output, false))
        };
        let example = compact(&op.example);
        let input = input_fields(&op.input, schemas);
        let typed = CLI_RESOURCES.contains(&op.resource.as_str());
        let cli = if typed {
            format!(
                "`{}` or `opgate call {} '<json>'`",
                escape_cell(&cli_synopsis(op, &input)),
                op.id
            )
        } else {
            format!("`opgate call {} '<json>'`", op.id)
        };
        let mut commands = String::new();
        if let Some(line) = typed.then(|| cli_example(op, &input)).flatten() {
            commands.push_str(&line);
            commands.push('\n');
        }
        commands.push_str(&format!(
            "opgate call {} {}\n",
            op.id,
            shell_quote(&example)
        ));
        let (python, typescript) = crate::sdk::example_calls(op);
        out.push_str(&format!(
            "\n## {id}\n\n{summary}\n\n\
             | | |\n|---|---|\n\
             | scope | {scope} |\n\
             | side effect | `{side}` |\n\
             | HTTP | `POST /v1/op/{id}` or `POST /v1/{resource}/{action}` |\n\
             | MCP | tool `{id}` at `POST /mcp`{mcp_note} |\n\
             | CLI | {cli} |\n\
             | response | {response} |\n\n\
             ### Request\n\n{fields}\n\
             ### Response\n\n{response_fields}\n\
             ### Errors\n\n{errors}\n\n\
             ### Example\n\n```sh\ncurl -s http://127.0.0.1:8080/v1/op/{id} \\\n  -H \"Authorization: Bearer $OPGATE_TOKEN\" -H 'Content-Type: application/json' \\\n  -d '{example}'\n```\n\n\
             ```sh\n{commands}```\n\n```python\n{python}```\n\n```ts\n{typescript}```\n",
            id = op.id,
            summary = op.summary,
            scope = op.scope,
            side = op.side_effect,
            action = op.action,
            mcp_note = mcp_note(op),
            fields = field_table(&op.input, schemas, false),
            response_fields = if op.streaming {
                format!("Each line is one {}:\n\n{}", type_of(&op.output, false), field_table(&op.output, schemas, false))
            } else {
                field_table(&op.output, schemas, false)
            },
            errors = op
                .errors
                .iter()
                .map(|(status, code)| format!("`{status}` [`{code}`](index.md#errors)"))
                .collect::<Vec<_>>()
                .join(" · "),
        ));
    }
    out
}

/// What the MCP tool of an operation takes beyond its request fields: `idempotency_key` where the operation
/// honours `Idempotency-Key`, `cursor` for a stream (answered a page at a time).
fn mcp_note(op: &Op) -> &'static str {
    match (op.idempotent, op.streaming) {
        (true, _) => ", with the optional argument `idempotency_key`",
        (false, true) => ", a page of items at a time (`next_cursor` → argument `cursor`)",
        (false, false) => "",
    }
}

/// The fields of an input schema (following a `$ref`): name, schema, required.
pub(crate) fn input_fields<'a>(
    schema: &'a Value,
    schemas: &'a Map<String, Value>,
) -> Vec<(&'a str, &'a Value, bool)> {
    let resolved = ref_name(schema)
        .and_then(|n| schemas.get(n))
        .unwrap_or(schema);
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
    resolved
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, prop)| (name.as_str(), prop, required.contains(&name.as_str())))
        .collect()
}

/// The JSON types a schema allows (`type` as a string or a list; `anyOf` / `oneOf` branches).
pub(crate) fn json_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(json_types)
            .collect(),
    }
}

/// `api_keys` → `api-keys`, `rate_limit` → `rate-limit`.
fn kebab(name: &str) -> String {
    name.replace('_', "-")
}

/// Flags every typed command takes for its connection (`--url` is the gateway's base URL); a field of the same
/// name has `--<resource, singular>-<field>` instead (`webhooks.create`'s `url` is `--webhook-url`), so that
/// its value is never taken for the gateway's.
const CONNECTION_FLAGS: &[&str] = &["url", "token", "ca-cert", "workspace", "json"];

/// The flag of input field `name` in the typed command of `op`, without the leading `--`.
fn flag_of(op: &Op, name: &str) -> String {
    let flag = kebab(name);
    if CONNECTION_FLAGS.contains(&flag.as_str()) {
        format!(
            "{}-{flag}",
            kebab(op.resource.strip_suffix('s').unwrap_or(&op.resource))
        )
    } else {
        flag
    }
}

/// The typed command of an operation: `opgate <resource> <action>`.
fn cli_command(op: &Op) -> String {
    format!("opgate {} {}", kebab(&op.resource), kebab(&op.action))
}

/// Whether the typed command takes `--clear-<field>` (sending `null`) for this field: an optional field
/// whose description gives `null` a meaning of its own ("`null` clears it"). Elsewhere `null` is the same as
/// leaving the field out, so no flag sends it.
fn clearable(schema: &Value, required: bool) -> bool {
    let says_null = schema
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.contains("`null`"));
    !required && says_null && json_types(schema).contains(&"null")
}

/// The typed command with every flag: `opgate api-keys create --name <name> [--rate-limit <rate_limit>]`.
fn cli_synopsis(op: &Op, fields: &[(&str, &Value, bool)]) -> String {
    let mut out = cli_command(op);
    for (name, schema, required) in fields {
        let types = json_types(schema);
        let long = flag_of(op, name);
        let flag = if types.contains(&"boolean") {
            format!("--{long}")
        } else if types.contains(&"array") {
            format!("--{long} <{name},...>")
        } else {
            format!("--{long} <{name}>")
        };
        let flag = if clearable(schema, *required) {
            format!("{flag} | --clear-{long}")
        } else {
            flag
        };
        out.push_str(&if *required {
            format!(" {flag}")
        } else {
            format!(" [{flag}]")
        });
    }
    out
}

/// The typed command for the operation's example request, or `None` when the example holds a value no flag
/// takes (a nested object).
fn cli_example(op: &Op, fields: &[(&str, &Value, bool)]) -> Option<String> {
    let example = op.example.as_object()?;
    let mut out = cli_command(op);
    for (name, value) in example {
        let (_, schema, required) = fields.iter().find(|(n, _, _)| n == name)?;
        let flag = flag_of(op, name);
        match value {
            Value::Null if clearable(schema, *required) => {
                out.push_str(&format!(" --clear-{flag}"));
            }
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => out.push_str(&format!(" --{flag}")),
            Value::Array(items) => {
                let items: Option<Vec<String>> = items.iter().map(scalar).collect();
                out.push_str(&format!(" --{flag} {}", shell_quote(&items?.join(","))));
            }
            other => out.push_str(&format!(" --{flag} {}", shell_quote(&scalar(other)?))),
        }
    }
    Some(out)
}

/// A string or number as a flag value.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `text` as one shell word: bare when that is safe, else in single quotes.
fn shell_quote(text: &str) -> String {
    let bare = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/,@=+%".contains(c));
    if bare {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

fn types_page(schemas: &Map<String, Value>) -> String {
    let mut out = format!("{GENERATED_HEADER}\n\n# Types\n\n[← all operations](index.md)\n");
    for (name, schema) in schemas {
        out.push_str(&format!("\n## {name}\n\n"));
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            out.push_str(&format!("{d}\n\n"));
        }
        if schema.get("properties").is_some() {
            out.push_str(&field_table(schema, schemas, true));
        } else {
            out.push_str(&format!("{}\n", type_of(schema, true)));
            if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
                out.push('\n');
                for v in variants {
                    let value = v.get("const").map(v_text).unwrap_or_default();
                    let d = v.get("description").and_then(Value::as_str).unwrap_or("");
                    out.push_str(&format!("- `{value}`: {d}\n"));
                }
            }
        }
    }
    out
}
