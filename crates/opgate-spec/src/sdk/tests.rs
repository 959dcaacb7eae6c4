use serde_json::json;

use super::*;

/// A spec of two operations, one streaming, and two error codes: the smallest an embedder could have.
fn tiny() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": { "title": "notes", "version": "1.2.3" },
        "paths": {
            "/v1/op/notes.create": { "post": {
                "operationId": "notes.create", "summary": "Create a note.", "x-scope": "notes:write",
                "x-side-effect": "write", "x-streaming": false,
                "parameters": [{ "name": "Idempotency-Key", "in": "header" }],
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/CreateNote" },
                    "example": { "text": "hi", "from": null } } } },
                "responses": {
                    "200": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Note" } } } },
                    "404": { "$ref": "#/components/responses/not_found" }
                }
            } },
            "/v1/op/notes.list": { "post": {
                "operationId": "notes.list", "summary": "List notes.", "x-scope": "notes:read",
                "x-side-effect": "read", "x-streaming": true,
                "requestBody": { "required": false, "content": { "application/json": {
                    "schema": { "type": "object", "properties": {} }, "example": {} } } },
                "responses": {
                    "200": { "content": { "application/x-ndjson": { "schema": { "type": "array", "items": { "$ref": "#/components/schemas/Note" } } } } },
                    "429": { "$ref": "#/components/responses/rate_limited" }
                }
            } }
        },
        "components": {
            "schemas": {
                "CreateNote": { "type": "object", "description": "Input.", "required": ["text"], "properties": {
                    "text": { "type": "string", "description": "The text." },
                    "from": { "type": ["string", "null"], "description": "Who wrote it." }
                } },
                "Note": { "type": "object", "description": "A note.", "required": ["id", "tags"], "properties": {
                    "id": { "type": "string", "description": "Its id." },
                    "tags": { "type": "array", "items": { "$ref": "#/components/schemas/Tag" }, "description": "Tags." }
                } },
                "Tag": { "description": "A tag.", "oneOf": [
                    { "type": "string", "const": "red" }, { "type": "string", "const": "blue" } ] }
            },
            "responses": {
                "not_found": { "description": "`not_found`: gone." },
                "rate_limited": { "description": "`rate_limited`: slow down." }
            }
        }
    })
}

#[test]
fn names_follow_each_language() {
    assert_eq!(pascal("api_keys"), "ApiKeys");
    assert_eq!(pascal("not_found"), "NotFound");
    assert_eq!(camel("rotate_secret"), "rotateSecret");
    assert_eq!(ident("a-b"), "a_b");
}

#[test]
fn types_render_in_both_languages() {
    let s = json!({ "type": ["array", "null"], "items": { "$ref": "#/components/schemas/Scope" } });
    assert_eq!(type_expr(&s, Lang::Python), "list[Scope] | None");
    assert_eq!(type_expr(&s, Lang::TypeScript), "Scope[] | null");
    let s = json!({ "anyOf": [{ "$ref": "#/components/schemas/Mode" }, { "type": "null" }] });
    assert_eq!(type_expr(&s, Lang::Python), "Mode | None");
    let s = json!({ "enum": ["a", "b"] });
    assert_eq!(type_expr(&s, Lang::Python), "Literal[\"a\", \"b\"]");
    assert_eq!(type_expr(&s, Lang::TypeScript), "\"a\" | \"b\"");
    // Branches that only refine the type (formats, patterns) leave the type as it is.
    let s = json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "pattern": "x" }] });
    assert_eq!(type_expr(&s, Lang::TypeScript), "string");
    let s = json!({ "type": "array", "items": { "type": ["string", "null"] } });
    assert_eq!(type_expr(&s, Lang::TypeScript), "Array<string | null>");
}

#[test]
fn an_embedders_spec_gets_both_sdks() {
    let py = python(&tiny()).unwrap();
    let resources = &py["opgate/resources.py"];
    assert!(resources.contains("class Notes:"), "{resources}");
    // A Python keyword as a field becomes `from_`, sent under its own name.
    assert!(
        resources.contains("from_: str | None | NotGiven = NOT_GIVEN,"),
        "{resources}"
    );
    assert!(resources.contains("\"from\": from_,"), "{resources}");
    assert!(resources.contains(") -> Stream[Note]:"), "{resources}");
    assert!(resources.contains("idempotency_key: str | None = None,"));
    let errors = &py["opgate/errors.py"];
    assert!(errors.contains("class NotFoundError(OpgateError):"));
    assert!(errors.contains("    status = 429\n"));
    assert!(py["opgate/types.py"].contains("Tag = Literal[\"red\", \"blue\"]"));
    for (path, text) in &py {
        if path.ends_with(".py") || path.ends_with(".toml") {
            assert!(is_generated(text), "{path} lacks the header");
        }
    }

    let ts = typescript(&tiny()).unwrap();
    let client = &ts["src/client.ts"];
    assert!(
        client.contains("readonly notes = new Notes(this);"),
        "{client}"
    );
    assert!(client.contains("list(input: Record<string, never> = {}, options: RequestOptions = {}): Stream<Note> {")
        || client.contains("list(input: Record<string, unknown> = {}, options: RequestOptions = {}): Stream<Note> {"), "{client}");
    assert!(
        client.contains("create(input: CreateNote, options: CallOptions = {}): Promise<Note> {"),
        "{client}"
    );
    assert!(ts["src/types.ts"].contains("export type Tag = \"red\" | \"blue\";"));
    assert!(ts["src/types.ts"].contains("  from?: string | null;"));
    assert!(ts["src/errors.ts"].contains("export class RateLimitedError extends OpgateError {"));
    assert!(ts["package.json"].contains("\"typescript\": \"5.6.3\""));
}

#[test]
fn a_field_named_like_an_option_is_refused() {
    let mut spec = tiny();
    spec["components"]["schemas"]["CreateNote"]["properties"]["request_id"] =
        json!({ "type": "string" });
    let e = python(&spec).unwrap_err();
    assert!(e.contains("`request_id`"), "{e}");
}

#[test]
fn examples_read_as_calls() {
    let ops = markdown::operations(&tiny()).unwrap();
    let (py, ts) = example_calls(&ops[0]);
    assert_eq!(
        py,
        "result = client.notes.create(text=\"hi\", from_=None)\n"
    );
    assert_eq!(
        ts,
        "const result = await client.notes.create({ text: \"hi\", from: null });\n"
    );
    let (py, ts) = example_calls(&ops[1]);
    assert_eq!(py, "for item in client.notes.list():\n    print(item)\n");
    assert_eq!(
        ts,
        "for await (const item of client.notes.list()) {\n  console.log(item);\n}\n"
    );
}
