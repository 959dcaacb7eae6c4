//! The public description of the API, derived from the registry so that it cannot drift from the code:
//! [`openapi`] builds the OpenAPI 3.1 document from the operations' declarations and their Rust types,
//! [`markdown::reference`] turns the committed document into the human reference under `docs/api-reference/`,
//! and [`sdk`] into the Python and TypeScript SDKs under `sdks/`; [`page`] is the interactive reference a
//! gateway serves at `GET /docs`.

mod links;
pub mod markdown;
mod openapi;
pub mod page;
pub mod sdk;

pub use openapi::{openapi, ApiInfo};

/// The committed form of a JSON document: pretty-printed, two-space indented, with a final newline.
pub fn render(doc: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("JSON values serialize");
    text.push('\n');
    text
}
