//! OpenAPI links, derived from the registry: an input field whose schema is an id pattern (`^key_[0-7]…$`)
//! takes an id of that kind, and an answer whose schema holds a required field with the same pattern gives
//! one. Each operation whose answer gives an id links to every operation taking an id of that kind, so a
//! client (or a stateful fuzzer) can chain create → get → update → rotate → revoke without a list of links
//! written by hand. Nothing is declared twice: the id patterns are the validation rules of the types.

use std::collections::BTreeMap;

use opgate_core::Entry;
use serde_json::{json, Map, Value};

/// One link: the answer's value at `pointer` feeds the `field` of operation `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Feed {
    pub target: &'static str,
    pub field: String,
    pub pointer: String,
}

/// The id kind a string schema's pattern declares: `^key_[0-7][0-9a-hjkmnp-tv-z]{25}$` is `key` (a pattern
/// that also admits older forms, such as audit ids, counts as long as it holds the ULID form).
pub(crate) fn id_kind(schema: &Value) -> Option<&str> {
    let pattern = schema.get("pattern")?.as_str()?;
    let rest = pattern.strip_prefix('^')?;
    let (kind, ulid) = rest.split_once('_')?;
    let ident = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase());
    (ident && ulid.contains("[0-7][0-9a-hjkmnp-tv-z]{25}")).then_some(kind)
}

/// Whether a schema's `type` allows a string (`"string"`, or a list holding it).
fn admits_string(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    }
}

fn resolve<'a>(schema: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
    {
        Some(name) => schemas.get(name).unwrap_or(schema),
        None => schema,
    }
}

/// The top-level input fields that take an id, with its kind.
pub(crate) fn consumed(input: &Value, schemas: &Map<String, Value>) -> Vec<(String, String)> {
    let input = resolve(input, schemas);
    let Some(props) = input.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .filter(|(_, schema)| admits_string(schema))
        .filter_map(|(field, schema)| Some((field.clone(), id_kind(schema)?.to_owned())))
        .collect()
}

/// The ids an answer always holds: for each kind, the JSON pointer of the first required string field with
/// that kind's pattern (depth first, in declaration order; at most three levels down).
pub(crate) fn produced(output: &Value, schemas: &Map<String, Value>) -> BTreeMap<String, String> {
    fn walk(
        schema: &Value,
        schemas: &Map<String, Value>,
        at: &str,
        depth: usize,
        found: &mut BTreeMap<String, String>,
    ) {
        let schema = resolve(schema, schemas);
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
        for (field, prop) in props {
            if !required.contains(&field.as_str()) {
                continue;
            }
            let pointer = format!("{at}/{field}");
            if prop.get("type") == Some(&json!("string")) {
                if let Some(kind) = id_kind(prop) {
                    found.entry(kind.to_owned()).or_insert(pointer);
                }
            } else if depth < 3 {
                walk(prop, schemas, &pointer, depth + 1, found);
            }
        }
    }
    let mut found = BTreeMap::new();
    match output.get("type") {
        // A stream: the array of its lines; the first item stands for the answer.
        Some(t) if t == "array" => {
            if let Some(items) = output.get("items") {
                walk(items, schemas, "/0", 1, &mut found);
            }
        }
        _ => walk(output, schemas, "", 0, &mut found),
    }
    found
}

/// For each operation id, the links of its answer.
pub(crate) fn flows<'a>(
    described: impl Iterator<Item = (&'a Entry, &'a Value, &'a Value)>,
    schemas: &Map<String, Value>,
) -> BTreeMap<&'static str, Vec<Feed>> {
    let described: Vec<_> = described.collect();
    let answers: Vec<_> = described
        .iter()
        .map(|(entry, _, output)| {
            let output = if entry.streaming {
                json!({ "type": "array", "items": output })
            } else {
                (*output).clone()
            };
            (entry.meta.id, produced(&output, schemas))
        })
        .collect();
    let takers: Vec<_> = described
        .iter()
        .map(|(entry, input, _)| (entry.meta.id, consumed(input, schemas)))
        .collect();
    let mut flows = BTreeMap::new();
    for (source, gives) in &answers {
        let feeds: Vec<Feed> = takers
            .iter()
            .flat_map(|(target, takes)| {
                takes.iter().filter_map(|(field, kind)| {
                    Some(Feed {
                        target,
                        field: field.clone(),
                        pointer: gives.get(kind)?.clone(),
                    })
                })
            })
            .collect();
        if !feeds.is_empty() {
            flows.insert(*source, feeds);
        }
    }
    flows
}

/// The `links` object of a 200 response; `suffix` picks the targets' alias paths (`.alias`) or not.
pub(crate) fn to_openapi(feeds: &[Feed], suffix: &str) -> Value {
    let mut links = Map::new();
    for feed in feeds {
        links.insert(
            format!("{}.{}", feed.target, feed.field),
            json!({
                "operationId": format!("{}{suffix}", feed.target),
                "requestBody": { feed.field.clone(): format!("$response.body#{}", feed.pointer) },
                "description": format!("`{}` of `{}` from this answer's `{}`.", feed.field, feed.target, feed.pointer),
            }),
        );
    }
    Value::Object(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_kinds_come_from_patterns() {
        let kind = |p: &str| id_kind(&json!({ "pattern": p })).map(str::to_owned);
        assert_eq!(
            kind("^key_[0-7][0-9a-hjkmnp-tv-z]{25}$").as_deref(),
            Some("key")
        );
        assert_eq!(
            kind("^aud_([0-9]{1,18}|[0-7][0-9a-hjkmnp-tv-z]{25})$").as_deref(),
            Some("aud")
        );
        assert_eq!(kind("^[a-z]+$"), None);
        assert_eq!(kind("^Key_[0-7][0-9a-hjkmnp-tv-z]{25}$"), None);
    }
}
