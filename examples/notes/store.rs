//! The notes themselves, kept in memory: a real program would put its own database here.

use std::sync::Mutex;

use opgate::core::Timestamp;
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
}

/// Every organization's notes, oldest first.
#[derive(Default)]
pub(crate) struct Notes {
    rows: Mutex<Vec<(String, Note)>>,
}

impl Notes {
    /// Adds a note to `org`.
    pub(crate) fn add(&self, org: &str, text: String, created_by: String) -> Note {
        let mut rows = self.rows.lock().expect("notes lock");
        let note = Note {
            id: format!("note_{}", rows.len() + 1),
            text,
            created_by,
            created_at: Timestamp::now(),
        };
        rows.push((org.to_owned(), note.clone()));
        note
    }

    /// The notes of `org`, oldest first, at most `limit`.
    pub(crate) fn list(&self, org: &str, limit: usize) -> Vec<Note> {
        let rows = self.rows.lock().expect("notes lock");
        rows.iter()
            .filter(|(o, _)| o == org)
            .map(|(_, n)| n.clone())
            .take(limit)
            .collect()
    }
}
