//! Embedding opgate as a library and adding operations of your own: a small `notes` resource with
//! `notes.create` (scope `notes:write`) and `notes.list` (scope `notes:read`, an NDJSON stream), served beside
//! the built-in `api_keys.*`, `auth.whoami` and `audit.list` by the same gateway — same authentication, scope
//! checks, validation, rate limits, audit log and error model, and in the same generated OpenAPI document.
//!
//! Each operation is one file (`create.rs`, `list.rs`); registering it is one line (see [`registry`]).
//!
//! ```sh
//! cargo run --example notes              # demo: serve on a free port, create and list notes over HTTP
//! cargo run --example notes -- spec      # print the OpenAPI document, notes.* included
//! cargo run --example notes -- serve 127.0.0.1:8080 ./notes-data   # serve until Ctrl-C
//! ```

mod create;
mod list;
mod store;

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use opgate::core::{Code, Registry};
use opgate::server::ServerConfig;
use opgate::{BoxError, DataDir};
use opgate_client::types::CreateKeyInput;
use opgate_client::{CallOptions, Client, Reply};

use create::{CreateNote, CreateNoteInput};
use list::{ListNotes, ListNotesInput};
use store::{Note, Notes};

/// The gateway's built-in operations plus ours. Adding an operation is one line here.
fn registry(builtin: Registry, notes: &Arc<Notes>) -> Result<Registry, BoxError> {
    let mut registry = builtin;
    registry.register(CreateNote(Arc::clone(notes)))?;
    registry.register_stream(ListNotes(Arc::clone(notes)))?;
    Ok(registry)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("demo") => demo().await,
        Some("spec") => {
            // The same generator as `opgate spec`: our operations appear with their scopes and schemas.
            let registry = registry(opgate::describe_registry()?, &Arc::default())?;
            print!(
                "{}",
                opgate::spec::render(&opgate::spec::openapi(&registry, &opgate::api_info()))
            );
            Ok(())
        }
        Some("serve") => {
            let listen = args.get(1).map_or("127.0.0.1:8080", String::as_str);
            let data_dir = args.get(2).map_or("notes-data", String::as_str);
            serve(listen, Path::new(data_dir)).await
        }
        Some(other) => Err(format!("unknown command `{other}`: use demo, spec or serve").into()),
    }
}

/// Serves until Ctrl-C, as `opgate serve` does.
async fn serve(listen: &str, data_dir: &Path) -> Result<(), BoxError> {
    let data = DataDir::open(data_dir, std::env::var("OPGATE_SECRET").ok().as_deref())?;
    if let Some(admin) = data.keys.bootstrap_admin().await? {
        eprintln!("admin key: {admin}");
    }
    let gateway = data.gateway(
        registry(data.registry()?, &Arc::default())?,
        ServerConfig::default(),
        opgate::server::metrics::Metrics::global(),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "notes gateway listening on http://{}",
        listener.local_addr()?
    );
    let flusher = data
        .keys
        .start_usage_flusher(std::time::Duration::from_secs(1));
    gateway
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    flusher.abort();
    data.keys.flush_usage().await;
    data.store.close().await;
    Ok(())
}

/// Serves on a free port over a temporary data directory and calls the new operations over HTTP with
/// `opgate-client`, which knows nothing of notes: the generic calls reach them all the same.
async fn demo() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let data = DataDir::open(dir.path(), None)?;
    let admin = data
        .keys
        .bootstrap_admin()
        .await?
        .ok_or("a fresh data directory mints the admin key")?;
    let gateway = data.gateway(
        registry(data.registry()?, &Arc::default())?,
        ServerConfig::default(),
        opgate::server::metrics::Metrics::global(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    println!("notes gateway listening on {url}");

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

    let _ = stop.send(());
    server.await?;
    data.store.close().await;
    println!("ok");
    Ok(())
}
