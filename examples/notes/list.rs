//! `notes.list`: a streaming operation (NDJSON) in one file.

use std::sync::Arc;

use futures_util::stream;
use opgate::core::{Context, Error, Items, OpMeta, SideEffect, StreamOperation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::{Note, Notes};

/// Input of `notes.list`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListNotesInput {
    /// Stop after this many notes; omit for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(range(min = 1, max = 10_000))]
    pub limit: Option<u32>,
}

/// `notes.list`: the notes the caller sees (its organization and mode; its workspace if it works in one),
/// oldest first.
pub(crate) struct ListNotes(pub Arc<Notes>);

impl StreamOperation for ListNotes {
    const META: OpMeta = OpMeta {
        id: "notes.list",
        scope: "notes:read",
        side_effect: SideEffect::Read,
        summary: "List the notes of the caller's mode (and workspace), oldest first, as an NDJSON stream.",
    };
    const EXAMPLE: &'static str = r#"{"limit": 10}"#;
    type Input = ListNotesInput;
    type Item = Note;

    async fn call(&self, ctx: Context, input: ListNotesInput) -> Result<Items<Note>, Error> {
        let limit = input.limit.map_or(usize::MAX, |l| l as usize);
        let notes = self.0.list(&ctx, limit);
        Ok(Box::pin(stream::iter(notes.into_iter().map(Ok))))
    }
}
