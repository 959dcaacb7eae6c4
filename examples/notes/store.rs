//! The notes themselves, kept in memory: a real program would put its own database here.

use std::sync::Mutex;

use opgate::core::{Context, Mode, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A note.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Note {
    /// Unique id of the note (`note_<n>`).
    pub id: String,
    /// The note's text.
    pub text: String,
    /// Who wrote it: a key id or a session subject.
    pub created_by: String,
    /// When it was written.
    pub created_at: Timestamp,
    /// The workspace it was written in, or null when an organization-wide caller named none.
    pub workspace_id: Option<String>,
    /// `live` or `test`: a test key's notes are not a live key's notes.
    pub mode: Mode,
}

/// Whose notes these are: the gateway hands every handler the caller's organization, workspace and mode on
/// its `Context`, and the program keeps its data apart by them as the gateway does its own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    org: String,
    workspace: Option<String>,
    mode: Mode,
}

impl Partition {
    fn of(ctx: &Context) -> Self {
        Partition {
            org: ctx.principal.org.clone(),
            workspace: ctx.workspace.clone(),
            mode: ctx.mode(),
        }
    }

    /// Whether a caller in `self` sees a note written in `written`: same organization and mode, and the
    /// caller's workspace if it works in one.
    fn sees(&self, written: &Partition) -> bool {
        self.org == written.org
            && self.mode == written.mode
            && (self.workspace.is_none() || self.workspace == written.workspace)
    }
}

/// Every organization's notes, oldest first.
#[derive(Default)]
pub(crate) struct Notes {
    rows: Mutex<Vec<(Partition, Note)>>,
}

impl Notes {
    /// Adds a note for the caller of `ctx`.
    pub(crate) fn add(&self, ctx: &Context, text: String) -> Note {
        let mut rows = self.rows.lock().expect("notes lock");
        let partition = Partition::of(ctx);
        let note = Note {
            id: format!("note_{}", rows.len() + 1),
            text,
            created_by: ctx.principal.id.clone(),
            created_at: ctx.now(),
            workspace_id: partition.workspace.clone(),
            mode: partition.mode,
        };
        rows.push((partition, note.clone()));
        note
    }

    /// The notes the caller of `ctx` sees, oldest first, at most `limit`.
    pub(crate) fn list(&self, ctx: &Context, limit: usize) -> Vec<Note> {
        let caller = Partition::of(ctx);
        let rows = self.rows.lock().expect("notes lock");
        rows.iter()
            .filter(|(written, _)| caller.sees(written))
            .map(|(_, n)| n.clone())
            .take(limit)
            .collect()
    }
}
