//! The Python SDK: package `opgate` over `httpx`, formatted as `black` would leave it.

use serde_json::Value;

use super::{
    check_fields, description, enum_values, header, ident, indent, json_literal, pascal,
    python_literal, type_expr, wrap, Files, Lang, Spec,
};
use crate::markdown::Op;

/// The transport (retries, streams) shared by every generated method.
const BASE: &str = include_str!("templates/_base.py");
/// The error base classes, before the generated per-code classes.
const ERRORS_HEAD: &str = include_str!("templates/errors.py");
/// Decoding error bodies and error lines, after them.
const ERRORS_TAIL: &str = include_str!("templates/errors_tail.py");

/// The longest line `black` leaves alone.
const WIDTH: usize = 88;

/// The files of the Python package for the OpenAPI document `doc`, relative to the package root
/// (`pyproject.toml`, `opgate/client.py`, ...): a `Client(base_url=..., token=...)` with one attribute per
/// resource and one method per operation taking the input fields as keyword arguments.
pub fn python(doc: &Value) -> Result<Files, String> {
    let spec = Spec::read(doc)?;
    check_fields(&spec)?;
    let head = format!("# {}\n", header(Lang::Python, &spec));
    let mut files = Files::new();
    files.insert("pyproject.toml".into(), pyproject(&spec, &head));
    files.insert("README.md".into(), readme(&spec));
    files.insert("opgate/py.typed".into(), String::new());
    files.insert("opgate/__init__.py".into(), init(&spec, &head));
    files.insert("opgate/_base.py".into(), format!("{head}{BASE}"));
    files.insert("opgate/errors.py".into(), errors(&spec, &head));
    files.insert("opgate/types.py".into(), types(&spec, &head));
    files.insert("opgate/resources.py".into(), resources(&spec, &head));
    files.insert("opgate/client.py".into(), client(&spec, &head));
    Ok(files)
}

fn pyproject(spec: &Spec, head: &str) -> String {
    format!(
        "{head}[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"opgate\"\nversion = \"{version}\"\n\
         description = \"Python client of the {title} API, generated from its OpenAPI document.\"\n\
         readme = \"README.md\"\nrequires-python = \">=3.10\"\ndependencies = [\"httpx>=0.27,<1\"]\n\n\
         [tool.setuptools]\npackages = [\"opgate\"]\n\n[tool.setuptools.package-data]\nopgate = [\"py.typed\"]\n",
        version = spec.version,
        title = spec.title,
    )
}

fn readme(spec: &Spec) -> String {
    let write = spec
        .ops
        .iter()
        .find(|o| !o.streaming && o.side_effect != "read")
        .or(spec.ops.first());
    let stream = spec.ops.iter().find(|o| o.streaming);
    let mut usage = String::from("from opgate import Client, OpgateError\n\nclient = Client()  # OPGATE_URL, OPGATE_TOKEN, OPGATE_WORKSPACE\n");
    if let Some(op) = write {
        usage.push_str(&example(op));
    }
    if let Some(op) = stream {
        usage.push_str(&example(op));
    }
    format!(
        "<!-- {} -->\n\n# `opgate` for Python\n\nA typed client of the {} API ({}), over `httpx`. Every operation is a \
         method of its resource, taking the input fields as keyword arguments; streaming operations return an \
         iterator that decodes NDJSON as it arrives; every error code is an exception class.\n\n```python\n{usage}```\n\n\
         Retries: a 429 or 503 is tried again up to `max_retries` times (default 2), after `Retry-After` when \
         the gateway sends it; a `write` or `destructive` call then carries one generated `Idempotency-Key` \
         (or yours: `idempotency_key=`), so it runs at most once. `export` calls (which return a secret) are \
         retried after a 429 only.\n",
        header(Lang::Python, spec),
        spec.title,
        spec.version
    )
}

fn init(spec: &Spec, head: &str) -> String {
    let mut names: Vec<String> = vec![
        "Client".into(),
        "DEFAULT_URL".into(),
        "NOT_GIVEN".into(),
        "NotGiven".into(),
        "Stream".into(),
        "OpgateError".into(),
        "OpgateConnectionError".into(),
        "OpgateProtocolError".into(),
        "OpgateTimeoutError".into(),
    ];
    names.extend(spec.codes.iter().map(|c| c.class_name()));
    let mut error_names: Vec<&String> = names[5..].iter().collect();
    error_names.sort();
    let mut out = format!(
        "{head}\"\"\"Python client of the {} API: ``Client(base_url=..., token=...)``, one attribute per \
         resource,\none method per operation (``client.api_keys.create(name=...)``).\"\"\"\n\n\
         from . import types\nfrom ._base import DEFAULT_URL, NOT_GIVEN, NotGiven, Stream\n\
         from .client import Client\nfrom .errors import (\n",
        spec.title
    );
    for name in &error_names {
        out.push_str(&format!("    {name},\n"));
    }
    out.push_str(")\n\n");
    out.push_str(&format!(
        "__version__ = \"{}\"\n\n__all__ = [\n",
        spec.version
    ));
    for name in names.iter().chain(std::iter::once(&"types".to_owned())) {
        out.push_str(&format!("    \"{name}\",\n"));
    }
    out.push_str("]\n");
    out
}

fn errors(spec: &Spec, head: &str) -> String {
    let mut out = format!("{head}{ERRORS_HEAD}");
    for code in &spec.codes {
        out.push_str(&format!(
            "\n\nclass {}(OpgateError):\n{}\n\n    code = \"{}\"\n    status = {}\n",
            code.class_name(),
            docstring(
                &format!("{} ``{}``: {}", code.status, code.code, code.description),
                4
            ),
            code.code,
            code.status
        ));
    }
    out.push_str("\n\n#: The exception class of each error code.\nERROR_CLASSES: dict[str, type[OpgateError]] = {\n");
    for code in &spec.codes {
        out.push_str(&format!("    \"{}\": {},\n", code.code, code.class_name()));
    }
    out.push_str("}\n#: The HTTP status of each error code.\nSTATUS_OF_CODE: dict[str, int] = {\n");
    for code in &spec.codes {
        out.push_str(&format!("    \"{}\": {},\n", code.code, code.status));
    }
    out.push_str("}\n\n\n");
    out.push_str(ERRORS_TAIL);
    out
}

/// A docstring indented by `pad`, wrapped to fit `black`'s width.
fn docstring(text: &str, pad: usize) -> String {
    let body = python_doc_text(text);
    let lines = wrap(&body, WIDTH - pad - 6);
    let inner = if lines.len() == 1 {
        format!("\"\"\"{}\"\"\"", lines[0])
    } else {
        format!("\"\"\"{}\n\"\"\"", lines.join("\n"))
    };
    indent(&inner, pad)
}

/// Text safe inside a `"""` docstring.
fn python_doc_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\"")
}

/// Whether `name` can be a Python identifier (and a keyword argument).
fn is_identifier(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
        "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
        "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
        "try", "while", "with", "yield",
    ];
    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.is_empty()
        && !KEYWORDS.contains(&name)
}

/// The keyword argument of input field `name`: the name itself, or with a trailing `_` where it is a
/// Python keyword (`from` → `from_`).
fn argument(name: &str) -> String {
    if is_identifier(name) {
        name.to_owned()
    } else {
        let cleaned = ident(name);
        if is_identifier(&cleaned) {
            cleaned
        } else {
            format!("{cleaned}_")
        }
    }
}

fn types(spec: &Spec, head: &str) -> String {
    let mut out = format!(
        "{head}\"\"\"The input and output types of the {} API, from the components of its OpenAPI \
         document.\"\"\"\n\nfrom __future__ import annotations\n\nfrom typing import {{typing}}\n",
        spec.title
    );
    let mut names = Vec::new();
    // Aliases first: the classes' annotations may name them, and they name no class.
    for (name, schema) in spec.schemas {
        if schema.get("properties").is_some() || schema.get("type") == Some(&Value::from("object"))
        {
            continue;
        }
        names.push(ident(name));
        let expr = match enum_values(schema) {
            Some(values) => format!(
                "Literal[{}]",
                values
                    .iter()
                    .map(|(v, _)| v.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => type_expr(&without_description(schema), Lang::Python),
        };
        let line = format!("{} = {expr}", ident(name));
        out.push('\n');
        if line.len() > WIDTH {
            let inner = expr.trim_start_matches("Literal[").trim_end_matches(']');
            out.push_str(&format!("{} = Literal[\n", ident(name)));
            for v in inner.split(", ") {
                out.push_str(&format!("    {v},\n"));
            }
            out.push_str("]\n");
        } else {
            out.push_str(&format!("{line}\n"));
        }
        if let Some(d) = description(schema) {
            out.push_str(&docstring(d, 0));
            out.push('\n');
        }
    }
    for (name, schema) in spec.schemas {
        if !(schema.get("properties").is_some()
            || schema.get("type") == Some(&Value::from("object")))
        {
            continue;
        }
        names.push(ident(name));
        let props = schema.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
        let fields: Vec<(&String, &Value)> = props.into_iter().flatten().collect();
        let total = fields.iter().all(|(n, _)| required.contains(&n.as_str()));
        let doc = description(schema).unwrap_or(name);
        if fields.iter().all(|(n, _)| is_identifier(n)) {
            out.push_str(&format!(
                "\n\nclass {}(TypedDict{}):\n{}\n",
                ident(name),
                if total { "" } else { ", total=False" },
                docstring(doc, 4)
            ));
            for (field, prop) in &fields {
                out.push_str(&format!(
                    "\n    {field}: {}\n",
                    type_expr(prop, Lang::Python)
                ));
                if let Some(d) = description(prop) {
                    out.push_str(&docstring(d, 4));
                    out.push('\n');
                }
            }
        } else {
            // Field names that are no identifiers: the functional form.
            out.push_str(&format!(
                "\n{} = TypedDict(\n    \"{}\",\n    {{\n",
                ident(name),
                ident(name)
            ));
            for (field, prop) in &fields {
                out.push_str(&format!(
                    "        {}: {},\n",
                    json_literal(&Value::String((*field).clone())),
                    type_expr(prop, Lang::Python)
                ));
            }
            out.push_str(&format!(
                "    }},\n    total={},\n)\n{}\n",
                if total { "True" } else { "False" },
                docstring(doc, 0)
            ));
        }
    }
    out.push_str("\n\n__all__ = [\n");
    for name in &names {
        out.push_str(&format!("    \"{name}\",\n"));
    }
    out.push_str("]\n");
    let typing = if mentions_any(&out) {
        "Any, Literal, TypedDict"
    } else {
        "Literal, TypedDict"
    };
    out.replacen("{typing}", typing, 1)
}

/// Whether generated code uses `typing.Any` in a type (not merely the word in a docstring).
fn mentions_any(code: &str) -> bool {
    ["Any]", ": Any\n", "-> Any:", "Any |", "| Any"]
        .iter()
        .any(|p| code.contains(p))
}

/// The schema without its description (whose `anyOf` refinements alone say nothing of the type).
fn without_description(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("description");
    }
    s
}

/// The names of the `types` module a type expression uses.
fn type_names(expr: &str, spec: &Spec) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| spec.schemas.keys().any(|n| &ident(n) == w))
        .map(str::to_owned)
        .collect()
}

/// The output type of an operation (an item's for a stream).
fn output_type(op: &Op) -> String {
    match op.output {
        Value::Null => "Any".into(),
        ref schema => type_expr(schema, Lang::Python),
    }
}

fn resources(spec: &Spec, head: &str) -> String {
    let mut used: Vec<String> = Vec::new();
    let mut classes = String::new();
    for (resource, ops) in spec.resources() {
        classes.push_str(&format!(
            "\n\nclass {}:\n    \"\"\"The ``{resource}.*`` operations.\"\"\"\n\n    def __init__(self, client: BaseClient) -> None:\n        self._client = client\n",
            pascal(resource)
        ));
        for op in ops {
            classes.push_str(&method(spec, op, &mut used));
        }
    }
    used.sort();
    used.dedup();
    let mut out = format!(
        "{head}\"\"\"The operations of the {} API, one class per resource: \
         ``client.api_keys.create(name=...)``.\"\"\"\n\n\
         from __future__ import annotations\n\nfrom typing import {}\n\nimport httpx\n\n\
         from ._base import NOT_GIVEN, NotGiven, Stream\n",
        spec.title,
        if mentions_any(&classes) {
            "TYPE_CHECKING, Any"
        } else {
            "TYPE_CHECKING"
        }
    );
    if !used.is_empty() {
        out.push_str("from .types import (\n");
        for name in &used {
            out.push_str(&format!("    {name},\n"));
        }
        out.push_str(")\n");
    }
    out.push_str("\nif TYPE_CHECKING:\n    from ._base import BaseClient\n");
    out.push_str(&classes);
    out
}

fn method(spec: &Spec, op: &Op, used: &mut Vec<String>) -> String {
    let fields = spec.fields(op);
    let mut params = vec!["self".to_owned()];
    if !fields.is_empty() {
        params.push("*".into());
    }
    // Required fields first (Python wants them before defaulted ones), in the spec's order.
    let ordered: Vec<&(&str, &Value, bool)> = fields
        .iter()
        .filter(|f| f.2)
        .chain(fields.iter().filter(|f| !f.2))
        .collect();
    for (name, schema, required) in &ordered {
        let ty = type_expr(schema, Lang::Python);
        used.extend(type_names(&ty, spec));
        params.push(if *required {
            format!("{}: {ty}", argument(name))
        } else {
            format!("{}: {ty} | NotGiven = NOT_GIVEN", argument(name))
        });
    }
    if fields.is_empty() {
        params.push("*".into());
    }
    if op.idempotent {
        params.push("idempotency_key: str | None = None".into());
    }
    params.push("request_id: str | None = None".into());
    params.push("timeout: float | httpx.Timeout | None | NotGiven = NOT_GIVEN".into());
    let output = output_type(op);
    used.extend(type_names(&output, spec));
    let returns = if op.streaming {
        format!("Stream[{output}]")
    } else {
        output
    };

    let mut doc = format!(
        "{}\n\n{}",
        python_doc_text(&op.summary),
        python_doc_text(&op_note(op))
    );
    let mut args = String::new();
    for (name, schema, required) in &ordered {
        let mut text = description(schema).unwrap_or("").to_owned();
        if *required {
            text.push_str(" Required.");
        }
        if let Some(default) = schema.get("default") {
            text.push_str(&format!(
                " Default: ``{}``.",
                python_literal(default, &json_literal(default))
            ));
        }
        args.push_str(&arg_doc(&argument(name), text.trim()));
    }
    if op.idempotent {
        args.push_str(&arg_doc(
            "idempotency_key",
            "Makes a retry safe: a retry with the same key and body gets the first response \
             (``Idempotent-Replayed: true``). Generated when retries are on and none is given.",
        ));
    }
    args.push_str(&arg_doc(
        "request_id",
        "``X-Request-Id`` to send; the gateway generates one otherwise.",
    ));
    args.push_str(&arg_doc(
        "timeout",
        "Overrides the client's timeout for this call.",
    ));
    doc.push_str(&format!("\n\nArgs:\n{args}"));
    if op.streaming {
        doc.push_str(&format!(
            "\nReturns:\n    A :class:`Stream` of ``{}``, decoded as the lines arrive; an error line raises.\n",
            output_type(op)
        ));
    }

    let mut body = String::from("{\n");
    for (name, _, _) in &fields {
        body.push_str(&format!(
            "                \"{name}\": {},\n",
            argument(name)
        ));
    }
    body.push_str("            }");
    if fields.is_empty() {
        body = "{}".into();
    }
    let idempotency = if op.idempotent {
        "            idempotency_key=idempotency_key,\n"
    } else {
        ""
    };
    format!(
        "\n    def {name}(\n{params}    ) -> {returns}:\n{doc}\n        return self._client._call(\n            \"{id}\",\n            {body},\n            side_effect=\"{side}\",\n            streaming={streaming},\n{idempotency}            request_id=request_id,\n            timeout=timeout,\n        )\n",
        name = argument(&op.action),
        params = params
            .iter()
            .map(|p| format!("        {p},\n"))
            .collect::<String>(),
        doc = indent(&format!("\"\"\"{}\"\"\"", doc.trim_end().to_owned() + "\n"), 8),
        id = op.id,
        side = op.side_effect,
        streaming = if op.streaming { "True" } else { "False" },
    )
}

/// The line under an operation's summary: scope, side effect, stream.
fn op_note(op: &Op) -> String {
    format!(
        "Scope {} · side effect ``{}``{}.",
        op.scope.replace('`', "``"),
        op.side_effect,
        if op.streaming {
            " · streams NDJSON"
        } else {
            ""
        }
    )
}

/// One entry of a docstring's `Args:` section, wrapped.
fn arg_doc(name: &str, text: &str) -> String {
    let text = python_doc_text(text);
    let lines = wrap(&format!("{name}: {text}"), WIDTH - 8 - 4);
    let mut out = format!("    {}\n", lines[0]);
    for l in &lines[1..] {
        out.push_str(&format!("        {l}\n"));
    }
    out
}

fn client(spec: &Spec, head: &str) -> String {
    let resources = spec.resources();
    let mut out = format!(
        "{head}\"\"\"The client: ``Client(base_url=..., token=...)`` with one attribute per resource.\"\"\"\n\n\
         from __future__ import annotations\n\nfrom functools import cached_property\n\n\
         from ._base import BaseClient\nfrom .resources import (\n"
    );
    let mut classes: Vec<String> = resources.iter().map(|(r, _)| pascal(r)).collect();
    classes.sort();
    for c in &classes {
        out.push_str(&format!("    {c},\n"));
    }
    out.push_str(&format!(
        ")\n\n\nclass Client(BaseClient):\n{}\n",
        docstring(
            &format!(
                "A client of the {} API ({}): ``Client(base_url=..., token=..., workspace=...)``, each \
                 falling back to ``OPGATE_URL``, ``OPGATE_TOKEN`` and ``OPGATE_WORKSPACE``. See \
                 :class:`~opgate._base.BaseClient` for retries and timeouts.",
                spec.title, spec.version
            ),
            4
        )
    ));
    for (resource, _) in &resources {
        out.push_str(&format!(
            "\n    @cached_property\n    def {}(self) -> {}:\n        \"\"\"The ``{resource}.*`` operations.\"\"\"\n        return {}(self)\n",
            argument(resource),
            pascal(resource),
            pascal(resource)
        ));
    }
    out
}

/// The call of `op` with its example input, as the reference pages show it.
pub(super) fn example(op: &Op) -> String {
    let args: Vec<String> = op
        .example
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{}={}", argument(k), python_literal(v, &json_literal(v))))
        .collect();
    let target = format!("client.{}.{}", argument(&op.resource), argument(&op.action));
    let (lead, pad) = if op.streaming {
        ("for item in ".to_owned(), "")
    } else {
        ("result = ".to_owned(), "")
    };
    let one_line = format!(
        "{lead}{target}({}){}",
        args.join(", "),
        if op.streaming { ":" } else { "" }
    );
    let call = if one_line.len() <= WIDTH {
        one_line
    } else {
        format!(
            "{lead}{target}(\n{}){}",
            args.iter()
                .map(|a| format!("    {pad}{a},\n"))
                .collect::<String>(),
            if op.streaming { ":" } else { "" }
        )
    };
    if op.streaming {
        format!("{call}\n    print(item)\n")
    } else {
        format!("{call}\n")
    }
}
