use crate::links;
use opgate_core::{
    schema_generator, Code, Entry, ErrorBody, Registry, IDEMPOTENCY_RETENTION_SECS,
    MAX_IDEMPOTENCY_KEY_LEN,
};
use schemars::generate::Contract;
use serde_json::{json, Map, Value};

/// Title, version and description of the generated document.
#[derive(Debug, Clone)]
pub struct ApiInfo {
    /// `info.title`.
    pub title: String,
    /// `info.version`.
    pub version: String,
    /// `info.description` (Markdown).
    pub description: String,
}

/// Errors every operation can return, from the pipeline rather than the handler (`not_found` for a workspace
/// named in `X-Workspace-ID` that the caller's organization does not have).
const PIPELINE_ERRORS: [Code; 9] = [
    Code::InvalidArgument,
    Code::Unauthenticated,
    Code::PermissionDenied,
    Code::NotFound,
    Code::PayloadTooLarge,
    Code::UnsupportedMediaType,
    Code::RateLimited,
    Code::Internal,
    Code::Unavailable,
];

/// Errors of the idempotency stage, for operations that honour `Idempotency-Key`.
const IDEMPOTENCY_ERRORS: [Code; 2] = [Code::Conflict, Code::IdempotencyMismatch];

/// The `RateLimit-*` headers, sent on every response to a rate-limited principal.
fn rate_limit_headers() -> Value {
    json!({
        "RateLimit-Limit": { "$ref": "#/components/headers/RateLimit-Limit" },
        "RateLimit-Remaining": { "$ref": "#/components/headers/RateLimit-Remaining" },
        "RateLimit-Reset": { "$ref": "#/components/headers/RateLimit-Reset" }
    })
}

/// The `X-Workspace-ID` header every operation takes.
static WORKSPACE_PARAMETER: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "$ref": "#/components/parameters/X-Workspace-ID" }));

const SECURITY_SCHEME: &str = "bearerAuth";
/// The second way to authenticate: a session token (an HS256 JWT) in the same `Authorization: Bearer` header.
const SESSION_SECURITY_SCHEME: &str = "sessionAuth";

/// The OpenAPI 3.1 document of every operation in `registry`, under both of its paths. Deterministic: the same
/// code gives the same document, byte for byte, once [`render`](crate::render)ed.
pub fn openapi(registry: &Registry, info: &ApiInfo) -> Value {
    // Inputs are described as the server reads them, outputs as it writes them (every field present).
    let mut inputs = schema_generator(Contract::Deserialize);
    let mut outputs = schema_generator(Contract::Serialize);
    let error_schema = outputs.subschema_for::<ErrorBody>();

    let mut entries: Vec<&Entry> = registry.entries().iter().collect();
    entries.sort_by_key(|e| e.meta.id);

    let mut tags: Vec<&str> = Vec::new();
    let mut described = Vec::new();
    for entry in &entries {
        let meta = entry.meta;
        if !tags.contains(&meta.resource()) {
            tags.push(meta.resource());
        }
        let input = (entry.input_schema)(&mut inputs).to_value();
        // A body whose type has required fields cannot be left out (an empty body means `{}`).
        let body_required = input
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .and_then(|name| inputs.definitions().get(name))
            .and_then(|def| def.get("required"))
            .and_then(Value::as_array)
            .is_some_and(|fields| !fields.is_empty());
        let output = (entry.output_schema)(&mut outputs).to_value();
        described.push((*entry, input, output, body_required));
    }

    let mut schemas = inputs.take_definitions(true);
    for (name, schema) in outputs.take_definitions(true) {
        if let Some(existing) = schemas.get(&name) {
            assert_eq!(
                existing, &schema,
                "schema `{name}` differs between request and response use"
            );
        }
        schemas.insert(name, schema);
    }

    // Which operation's answer feeds which other's input, read from the id patterns of their schemas.
    let flows = links::flows(
        described
            .iter()
            .map(|(entry, input, output, _)| (*entry, input, output)),
        &schemas,
    );
    let mut paths = Map::new();
    for (entry, input, output, body_required) in &described {
        let meta = entry.meta;
        let canonical = format!("/v1/op/{}", meta.id);
        let alias = format!("/v1/{}/{}", meta.resource(), meta.action());
        let mut op = operation(
            entry,
            input,
            output,
            *body_required,
            meta.id.to_owned(),
            None,
        );
        let mut alias_op = operation(
            entry,
            input,
            output,
            *body_required,
            format!("{}.alias", meta.id),
            Some(&canonical),
        );
        if let Some(feeds) = flows.get(meta.id) {
            op["responses"]["200"]["links"] = links::to_openapi(feeds, "");
            alias_op["responses"]["200"]["links"] = links::to_openapi(feeds, ".alias");
        }
        paths.insert(canonical.clone(), json!({ "post": op }));
        paths.insert(alias, json!({ "post": alias_op }));
    }

    // Which scopes a grant may name depends on the operations served: the schema lists exactly those.
    if let Some(scope) = schemas.get_mut(opgate_core::scope::SCHEMA_NAME) {
        let catalog = registry.scopes();
        let known: Vec<&str> = catalog.iter().collect();
        *scope = json!({
            "description": "A scope some operation of this gateway requires, or a wildcard over such a resource (`*` holds every scope, `<resource>:*` every scope of the resource).",
            "type": "string",
            "enum": known,
        });
    }
    schemas.sort_keys();

    let mut responses = Map::new();
    for code in Code::ALL {
        let mut headers =
            json!({ "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } });
        if code == Code::Unauthenticated {
            headers["WWW-Authenticate"] = json!({
                "description": "Always `Bearer`.",
                "schema": { "type": "string", "const": "Bearer" }
            });
        }
        if code == Code::RateLimited {
            headers["Retry-After"] = json!({
                "description": "Seconds until a request can succeed again.",
                "schema": { "type": "integer", "minimum": 1 }
            });
            for (name, header) in rate_limit_headers().as_object().expect("an object") {
                headers[name] = header.clone();
            }
        }
        if code == Code::MethodNotAllowed {
            headers["Allow"] =
                json!({ "description": "Always `POST`.", "schema": { "type": "string" } });
        }
        responses.insert(
            code.as_str().to_owned(),
            json!({
                "description": format!("`{}`: {}", code.as_str(), code.when()),
                "headers": headers,
                "content": { "application/json": {
                    "schema": error_schema.clone().to_value(),
                    "example": { "error": { "code": code.as_str(), "message": "…", "request_id": "req_01jf3m8v6k2x9q4w7e5r1t0y8z" } }
                } }
            }),
        );
    }

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "servers": [{ "url": "http://127.0.0.1:8080", "description": "A local `opgate serve`." }],
        "tags": tags.iter().map(|t| json!({ "name": t })).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "parameters": {
                "X-Workspace-ID": {
                    "name": "X-Workspace-ID",
                    "in": "header",
                    "required": false,
                    "description": "The workspace to work in. An organization-wide caller (an admin key, a session) then sees and makes that workspace's objects only (404 if its organization has no such workspace); without it, every workspace. A workspace key naming any workspace but its own gets 403.",
                    "schema": { "type": "string", "pattern": opgate_core::id_pattern!("ws") }
                }
            },
            "headers": {
                "X-Request-Id": {
                    "description": "The request id: the client's own when it sent a sane one (1–128 of `A-Za-z0-9._:-`), else generated.",
                    "schema": { "type": "string" }
                },
                "RateLimit-Limit": {
                    "description": "Requests per minute the principal may make (only for rate-limited principals).",
                    "schema": { "type": "integer" }
                },
                "RateLimit-Remaining": {
                    "description": "Requests the principal may still make right now.",
                    "schema": { "type": "integer" }
                },
                "RateLimit-Reset": {
                    "description": "Seconds until the full burst is available again.",
                    "schema": { "type": "integer" }
                },
                "Idempotent-Replayed": {
                    "description": "`true` when the response is the stored answer to an earlier request with the same `Idempotency-Key`.",
                    "schema": { "type": "string", "const": "true" }
                }
            },
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`opg_` + 32 base62 characters + a 6-character checksum). The scopes listed in each operation's `security` requirement are the ones the key must hold."
                },
                SESSION_SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A session token: a JWT signed with HS256 under the server's session secret, with claims `sub` (the principal id), `org`, `scope` (space-separated scopes), `exp` and `iat`, and `iss` / `aud` when the server is configured with them. The scopes listed in each operation's `security` requirement are the ones the token's `scope` must hold."
                }
            }
        }
    })
}

fn operation(
    entry: &Entry,
    input: &Value,
    output: &Value,
    body_required: bool,
    operation_id: String,
    alias_of: Option<&str>,
) -> Value {
    let meta = entry.meta;
    let example: Value = serde_json::from_str(entry.example).expect("operation examples are JSON");
    let mut success_headers =
        json!({ "X-Request-Id": { "$ref": "#/components/headers/X-Request-Id" } });
    for (name, header) in rate_limit_headers().as_object().expect("an object") {
        success_headers[name] = header.clone();
    }
    if meta.side_effect.is_idempotent() {
        success_headers["Idempotent-Replayed"] =
            json!({ "$ref": "#/components/headers/Idempotent-Replayed" });
    }
    let success = if entry.streaming {
        // As OpenAPI 3.2 reads sequential media types: the schema covers the whole stream as an array, each
        // line one item.
        json!({
            "description": "An NDJSON stream: one JSON object per line, each an item of the array the schema describes. A failure after the first line ends the stream with one `{\"error\": {...}}` line.",
            "headers": success_headers.clone(),
            "content": { "application/x-ndjson": { "schema": { "type": "array", "items": output } } }
        })
    } else {
        json!({
            "description": "Success.",
            "headers": success_headers.clone(),
            "content": { "application/json": { "schema": output } }
        })
    };
    let idempotency_errors: &[Code] = if meta.side_effect.is_idempotent() {
        &IDEMPOTENCY_ERRORS
    } else {
        &[]
    };
    let mut codes: Vec<Code> = PIPELINE_ERRORS
        .iter()
        .chain(entry.errors)
        .chain(idempotency_errors)
        .copied()
        .collect();
    codes.sort_by_key(|c| c.status());
    codes.dedup();
    let mut responses = Map::new();
    responses.insert("200".into(), success);
    for code in codes {
        responses.insert(
            code.status().to_string(),
            json!({ "$ref": format!("#/components/responses/{}", code.as_str()) }),
        );
    }
    // An operation open to any authenticated principal lists no scope.
    let (scopes, scope) = if meta.scope.is_empty() {
        (json!([]), Value::Null)
    } else {
        (json!([meta.scope]), json!(meta.scope))
    };
    let mut description = format!(
        "Scope `{}` · side effect `{}`{}.",
        if meta.scope.is_empty() {
            "(any authenticated principal)"
        } else {
            meta.scope
        },
        meta.side_effect.as_str(),
        if entry.streaming {
            " · streams NDJSON"
        } else {
            ""
        }
    );
    if let Some(canonical) = alias_of {
        description.push_str(&format!(
            " Alias of `POST {canonical}`; both behave identically."
        ));
    }
    let mut op = json!({
        "operationId": operation_id,
        "summary": meta.summary,
        "description": description,
        "tags": [meta.resource()],
        "security": [{ SECURITY_SCHEME: scopes.clone() }, { SESSION_SECURITY_SCHEME: scopes }],
        "x-scope": scope,
        "x-side-effect": meta.side_effect.as_str(),
        "x-streaming": entry.streaming,
        "parameters": if meta.side_effect.is_idempotent() {
            json!([WORKSPACE_PARAMETER.clone(), {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": format!("Makes a retry safe: the first response to this key is stored for {} hours and replayed (with `Idempotent-Replayed: true`) for a retry with the same body; a different body is 422 `idempotency_mismatch`, a retry while the first request runs is 409 `conflict`.", IDEMPOTENCY_RETENTION_SECS / 3600),
                "schema": { "type": "string", "pattern": format!("^[\\x21-\\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$") }
            }])
        } else {
            json!([WORKSPACE_PARAMETER.clone()])
        },
        "requestBody": {
            "description": "A JSON object; an empty body means `{}`.",
            "required": body_required,
            "content": { "application/json": { "schema": input, "example": example } }
        },
        "responses": responses,
    });
    if let Some(canonical) = alias_of {
        op["x-alias-of"] = json!(canonical);
    }
    op
}
