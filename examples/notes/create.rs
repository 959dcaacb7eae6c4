//! `notes.create`: the whole operation in one file — its input type (whose doc comments and `garde` rules are
//! the validation and the schema), its declaration, and its handler.

use std::sync::Arc;

use opgate::core::{Context, Error, OpMeta, Operation, SideEffect};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::{Note, Notes};

/// Input of `notes.create`.
#[derive(Debug, Serialize, Deserialize, JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateNoteInput {
    /// The note's text, 1 to 1000 characters.
    #[garde(length(chars, min = 1, max = 1000))]
    pub text: String,
}

/// `notes.create`: writes a note in the caller's organization, workspace and mode.
pub(crate) struct CreateNote(pub Arc<Notes>);

impl Operation for CreateNote {
    const META: OpMeta = OpMeta {
        id: "notes.create",
        scope: "notes:write",
        side_effect: SideEffect::Write,
        summary: "Write a note.",
    };
    const EXAMPLE: &'static str = r#"{"text": "Remember the milk."}"#;
    type Input = CreateNoteInput;
    type Output = Note;

    async fn call(&self, ctx: Context, input: CreateNoteInput) -> Result<Note, Error> {
        // The gateway has authenticated the caller and checked `notes:write` before this runs.
        let note = self.0.add(&ctx, input.text);
        ctx.set_target(&note.id);
        Ok(note)
    }
}
