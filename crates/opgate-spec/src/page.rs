//! The interactive reference a gateway serves at `GET /docs`, and the spec it serves at `GET /openapi.json`.
//!
//! The page is our own, generated from nothing but the served spec: one HTML document whose script and style
//! are inline and pinned by hash in its Content-Security-Policy, so the browser may load nothing from anywhere
//! but the gateway itself (no CDN, font or telemetry; it works behind a firewall). Its "try it" sends real
//! calls with the Bearer token the reader enters and shows NDJSON lists line by line as they arrive.

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

const TEMPLATE: &str = include_str!("page/docs.html");
const SCRIPT: &str = include_str!("page/docs.js");
const STYLE: &str = include_str!("page/docs.css");

/// The reference page and the spec a gateway serves, rendered once when it starts.
#[derive(Debug, Clone)]
pub struct DocsSite {
    /// `GET /docs`: the HTML page.
    pub page: String,
    /// The `Content-Security-Policy` the page must be served with (its script and style by hash, requests
    /// only to the gateway).
    pub csp: String,
    /// `GET /openapi.json`: the served spec (see [`served_spec`]), rendered.
    pub spec: String,
    /// `GET /llms.txt`: the index of the served operations for language models (see
    /// [`crate::markdown::llms_txt`]), each line linking to its Markdown reference below.
    pub llms: String,
    /// `GET /docs/<page>`: the Markdown reference of the served operations (`index.md`, `types.md` and one
    /// `<resource>.md` per resource), by file name, exactly as `docs/api-reference/` holds it for the
    /// built-ins.
    pub markdown: std::collections::BTreeMap<String, String>,
}

impl DocsSite {
    /// The page and the served form of `spec`, the document of the operations this gateway serves.
    pub fn new(spec: &Value) -> DocsSite {
        let title = spec["info"]["title"].as_str().unwrap_or("API");
        let page = TEMPLATE
            .replace("{{title}}", &escape_html(title))
            .replace("{{style}}", STYLE)
            .replace("{{script}}", SCRIPT);
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256_source(SCRIPT),
            sha256_source(STYLE)
        );
        // A spec built from a registry always has the paths and schemas the reference reads: no pages (and
        // an empty index) only for a hand-made document without them.
        let markdown = crate::markdown::reference(spec).unwrap_or_default();
        DocsSite {
            page,
            csp,
            spec: crate::render(&served_spec(spec)),
            llms: crate::markdown::llms_txt(spec, &markdown),
            markdown,
        }
    }
}

/// The spec as a gateway serves it: `servers` is the gateway itself (`/`, so "try it" calls the origin the
/// page came from, whatever name it is reached by), and only the `/v1/op/<id>` paths are listed (the
/// `/v1/<resource>/<action>` aliases call the same operations and would list each twice).
pub fn served_spec(spec: &Value) -> Value {
    let mut served = spec.clone();
    served["servers"] = serde_json::json!([{ "url": "/", "description": "This gateway." }]);
    if let Some(paths) = served["paths"].as_object_mut() {
        paths.retain(|path, _| path.starts_with("/v1/op/"));
    }
    served
}

/// `'sha256-<base64>'` of an inline script or style, as CSP names it.
fn sha256_source(text: &str) -> String {
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_served_spec_points_at_the_gateway_and_lists_each_operation_once() {
        let spec = json!({
            "info": {"title": "t <b>"},
            "servers": [{"url": "http://127.0.0.1:8080"}],
            "paths": {"/v1/op/a.b": {}, "/v1/a/b": {}},
        });
        let served = served_spec(&spec);
        assert_eq!(
            served["servers"],
            json!([{"url": "/", "description": "This gateway."}])
        );
        assert_eq!(served["paths"], json!({"/v1/op/a.b": {}}));
        let site = DocsSite::new(&spec);
        assert!(site
            .page
            .contains("<title>t &lt;b&gt; · API reference</title>"));
        assert!(!site.page.contains("{{"), "every placeholder is filled");
        assert!(site.csp.contains(&sha256_source(SCRIPT)));
        assert!(site.csp.starts_with("default-src 'none'; "));
    }
}
