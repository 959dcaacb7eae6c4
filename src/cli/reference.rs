//! `opgate spec` and `opgate docs`: the OpenAPI document of the built-in operations, the client SDKs and the
//! Markdown reference generated from a spec (what `scripts/gen-spec` commits).

use std::path::Path;

use opgate::BoxError;

/// Prints (or writes to `out`) the OpenAPI 3.1 document of every built-in operation, and of the upstream
/// operations of `config` when given.
pub(crate) fn spec(config: Option<&Path>, out: Option<&Path>) -> Result<(), BoxError> {
    let text = opgate::spec::render(&configured(config)?);
    match out {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// The spec of the built-in operations, and of the upstream operations `config` declares when given.
fn configured(config: Option<&Path>) -> Result<serde_json::Value, BoxError> {
    let Some(path) = config else {
        return opgate::openapi();
    };
    let upstreams =
        opgate::upstream::load_description(path).map_err(|problems| problems.join("\n"))?;
    opgate::Service::builder("unused")
        .upstreams(upstreams)
        .openapi(&opgate::api_info())
}

/// The languages `opgate spec --sdk` generates a client in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SdkLanguage {
    /// Package `opgate` over `httpx` (`sdks/python` in this repository).
    Python,
    /// Fetch-based ES modules, no runtime dependencies (`sdks/typescript`).
    Typescript,
}

/// Writes the SDK of `language` for the spec in `from` (default: the built-in operations) into `out`,
/// removing generated files that no longer exist; files of the user's own (tests, `node_modules`, a lock
/// file) stay.
pub(crate) fn sdk(
    language: SdkLanguage,
    from: Option<&Path>,
    config: Option<&Path>,
    out: &Path,
) -> Result<(), BoxError> {
    let doc = match from {
        Some(path) => read_spec(path)?,
        None => configured(config)?,
    };
    let files = match language {
        SdkLanguage::Python => opgate::spec::sdk::python(&doc)?,
        SdkLanguage::Typescript => opgate::spec::sdk::typescript(&doc)?,
    };
    for dir in ["opgate", "src"] {
        remove_stale(&out.join(dir), Path::new(dir), &files)?;
    }
    for (name, text) in &files {
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Removes the generated files under `dir` (`relative` from the package root) that `files` no longer has.
fn remove_stale(
    dir: &Path,
    relative: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Result<(), BoxError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = relative.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            remove_stale(&path, &name, files)?;
            continue;
        }
        let generated =
            std::fs::read_to_string(&path).is_ok_and(|t| opgate::spec::sdk::is_generated(&t));
        if generated && !files.contains_key(name.to_string_lossy().as_ref()) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn read_spec(path: &Path) -> Result<serde_json::Value, BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// Writes the Markdown reference of `spec` into `out`, removing generated pages that no longer exist.
pub(crate) fn docs(spec: &Path, out: &Path) -> Result<(), BoxError> {
    let doc = read_spec(spec)?;
    let pages = opgate::spec::markdown::reference(&doc)?;
    std::fs::create_dir_all(out)?;
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let generated = std::fs::read_to_string(&path)
            .is_ok_and(|t| t.starts_with(opgate::spec::markdown::GENERATED_HEADER));
        if generated && !pages.contains_key(&name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, page) in &pages {
        std::fs::write(out.join(name), page)?;
    }
    Ok(())
}
