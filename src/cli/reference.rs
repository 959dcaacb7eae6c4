//! `opgate spec` and `opgate docs`: the OpenAPI document of the built-in operations, and the Markdown
//! reference generated from a spec (what `scripts/gen-spec` commits).

use std::path::Path;

use opgate::BoxError;

/// Prints (or writes to `out`) the OpenAPI 3.1 document of every built-in operation.
pub(crate) fn spec(out: Option<&Path>) -> Result<(), BoxError> {
    let text = opgate::spec::render(&opgate::openapi()?);
    match out {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Writes the Markdown reference of `spec` into `out`, removing generated pages that no longer exist.
pub(crate) fn docs(spec: &Path, out: &Path) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", spec.display()))?;
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
