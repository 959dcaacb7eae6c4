//! The committed API description must match the code: `spec/openapi.json` what the registry generates, and
//! `docs/api-reference/` and the SDKs in `sdks/` what the committed spec generates. Every failure prints the one
//! command that fixes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

const FIX: &str = "run `scripts/gen-spec` and commit spec/, docs/api-reference/ and sdks/";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn committed_spec() -> Value {
    let text = std::fs::read_to_string(root().join("spec/openapi.json"))
        .unwrap_or_else(|e| panic!("spec/openapi.json is missing ({e}): {FIX}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("spec/openapi.json is not JSON ({e}): {FIX}"))
}

#[test]
fn committed_spec_matches_the_code() {
    let generated = opgate::spec::render(&opgate::openapi().unwrap());
    let committed = std::fs::read_to_string(root().join("spec/openapi.json")).unwrap_or_default();
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b);
        panic!(
            "spec/openapi.json is stale (first difference near line {}): {FIX}",
            line.map_or(0, |l| l + 1)
        );
    }
}

#[test]
fn spec_generation_is_deterministic() {
    let a = opgate::spec::render(&opgate::openapi().unwrap());
    let b = opgate::spec::render(&opgate::openapi().unwrap());
    assert_eq!(a, b);
}

#[test]
fn committed_docs_match_the_committed_spec() {
    let pages = opgate::spec::markdown::reference(&committed_spec()).unwrap();
    let dir = root().join("docs/api-reference");
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("docs/api-reference is missing ({e}): {FIX}"))
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        on_disk.insert(name, std::fs::read_to_string(&path).unwrap());
    }
    for (name, page) in &pages {
        match on_disk.get(name) {
            None => panic!("docs/api-reference/{name} is missing: {FIX}"),
            Some(text) if text != page => panic!("docs/api-reference/{name} is stale: {FIX}"),
            Some(_) => {}
        }
    }
    for name in on_disk.keys() {
        assert!(
            pages.contains_key(name),
            "docs/api-reference/{name} is not generated from the spec any more: {FIX}"
        );
    }
    for page in pages.values() {
        assert!(page.starts_with(opgate::spec::markdown::GENERATED_HEADER));
    }
}

/// The generated files under `dir` (by their header), relative to it; `node_modules` and build output are not
/// looked into.
fn generated_files_under(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["node_modules", "dist", "build", "__pycache__"].contains(&name.as_str()) {
                generated_files_under(&path, root, out);
            }
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            if opgate::spec::sdk::is_generated(&text) {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(relative, text);
            }
        }
    }
}

#[test]
fn committed_sdks_match_the_committed_spec() {
    let spec = committed_spec();
    let sdks = [
        ("sdks/python", opgate::spec::sdk::python(&spec).unwrap()),
        (
            "sdks/typescript",
            opgate::spec::sdk::typescript(&spec).unwrap(),
        ),
    ];
    for (dir, files) in sdks {
        let base = root().join(dir);
        assert!(files.len() > 5, "{dir}: {} files", files.len());
        for (name, text) in &files {
            match std::fs::read_to_string(base.join(name)) {
                Err(_) => panic!("{dir}/{name} is missing: {FIX}"),
                Ok(committed) if &committed != text => panic!("{dir}/{name} is stale: {FIX}"),
                Ok(_) => {}
            }
        }
        let mut on_disk = BTreeMap::new();
        generated_files_under(&base, &base, &mut on_disk);
        for name in on_disk.keys() {
            assert!(
                files.contains_key(name),
                "{dir}/{name} is not generated from the spec any more: {FIX}"
            );
        }
    }
}

#[test]
fn every_operation_appears_under_both_paths_with_its_declaration() {
    let spec = committed_spec();
    let registry = opgate::describe_registry().unwrap();
    assert!(!registry.entries().is_empty());
    for entry in registry.entries() {
        let meta = entry.meta;
        let canonical = format!("/v1/op/{}", meta.id);
        let alias = format!("/v1/{}/{}", meta.resource(), meta.action());
        for path in [&canonical, &alias] {
            let op = &spec["paths"][path]["post"];
            assert_eq!(op["x-side-effect"], meta.side_effect.as_str(), "{path}");
            // Either credential works: an API key or a session token, each holding the scope.
            let scopes = if meta.scope.is_empty() {
                assert_eq!(op["x-scope"], Value::Null, "{path}");
                serde_json::json!([])
            } else {
                assert_eq!(op["x-scope"], meta.scope, "{path}");
                serde_json::json!([meta.scope])
            };
            assert_eq!(
                op["security"],
                serde_json::json!([{ "bearerAuth": scopes }, { "sessionAuth": scopes }]),
                "{path}"
            );
            assert_eq!(op["summary"], meta.summary, "{path}");
            let content_type = if entry.streaming {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            assert!(
                op["responses"]["200"]["content"][content_type].is_object(),
                "{path}: 200 is {content_type}"
            );
            for status in ["400", "401", "403", "413", "415", "500", "503"] {
                assert!(op["responses"][status].is_object(), "{path} lacks {status}");
            }
        }
        assert_eq!(spec["paths"][&canonical]["post"]["operationId"], meta.id);
    }
}

#[test]
fn both_security_schemes_are_declared() {
    let spec = committed_spec();
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["type"], "http");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["sessionAuth"]["type"], "http");
    assert_eq!(schemes["sessionAuth"]["scheme"], "bearer");
    assert_eq!(schemes["sessionAuth"]["bearerFormat"], "JWT");
    assert!(schemes["sessionAuth"]["description"].is_string());
}

#[test]
fn every_example_decodes_and_validates() {
    let registry = opgate::describe_registry().unwrap();
    for entry in registry.entries() {
        entry
            .decode(entry.example.as_bytes())
            .unwrap_or_else(|e| panic!("the example of {} is invalid: {e}", entry.meta.id));
    }
}

#[test]
fn every_field_has_a_description() {
    let spec = committed_spec();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        assert!(
            schema.get("description").is_some(),
            "type {name} has no description"
        );
        for (field, prop) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let described = prop
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.is_empty());
            assert!(
                described,
                "{name}.{field} has no description: add a doc comment to the Rust field"
            );
        }
    }
}
