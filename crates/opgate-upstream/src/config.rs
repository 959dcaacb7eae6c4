//! The `[[upstream]]` tables of the configuration file: parsed, checked as a whole (every problem listed, not
//! just the first), and turned into operations the registry can take.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opgate_core::{scope, DynamicOperation, OpMeta, SideEffect};
use serde::Deserialize;
use serde_json::Value;

use crate::call::Upstream;

/// The shortest identity secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest timeout an upstream may be given.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// One `[[upstream]]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    id: String,
    summary: String,
    scope: String,
    side_effect: String,
    url: String,
    input_schema: SchemaSource,
    #[serde(default)]
    output_schema: Option<SchemaSource>,
    #[serde(default)]
    streaming: bool,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    http2: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    check_output: bool,
    #[serde(default)]
    example: Option<toml::Table>,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// A schema: the path of a JSON file (relative to the configuration file), or an inline table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SchemaSource {
    File(PathBuf),
    Inline(toml::Table),
}

/// What an upstream operation was declared with, checked.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// `<resource>.<action>`.
    pub id: String,
    /// One line for the spec and the docs.
    pub summary: String,
    /// The scope a caller must hold.
    pub scope: String,
    /// What the call does to the world.
    pub side_effect: SideEffect,
    /// Where the body is POSTed.
    pub url: url::Url,
    /// JSON Schema of the request body.
    pub input_schema: Value,
    /// JSON Schema of the answer (of one line when streaming), if declared.
    pub output_schema: Option<Value>,
    /// Whether the upstream answers NDJSON.
    pub streaming: bool,
    /// How long the upstream may take to answer (and, when streaming, to send each next line).
    pub timeout: Duration,
    /// HTTP/2 with prior knowledge to an `http://` upstream (h2c); `https://` negotiates by ALPN.
    pub http2: bool,
    /// PEM certificates trusted for an `https://` upstream besides the public roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Whether answers are checked against the output schema (502 when they do not match).
    pub check_output: bool,
    /// An example request body.
    pub example: Value,
    /// Signs the caller's identity for the upstream.
    pub secret: Vec<u8>,
}

/// The upstream operations of a configuration file, with every problem found (`upstream `id`: ...`, one per
/// line) when it is not valid.
pub fn load(path: &Path) -> Result<Vec<Declaration>, Vec<String>> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Like [`load`], for describing the operations only (their spec, the scopes a key may hold): the identity
/// secrets are not needed there, so a missing one is no problem. Declarations loaded so must not serve.
pub fn load_description(path: &Path) -> Result<Vec<Declaration>, Vec<String>> {
    load_with(path, &|_| Some(UNUSED_SECRET.to_owned()))
}

/// What [`load_description`] puts where a secret would be.
const UNUSED_SECRET: &str = "not a secret: this declaration only describes";

fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Declaration>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&table, base, env)
}

/// The `[[upstream]]` tables of a parsed configuration file; relative schema and secret paths are read from
/// `base`, `secret_env` names looked up with `env`.
pub fn parse(
    file: &toml::Table,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Declaration>, Vec<String>> {
    let Some(tables) = file.get("upstream") else {
        return Ok(Vec::new());
    };
    let Some(tables) = tables.as_array() else {
        return Err(vec![
            "`upstream` must be an array of tables: write each as [[upstream]]".to_owned(),
        ]);
    };
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut declarations = Vec::new();
    for (i, value) in tables.iter().enumerate() {
        let table: Table = match value.clone().try_into() {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("upstream #{}: {}", i + 1, e.message()));
                continue;
            }
        };
        let name = format!("upstream `{}`", table.id);
        let before = problems.len();
        let mut problem = |p: String| problems.push(format!("{name}: {p}"));
        if !seen.insert(table.id.clone()) {
            problem("declared twice".into());
        }
        let well_formed = table
            .id
            .split_once('.')
            .is_some_and(|(r, a)| scope::is_valid(&format!("{r}:{a}")) && a != "*");
        if !well_formed {
            problem(
                "`id` must be <resource>.<action> in lowercase (e.g. `reports.generate`)".into(),
            );
        }
        let scope_ok = table.scope == scope::AUTHENTICATED
            || (scope::is_valid(&table.scope) && !table.scope.contains('*'));
        if !scope_ok {
            problem(format!(
                "`scope` `{}` is not a scope (<resource>:<action>, no wildcard)",
                table.scope
            ));
        }
        if table.summary.trim().is_empty() || table.summary.chars().any(char::is_control) {
            problem("`summary` must be one line of text".into());
        }
        let side_effect = match table.side_effect.as_str() {
            "read" => Some(SideEffect::Read),
            "write" => Some(SideEffect::Write),
            "export" => Some(SideEffect::Export),
            "destructive" => Some(SideEffect::Destructive),
            other => {
                problem(format!(
                    "`side_effect` `{other}` is not one of read, write, export, destructive"
                ));
                None
            }
        };
        let url = match url::Url::parse(&table.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    problem("`url` must not carry credentials".into());
                }
                Some(u)
            }
            Ok(_) => {
                problem(format!(
                    "`url` `{}` must be an http:// or https:// URL with a host",
                    table.url
                ));
                None
            }
            Err(e) => {
                problem(format!("`url` `{}` does not parse: {e}", table.url));
                None
            }
        };
        if table.timeout_ms == 0 || table.timeout_ms > MAX_TIMEOUT_MS {
            problem(format!(
                "`timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}"
            ));
        }
        let input_schema = schema(&table.input_schema, base, "input_schema", &mut problem);
        let output_schema = table
            .output_schema
            .as_ref()
            .and_then(|s| schema(s, base, "output_schema", &mut problem));
        if table.check_output && table.output_schema.is_none() {
            problem("`check_output` needs an `output_schema`".into());
        }
        let declared = table.example.is_some();
        let example = match (&table.example, &input_schema) {
            (Some(example), _) => toml_to_json(toml::Value::Table(example.clone())),
            (None, Some(input)) => made_up(input),
            (None, None) => Value::Object(Default::default()),
        };
        if let Some(input) = &input_schema {
            if let Ok(validator) = crate::call::validator(input) {
                if let Some(e) = validator.iter_errors(&example).next() {
                    problem(if declared {
                        format!(
                            "`example` does not match the input schema: {}",
                            crate::call::describe(&e)
                        )
                    } else {
                        format!(
                            "give an `example` request body: none could be made from the input schema ({})",
                            crate::call::describe(&e)
                        )
                    });
                }
            }
        }
        let secret = match (&table.secret_env, &table.secret_file) {
            (Some(var), None) => match env(var) {
                Some(s) => Some(s.into_bytes()),
                None => {
                    problem(format!("`secret_env`: the environment has no `{var}`"));
                    None
                }
            },
            (None, Some(file)) => match std::fs::read(base.join(file)) {
                Ok(bytes) => Some(trim_newline(bytes)),
                Err(e) => {
                    problem(format!("`secret_file` {}: {e}", base.join(file).display()));
                    None
                }
            },
            _ => {
                problem(
                    "give exactly one of `secret_env` (an environment variable) or `secret_file`: the \
                     identity the upstream receives is signed with it"
                        .into(),
                );
                None
            }
        };
        if secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_BYTES) {
            problem(format!(
                "the identity secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        let ca_pem = match &table.ca_file {
            Some(file) => match std::fs::read(base.join(file)) {
                Ok(pem)
                    if reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()) =>
                {
                    Some(pem)
                }
                Ok(_) => {
                    problem(format!(
                        "`ca_file` {}: no PEM certificate",
                        base.join(file).display()
                    ));
                    None
                }
                Err(e) => {
                    problem(format!("`ca_file` {}: {e}", base.join(file).display()));
                    None
                }
            },
            None => None,
        };
        if problems.len() > before {
            continue;
        }
        let (Some(side_effect), Some(url), Some(input_schema), Some(secret)) =
            (side_effect, url, input_schema, secret)
        else {
            continue;
        };
        declarations.push(Declaration {
            id: table.id,
            summary: table.summary,
            scope: table.scope,
            side_effect,
            url,
            input_schema,
            output_schema,
            streaming: table.streaming,
            timeout: Duration::from_millis(table.timeout_ms),
            http2: table.http2,
            ca_pem,
            check_output: table.check_output,
            example,
            secret,
        });
    }
    if problems.is_empty() {
        Ok(declarations)
    } else {
        Err(problems)
    }
}

/// Reads and compiles one schema (a JSON file or an inline table); `None` after naming the problem.
fn schema(
    source: &SchemaSource,
    base: &Path,
    field: &str,
    problem: &mut dyn FnMut(String),
) -> Option<Value> {
    let value = match source {
        SchemaSource::File(path) => {
            let path = base.join(path);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problem(format!("`{field}` {}: {e}", path.display()));
                    return None;
                }
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => v,
                Err(e) => {
                    problem(format!("`{field}` {}: not JSON ({e})", path.display()));
                    return None;
                }
            }
        }
        SchemaSource::Inline(table) => toml_to_json(toml::Value::Table(table.clone())),
    };
    if value.get("type").and_then(Value::as_str) != Some("object") {
        problem(format!(
            "`{field}` must describe a JSON object (`\"type\": \"object\"`)"
        ));
        return None;
    }
    // Schemas are JSON Schema 2020-12, and validated as such: another draft named in `$schema` would be read
    // with other rules than its author meant (draft-07's `dependencies` is no keyword in 2020-12).
    if let Some(named) = value.get("$schema") {
        let draft_2020_12 = named
            .as_str()
            .map(|uri| uri.trim_end_matches('#'))
            .is_some_and(|uri| uri == "https://json-schema.org/draft/2020-12/schema");
        if !draft_2020_12 {
            problem(format!(
                "`{field}`: `$schema` must be absent or https://json-schema.org/draft/2020-12/schema (schemas are \
                 JSON Schema 2020-12)"
            ));
            return None;
        }
    }
    if let Err(e) = jsonschema::meta::validate(&value) {
        problem(format!("`{field}` is not a valid JSON Schema: {e}"));
        return None;
    }
    if let Err(e) = crate::call::validator(&value) {
        problem(format!("`{field}` does not compile: {e}"));
        return None;
    }
    Some(value)
}

/// An example body made from an object schema when none is declared: each required property with a value of
/// its type (its `const`, first `enum` value, `default` or `minimum` when given). Checked against the schema
/// by the caller; a schema it cannot satisfy needs an `example`.
fn made_up(schema: &Value) -> Value {
    let properties = schema.get("properties").and_then(Value::as_object);
    let mut body = serde_json::Map::new();
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
        body.insert(name.to_owned(), value_of(property));
    }
    Value::Object(body)
}

fn value_of(schema: &Value) -> Value {
    if let Some(v) = schema.get("const").or_else(|| schema.get("default")) {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::Array(kinds)) => kinds.iter().find(|k| *k != "null").and_then(Value::as_str),
        Some(Value::String(kind)) => Some(kind.as_str()),
        _ => None,
    };
    match kind {
        Some("integer") | Some("number") => schema
            .get("minimum")
            .cloned()
            .unwrap_or_else(|| Value::from(1)),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => made_up(schema),
        Some("null") => Value::Null,
        _ => {
            let length = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            Value::String("example".chars().cycle().take(length.max(7)).collect())
        }
    }
}

fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

/// A string that lives as long as the process, allocated once per distinct value: declarations hold
/// `&'static str` (as compiled operations do), and reloading the same configuration allocates nothing new.
fn intern(text: &str) -> &'static str {
    static STRINGS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut strings = STRINGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = strings.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    strings.insert(leaked);
    leaked
}

/// The name a schema of operation `id` is published under: `reports.generate` → `ReportsGenerateInput`.
fn schema_name(id: &str, suffix: &str) -> String {
    let mut name = String::new();
    for word in id.split(['.', '_']) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name + suffix
}

impl Declaration {
    /// The operation the registry takes: the declaration as data and the handler that forwards calls.
    pub fn operation(&self) -> Result<DynamicOperation, String> {
        let example = serde_json::to_string(&self.example).expect("JSON serializes");
        Ok(DynamicOperation {
            meta: OpMeta {
                id: intern(&self.id),
                scope: intern(&self.scope),
                side_effect: self.side_effect,
                summary: intern(&self.summary),
            },
            streaming: self.streaming,
            input_schema: self.input_schema.clone(),
            input_name: schema_name(&self.id, "Input"),
            output_schema: self.output_schema.clone(),
            output_name: schema_name(&self.id, if self.streaming { "Item" } else { "Output" }),
            example: intern(&example),
            errors: &[
                opgate_core::Code::BadGateway,
                opgate_core::Code::GatewayTimeout,
            ],
            handler: Arc::new(Upstream::new(self.clone())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Declaration>, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.json"),
            r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#,
        )
        .unwrap();
        let table: toml::Table = text.parse().unwrap();
        parse(&table, dir.path(), &|name| {
            (name == "SECRET").then(|| "s".repeat(32))
        })
    }

    #[test]
    fn a_valid_declaration_parses() {
        let got = parse_str(
            r#"
            [[upstream]]
            id = "reports.generate"
            summary = "Generate a report."
            scope = "reports:write"
            side_effect = "write"
            url = "http://127.0.0.1:9000/generate"
            input_schema = "in.json"
            output_schema = { type = "object", properties = { id = { type = "string" } } }
            secret_env = "SECRET"
            example = { n = 3 }
            "#,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!(d.id, "reports.generate");
        assert_eq!(d.side_effect, SideEffect::Write);
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(d.example, serde_json::json!({"n": 3}));
        assert_eq!(d.output_schema.as_ref().unwrap()["type"], "object");
        assert_eq!(schema_name(&d.id, "Input"), "ReportsGenerateInput");
    }

    #[test]
    fn every_problem_is_listed() {
        let problems = parse_str(
            r#"
            [[upstream]]
            id = "Reports"
            summary = "x"
            scope = "reports:*"
            side_effect = "sometimes"
            url = "ftp://host/x"
            input_schema = { type = "array" }
            timeout_ms = 0
            check_output = true

            [[upstream]]
            id = "a.b"
            summary = "x"
            scope = "a:b"
            side_effect = "read"
            url = "http://127.0.0.1:1/"
            input_schema = "missing.json"
            secret_env = "SECRET"

            [[upstream]]
            id = "a.b"
            summary = "x"
            scope = "a:b"
            side_effect = "read"
            url = "http://127.0.0.1:1/"
            input_schema = { type = "object", properties = { n = { type = "nonsense" } } }
            secret_env = "NOT_SET"
            surprise = 1
            "#,
        )
        .unwrap_err();
        let text = problems.join("\n");
        for part in [
            "upstream `Reports`: `id` must be <resource>.<action>",
            "upstream `Reports`: `scope` `reports:*` is not a scope",
            "upstream `Reports`: `side_effect` `sometimes` is not one of read, write, export, destructive",
            "upstream `Reports`: `url` `ftp://host/x` must be an http:// or https:// URL with a host",
            "upstream `Reports`: `timeout_ms` must be between 1 and 300000",
            "upstream `Reports`: `input_schema` must describe a JSON object",
            "upstream `Reports`: `check_output` needs an `output_schema`",
            "upstream `Reports`: give exactly one of `secret_env`",
            "upstream `a.b`: `input_schema` ",
            "missing.json",
            "upstream #3: unknown field `surprise`",
        ] {
            assert!(text.contains(part), "{part:?} not in:\n{text}");
        }
    }

    #[test]
    fn interning_allocates_once_per_value() {
        let owned = String::from("reports.generate");
        let a = intern(owned.as_str());
        let b = intern("reports.generate");
        assert!(std::ptr::eq(a, b));
    }
}
