//! Embedding opgate as a library and adding operations of your own: a small `notes` resource with
//! `notes.create` (scope `notes:write`) and `notes.list` (scope `notes:read`, an NDJSON stream), served beside
//! the built-in `api_keys.*`, `auth.whoami` and `audit.list` by the same gateway — same authentication, scope
//! checks, validation, rate limits, audit log and error model, and in the same generated OpenAPI document.
//!
//! Each operation is one file (`create.rs`, `list.rs`); registering it is one line (see [`registry`]). Handlers
//! keep each caller's data apart by the organization, workspace and mode on their `Context` (`store.rs`): a
//! test key's notes are not a live key's notes.
//!
//! ```sh
//! cargo run --example notes              # demo: serve on a free port, create and list notes over HTTP
//! cargo run --example notes -- spec      # print the OpenAPI document, notes.* included
//! cargo run --example notes -- sdk python ./notes-py   # a Python SDK with client.notes.create(...)
//! cargo run --example notes -- sdk typescript ./notes-ts
//! cargo run --example notes -- serve 127.0.0.1:8080 ./notes-data   # serve until Ctrl-C
//! ```

mod create;
mod list;
mod store;

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use opgate::core::{Code, Registry, RegistryError};
use opgate::{BoxError, Service, ServiceBuilder};
use opgate_client::types::CreateKeyInput;
use opgate_client::{CallOptions, Client, Reply};

use create::{CreateNote, CreateNoteInput};
use list::{ListNotes, ListNotesInput};
use store::{Note, Notes};

/// Our operations, registered beside the built-ins. Adding an operation is one line here.
fn registry(registry: &mut Registry, notes: &Arc<Notes>) -> Result<(), RegistryError> {
    registry.register(CreateNote(Arc::clone(notes)))?;
    registry.register_stream(ListNotes(Arc::clone(notes)))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("demo") => demo().await,
        Some("spec") => {
            // The same generator as `opgate spec`: our operations appear with their scopes and schemas.
            let spec = service(Path::new("unused")).openapi(&opgate::api_info())?;
            print!("{}", opgate::spec::render(&spec));
            Ok(())
        }
        Some("sdk") => {
            // The SDK generators of `opgate spec --sdk`, on our document: `client.notes.list()` included.
            let spec = service(Path::new("unused")).openapi(&opgate::api_info())?;
            let files = match args.get(1).map(String::as_str) {
                Some("python") => opgate::spec::sdk::python(&spec)?,
                Some("typescript") => opgate::spec::sdk::typescript(&spec)?,
                _ => return Err("usage: notes sdk python|typescript DIR".into()),
            };
            let out = Path::new(
                args.get(2)
                    .ok_or("usage: notes sdk python|typescript DIR")?,
            );
            for (name, text) in &files {
                let path = out.join(name);
                std::fs::create_dir_all(path.parent().unwrap_or(out))?;
                std::fs::write(path, text)?;
            }
            Ok(())
        }
        Some("serve") => {
            let listen = args.get(1).map_or("127.0.0.1:8080", String::as_str);
            let data_dir = args.get(2).map_or("notes-data", String::as_str);
            serve(listen, Path::new(data_dir)).await
        }
        Some(other) => {
            Err(format!("unknown command `{other}`: use demo, spec, sdk or serve").into())
        }
    }
}

/// The gateway with the built-in operations and ours, keeping its state in `data_dir`.
fn service(data_dir: &Path) -> ServiceBuilder {
    let notes = Arc::new(Notes::default());
    Service::builder(data_dir).operations(move |r| registry(r, &notes))
}

/// Serves until Ctrl-C, as `opgate serve` does.
async fn serve(listen: &str, data_dir: &Path) -> Result<(), BoxError> {
    opgate::logging::init(Default::default());
    let running = service(data_dir).listen(listen.parse()?).start().await?;
    if let Some(admin) = running.admin_key() {
        eprintln!("admin key: {admin}");
    }
    eprintln!("notes gateway listening on {}", running.url());
    running
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    opgate::logging::flush(); // the last buffered log lines
    Ok(())
}

/// Serves on a free port over a temporary data directory and calls the new operations over HTTP with
/// `opgate-client`, which knows nothing of notes: the generic calls reach them all the same.
async fn demo() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let running = service(dir.path())
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let admin = running
        .admin_key()
        .ok_or("a fresh data directory mints the admin key")?
        .to_owned();
    let url = running.url();
    println!("notes gateway listening on {url}");
    // The reference page at /docs reads this spec: the gateway's own operations and ours.
    let served: serde_json::Value = reqwest::get(format!("{url}/openapi.json"))
        .await?
        .json()
        .await?;
    let described = served["paths"].as_object().map_or(0, |paths| paths.len());
    let has_notes = served["paths"]["/v1/op/notes.create"].is_object();
    println!("{url}/docs describes {described} operations, notes.create among them: {has_notes}");

    // Keys for our own scopes, made with the typed client's api_keys.create.
    let admin = Client::new(&url)?.with_token(admin);
    let mint = |name: &str, scope: &str| {
        let input = CreateKeyInput {
            permissions: Some(vec![scope.to_owned()]),
            ..CreateKeyInput::new(name)
        };
        let admin = admin.clone();
        async move { admin.api_keys().create(input).await.map(|out| out.key) }
    };
    let writer = Client::new(&url)?.with_token(mint("notes-writer", "notes:write").await?);
    let reader = Client::new(&url)?.with_token(mint("notes-reader", "notes:read").await?);

    // By id with JSON, as for any operation the client does not know ...
    match writer
        .call(
            "notes.create",
            serde_json::json!({"text": "Remember the milk."}),
        )
        .await?
    {
        Reply::Json(note) => println!("created {note}"),
        Reply::Stream(_) => return Err("notes.create answers one object".into()),
    }
    // ... or with our own types, shared by server and client code.
    let note: Note = writer
        .invoke(
            "notes.create",
            &CreateNoteInput {
                text: "Water the plants.".into(),
            },
            &CallOptions::default(),
        )
        .await?;
    println!("created {} ({})", note.id, note.text);

    // The stream, item by item.
    let notes: Vec<Note> = reader
        .invoke_stream(
            "notes.list",
            &ListNotesInput::default(),
            &CallOptions::default(),
        )
        .await?
        .try_collect()
        .await?;
    for note in &notes {
        println!("listed {} by {}: {}", note.id, note.created_by, note.text);
    }
    if notes.len() != 2 {
        return Err(format!("expected 2 notes, listed {}", notes.len()).into());
    }

    // A test key's notes are not a live key's notes: the handlers partition by `ctx.mode()` (and
    // `ctx.workspace`), so a test key starts with none and its notes stay out of the live list.
    let test = Client::new(&url)?.with_token({
        let input = CreateKeyInput {
            permissions: Some(vec!["notes:read".into(), "notes:write".into()]),
            mode: Some(opgate::core::Mode::Test),
            ..CreateKeyInput::new("notes-test")
        };
        admin.api_keys().create(input).await?.key
    });
    let list = |client: Client| async move {
        let notes: Vec<Note> = client
            .invoke_stream(
                "notes.list",
                &ListNotesInput::default(),
                &CallOptions::default(),
            )
            .await?
            .try_collect()
            .await?;
        Ok::<_, BoxError>(notes)
    };
    println!("test key lists {} notes", list(test.clone()).await?.len());
    test.call("notes.create", serde_json::json!({"text": "A test note."}))
        .await?;
    let (test_notes, live_notes) = (list(test).await?, list(reader.clone()).await?);
    println!(
        "after a test note: test key lists {}, live key lists {}",
        test_notes.len(),
        live_notes.len()
    );
    if test_notes.len() != 1 || live_notes.len() != 2 {
        return Err("test and live notes must stay apart".into());
    }

    // The gateway enforces our scopes and validates our input like its own.
    let denied = reader
        .call("notes.create", serde_json::json!({"text": "nope"}))
        .await
        .err()
        .ok_or("a notes:read key must not create notes")?;
    println!("reader creating a note: {denied}");
    if denied.code() != Some(Code::PermissionDenied) {
        return Err(format!("expected permission_denied, got {denied}").into());
    }
    let invalid = writer
        .call("notes.create", serde_json::json!({"text": ""}))
        .await
        .err()
        .ok_or("an empty note must be refused")?;
    println!("empty note: {invalid}");
    if invalid.code() != Some(Code::InvalidArgument) {
        return Err(format!("expected invalid_argument, got {invalid}").into());
    }

    running.shutdown().await;
    println!("ok");
    Ok(())
}
