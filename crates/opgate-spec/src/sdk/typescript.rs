//! The TypeScript SDK: ES modules over the global `fetch`, no runtime dependencies, formatted as `prettier`
//! would leave it (print width 110, the package's `.prettierrc.json`).

use serde_json::Value;

use super::{
    camel, check_fields, description, enum_values, header, ident, json_literal, pascal, type_expr,
    wrap, Files, Lang, Spec,
};
use crate::markdown::Op;

/// The transport (retries, streams) shared by every generated method.
const RUNTIME: &str = include_str!("templates/runtime.ts");
/// The error base classes, before the generated per-code classes.
const ERRORS_HEAD: &str = include_str!("templates/errors.ts");
/// Decoding error bodies and error lines, after them.
const ERRORS_TAIL: &str = include_str!("templates/errors_tail.ts");

/// The `typescript` the package builds with, pinned.
pub const TYPESCRIPT_VERSION: &str = "5.6.3";

/// The print width of the generated code (and of its `.prettierrc.json`).
const WIDTH: usize = 110;

/// The files of the TypeScript package for the OpenAPI document `doc`, relative to the package root
/// (`package.json`, `src/client.ts`, ...): a `Client` with one property per resource and one method per
/// operation taking the input object, and an interface per schema.
pub fn typescript(doc: &Value) -> Result<Files, String> {
    let spec = Spec::read(doc)?;
    check_fields(&spec)?;
    let head = format!("// {}\n\n", header(Lang::TypeScript, &spec));
    let mut files = Files::new();
    files.insert("package.json".into(), package_json(&spec));
    files.insert(
        "tsconfig.json".into(),
        "{\n  \"compilerOptions\": {\n    \"target\": \"ES2022\",\n    \"module\": \"NodeNext\",\n    \
         \"moduleResolution\": \"NodeNext\",\n    \"lib\": [\"ES2022\", \"DOM\", \"DOM.Iterable\"],\n    \
         \"strict\": true,\n    \"declaration\": true,\n    \"outDir\": \"dist\",\n    \"rootDir\": \"src\"\n  },\n  \
         \"include\": [\"src\"]\n}\n"
            .into(),
    );
    files.insert(
        ".prettierrc.json".into(),
        format!("{{ \"printWidth\": {WIDTH} }}\n"),
    );
    files.insert("README.md".into(), readme(&spec));
    files.insert("src/runtime.ts".into(), format!("{head}{RUNTIME}"));
    files.insert("src/errors.ts".into(), errors(&spec, &head));
    files.insert("src/types.ts".into(), types(&spec, &head));
    files.insert("src/client.ts".into(), client(&spec, &head));
    files.insert(
        "src/index.ts".into(),
        format!(
            "{head}export * from \"./runtime.js\";\nexport * from \"./errors.js\";\nexport * from \"./client.js\";\n\
             export type * from \"./types.js\";\n"
        ),
    );
    Ok(files)
}

fn package_json(spec: &Spec) -> String {
    let description = format!(
        "TypeScript client of the {} API, generated from its OpenAPI document.",
        spec.title
    );
    format!(
        "{{\n  \"name\": \"opgate\",\n  \"version\": {},\n  \"description\": {},\n  \"type\": \"module\",\n  \
         \"main\": \"dist/index.js\",\n  \"types\": \"dist/index.d.ts\",\n  \"files\": [\"dist\", \"src\"],\n  \
         \"engines\": {{ \"node\": \">=18\" }},\n  \"scripts\": {{ \"build\": \"tsc -p .\" }},\n  \
         \"devDependencies\": {{ \"typescript\": \"{TYPESCRIPT_VERSION}\" }}\n}}\n",
        json_literal(&Value::String(spec.version.clone())),
        json_literal(&Value::String(description)),
    )
}

fn readme(spec: &Spec) -> String {
    let mut usage = String::from(
        "import { Client, NotFoundError } from \"opgate\";\n\n\
         const client = new Client(); // OPGATE_URL, OPGATE_TOKEN, OPGATE_WORKSPACE\n",
    );
    if let Some(op) = spec
        .ops
        .iter()
        .find(|o| !o.streaming && o.side_effect != "read")
    {
        usage.push_str(&example(op));
    }
    if let Some(op) = spec.ops.iter().find(|o| o.streaming) {
        usage.push_str(&example(op));
    }
    format!(
        "<!-- {} -->\n\n# `opgate` for TypeScript\n\nA typed client of the {} API ({}) over the global `fetch` \
         (Node 18+, browsers, Deno), with no runtime dependencies. Every operation is a method of its resource \
         taking the input object; streaming operations return an async iterable that decodes NDJSON as it \
         arrives; every error code is an error class. Build with `npm run build` (TypeScript {TYPESCRIPT_VERSION}).\n\n\
         ```ts\n{usage}```\n\nRetries: a 429 or 503 is tried again up to `maxRetries` times (default 2), after \
         `Retry-After` when the gateway sends it; a `write` or `destructive` call then carries one generated \
         `Idempotency-Key` (or yours: `{{ idempotencyKey }}`), so it runs at most once. `export` calls (which \
         return a secret) are retried after a 429 only.\n",
        header(Lang::TypeScript, spec),
        spec.title,
        spec.version
    )
}

/// A JSDoc comment indented by `pad`, wrapped to the print width.
fn jsdoc(text: &str, pad: usize) -> String {
    let text = text.replace("*/", "*\\/");
    let prefix = " ".repeat(pad);
    let one = format!(
        "{prefix}/** {} */",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    if one.len() <= WIDTH {
        return format!("{one}\n");
    }
    let mut out = format!("{prefix}/**\n");
    for line in wrap(&text, WIDTH - pad - 3) {
        out.push_str(&format!("{prefix} * {line}\n"));
    }
    out.push_str(&format!("{prefix} */\n"));
    out
}

fn errors(spec: &Spec, head: &str) -> String {
    let mut out = format!("{head}{ERRORS_HEAD}");
    for code in &spec.codes {
        out.push('\n');
        out.push_str(&jsdoc(
            &format!("{} `{}`: {}", code.status, code.code, code.description),
            0,
        ));
        out.push_str(&format!(
            "export class {} extends OpgateError {{\n  static readonly code = \"{}\";\n  static readonly status = {};\n}}\n",
            code.class_name(),
            code.code,
            code.status
        ));
    }
    out.push_str("\n/** The error codes of the contract. */\nexport type ErrorCode =\n");
    for code in &spec.codes {
        out.push_str(&format!("  | \"{}\"\n", code.code));
    }
    // Prettier puts the `;` after the last member.
    out.pop();
    out.push_str(";\n\n/** The error class of each code. */\nexport const ERROR_CLASSES: Record<ErrorCode, ErrorClass> = {\n");
    for code in &spec.codes {
        out.push_str(&format!("  {}: {},\n", code.code, code.class_name()));
    }
    out.push_str("};\n\n/** The HTTP status of each code. */\nexport const STATUS_OF_CODE: Record<ErrorCode, number> = {\n");
    for code in &spec.codes {
        out.push_str(&format!("  {}: {},\n", code.code, code.status));
    }
    out.push_str("};\n\n");
    out.push_str(ERRORS_TAIL);
    out
}

/// Whether `name` can stand unquoted as a property name.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn property(name: &str) -> String {
    if is_identifier(name) {
        name.to_owned()
    } else {
        json_literal(&Value::String(name.to_owned()))
    }
}

fn types(spec: &Spec, head: &str) -> String {
    let mut out = format!(
        "{head}/** The input and output types of the {} API, from the components of its OpenAPI document. */\n",
        spec.title
    );
    for (name, schema) in spec.schemas {
        out.push('\n');
        if let Some(d) = description(schema) {
            out.push_str(&jsdoc(d, 0));
        }
        let object = schema.get("properties").is_some()
            || schema.get("type") == Some(&Value::from("object"));
        if !object {
            let expr = match enum_values(schema) {
                Some(values) => values
                    .iter()
                    .map(|(v, _)| v.clone())
                    .collect::<Vec<_>>()
                    .join(" | "),
                None => {
                    let mut bare = schema.clone();
                    if let Some(o) = bare.as_object_mut() {
                        o.remove("description");
                    }
                    type_expr(&bare, Lang::TypeScript)
                }
            };
            let line = format!("export type {} = {expr};", ident(name));
            if line.len() <= WIDTH {
                out.push_str(&format!("{line}\n"));
            } else {
                out.push_str(&format!("export type {} =\n", ident(name)));
                let members: Vec<&str> = expr.split(" | ").collect();
                for (i, m) in members.iter().enumerate() {
                    let end = if i + 1 == members.len() { ";" } else { "" };
                    out.push_str(&format!("  | {m}{end}\n"));
                }
            }
            continue;
        }
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
        let props = schema.get("properties").and_then(Value::as_object);
        if props.is_none_or(|p| p.is_empty()) {
            out.push_str(&format!(
                "export type {} = Record<string, never>;\n",
                ident(name)
            ));
            continue;
        }
        out.push_str(&format!("export interface {} {{\n", ident(name)));
        for (field, prop) in props.into_iter().flatten() {
            if let Some(d) = description(prop) {
                out.push_str(&jsdoc(d, 2));
            }
            let optional = if required.contains(&field.as_str()) {
                ""
            } else {
                "?"
            };
            out.push_str(&format!(
                "  {}{optional}: {};\n",
                property(field),
                type_expr(prop, Lang::TypeScript)
            ));
        }
        out.push_str("}\n");
    }
    out
}

/// The output type of an operation (an item's for a stream).
fn output_type(op: &Op) -> String {
    match op.output {
        Value::Null => "unknown".into(),
        ref schema => type_expr(schema, Lang::TypeScript),
    }
}

fn client(spec: &Spec, head: &str) -> String {
    let mut used: Vec<String> = Vec::new();
    let mut classes = String::new();
    let resources = spec.resources();
    for (resource, ops) in &resources {
        classes.push_str(&format!(
            "\n/** The `{resource}.*` operations. */\nexport class {} {{\n  constructor(private readonly client: BaseClient) {{}}\n",
            pascal(resource)
        ));
        for op in ops {
            classes.push_str(&method(spec, op, &mut used));
        }
        classes.push_str("}\n");
    }
    used.sort();
    used.dedup();
    let mut out = format!(
        "{head}/** The operations of the {} API, one class per resource: `client.apiKeys.create({{ ... }})`. */\n\n\
         import {{\n  BaseClient,\n  type CallOptions,\n  type ClientOptions,\n  type RequestOptions,\n  type Stream,\n}} from \"./runtime.js\";\n",
        spec.title
    );
    if !used.is_empty() {
        let line = format!(
            "import type {{ {} }} from \"./types.js\";\n",
            used.join(", ")
        );
        if line.len() <= WIDTH + 1 {
            out.push_str(&line);
        } else {
            out.push_str("import type {\n");
            for name in &used {
                out.push_str(&format!("  {name},\n"));
            }
            out.push_str("} from \"./types.js\";\n");
        }
    }
    out.push_str(&classes);
    out.push('\n');
    out.push_str(&jsdoc(
        &format!(
            "A client of the {} API ({}): `new Client({{ baseUrl, token, workspace }})`, each falling back to \
             `OPGATE_URL`, `OPGATE_TOKEN` and `OPGATE_WORKSPACE`.",
            spec.title, spec.version
        ),
        0,
    ));
    out.push_str("export class Client extends BaseClient {\n");
    for (resource, _) in &resources {
        out.push_str(&format!(
            "  /** The `{resource}.*` operations. */\n  readonly {} = new {}(this);\n",
            camel(resource),
            pascal(resource)
        ));
    }
    out.push_str("\n  constructor(options: ClientOptions = {}) {\n    super(options);\n  }\n}\n");
    out
}

fn method(spec: &Spec, op: &Op, used: &mut Vec<String>) -> String {
    let input = match ref_name_of(&op.input) {
        Some(name) => name,
        None => "Record<string, unknown>".into(),
    };
    if spec.schemas.contains_key(&input) {
        used.push(input.clone());
    }
    let output = output_type(op);
    for name in spec.schemas.keys() {
        if output
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == ident(name))
        {
            used.push(ident(name));
        }
    }
    let options = if op.idempotent {
        "CallOptions"
    } else {
        "RequestOptions"
    };
    let default = if op.body_required { "" } else { " = {}" };
    let (returns, call) = if op.streaming {
        (format!("Stream<{output}>"), "requestStream")
    } else {
        (format!("Promise<{output}>"), "request")
    };
    let mut doc = format!("{}\n\n{}", op.summary, op_note(op));
    doc = doc.replace("*/", "*\\/");
    let mut out = String::from("\n  /**\n");
    for (i, paragraph) in doc.split("\n\n").enumerate() {
        if i > 0 {
            out.push_str("   *\n");
        }
        for line in wrap(paragraph, WIDTH - 5) {
            out.push_str(&format!("   * {line}\n"));
        }
    }
    out.push_str("   */\n");
    let name = camel(&op.action);
    let params = [
        format!("input: {input}{default}"),
        format!("options: {options} = {{}}"),
    ];
    let line = format!("  {name}({}): {returns} {{", params.join(", "));
    if line.len() <= WIDTH {
        out.push_str(&format!("{line}\n"));
    } else {
        out.push_str(&format!(
            "  {name}(\n    {},\n    {},\n  ): {returns} {{\n",
            params[0], params[1]
        ));
    }
    let body = format!(
        "    return this.client.{call}(\"{}\", input, \"{}\", options);",
        op.id, op.side_effect
    );
    if body.len() <= WIDTH {
        out.push_str(&format!("{body}\n"));
    } else {
        out.push_str(&format!(
            "    return this.client.{call}(\n      \"{}\",\n      input,\n      \"{}\",\n      options,\n    );\n",
            op.id, op.side_effect
        ));
    }
    out.push_str("  }\n");
    out
}

fn ref_name_of(schema: &Value) -> Option<String> {
    crate::markdown::ref_name(schema).map(ident)
}

/// The line under an operation's summary: scope, side effect, stream.
fn op_note(op: &Op) -> String {
    format!(
        "Scope {} · side effect `{}`{}.",
        op.scope,
        op.side_effect,
        if op.streaming {
            " · streams NDJSON"
        } else {
            ""
        }
    )
}

/// A JSON value as a TypeScript expression, keys unquoted where they can be.
fn ts_literal(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(ts_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", property(k), ts_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => json_literal(other),
    }
}

/// The call of `op` with its example input, as the reference pages show it (print width 80, prettier's
/// default, for pages read beside narrow code).
pub(super) fn example(op: &Op) -> String {
    let target = format!("client.{}.{}", camel(&op.resource), camel(&op.action));
    let input = match op.example.as_object() {
        Some(map) if !map.is_empty() => ts_literal(&op.example),
        _ => String::new(),
    };
    let (lead, tail) = if op.streaming {
        (
            "for await (const item of ",
            ") {\n  console.log(item);\n}\n",
        )
    } else {
        ("const result = await ", ";\n")
    };
    let one = format!("{lead}{target}({input}){tail}");
    if one.lines().next().is_some_and(|l| l.len() <= 80) {
        return one;
    }
    let fields: String = op
        .example
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("  {}: {},\n", property(k), ts_literal(v)))
        .collect();
    format!("{lead}{target}({{\n{fields}}}){tail}")
}
