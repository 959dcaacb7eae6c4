//! A greetings service on opgate: two operations of our own, served with the gateway's keys, scopes,
//! validation, rate limits, audit log and spec. `cargo run -- demo` serves on a free port and calls itself;
//! `cargo run -- serve DATA_DIR` serves on 127.0.0.1:8080 until Ctrl-C; `cargo run -- spec` prints the spec.

use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use opgate::client::{CallOptions, Client};
use opgate::core::{Context, Error, Items, OpMeta, Operation, SideEffect, StreamOperation};
use opgate::{Service, ServiceBuilder};
use serde::{Deserialize, Serialize};

/// Input of `greetings.create`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
struct NewGreeting {
    /// What to say, 1 to 100 characters.
    #[garde(length(chars, min = 1, max = 100))]
    text: String,
}

/// A greeting, as stored and listed.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
struct Greeting {
    /// What was said.
    text: String,
    /// Who said it: the caller's key id or session subject.
    by: String,
}

/// Our own storage: greetings by organization (the gateway hands every handler the caller's).
#[derive(Default)]
struct Greetings(Mutex<Vec<(String, Greeting)>>);

struct Create(Arc<Greetings>);

impl Operation for Create {
    const META: OpMeta = OpMeta {
        id: "greetings.create",
        scope: "greetings:write",
        side_effect: SideEffect::Write,
        summary: "Say something.",
    };
    const EXAMPLE: &'static str = r#"{"text": "Hello!"}"#;
    type Input = NewGreeting;
    type Output = Greeting;

    async fn call(&self, ctx: Context, input: NewGreeting) -> Result<Greeting, Error> {
        let greeting = Greeting {
            text: input.text,
            by: ctx.principal.id.clone(),
        };
        let org = ctx.principal.org.clone();
        self.0 .0.lock().unwrap().push((org, greeting.clone()));
        Ok(greeting)
    }
}

struct List(Arc<Greetings>);

impl StreamOperation for List {
    const META: OpMeta = OpMeta {
        id: "greetings.list",
        scope: "greetings:read",
        side_effect: SideEffect::Read,
        summary: "Everything said in the caller's organization, as an NDJSON stream.",
    };
    type Input = ();
    type Item = Greeting;

    async fn call(&self, ctx: Context, _input: ()) -> Result<Items<Greeting>, Error> {
        let rows = self.0 .0.lock().unwrap();
        let mine: Vec<_> = rows
            .iter()
            .filter(|(o, _)| *o == ctx.principal.org)
            .map(|(_, g)| Ok(g.clone()))
            .collect();
        Ok(Box::pin(futures_util::stream::iter(mine)))
    }
}

/// The gateway with our operations registered beside the built-ins.
fn service(data_dir: &str) -> ServiceBuilder {
    let greetings = Arc::new(Greetings::default());
    Service::builder(data_dir).operations(move |registry| {
        registry
            .register(Create(greetings.clone()))?
            .register_stream(List(greetings.clone()))?;
        Ok(())
    })
}

#[tokio::main]
async fn main() -> Result<(), opgate::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("spec") => {
            let info = opgate::api_info();
            println!(
                "{}",
                opgate::spec::render(&service("unused").openapi(&info)?)
            );
        }
        Some("serve") => {
            opgate::logging::init(Default::default());
            let running = service(args.get(1).map_or("greetings-data", String::as_str))
                .start()
                .await?;
            if let Some(key) = running.admin_key() {
                eprintln!("admin key: {key}");
            }
            eprintln!("greetings listening on {}", running.url());
            running
                .run_until(async { tokio::signal::ctrl_c().await.unwrap() })
                .await;
            opgate::logging::flush(); // the last buffered log lines
        }
        _ => {
            let dir = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "greetings-demo".into());
            let running = service(&dir).listen("127.0.0.1:0".parse()?).start().await?;
            let admin = running
                .admin_key()
                .ok_or("use an empty data directory for the demo")?;
            let client = Client::new(&running.url())?.with_token(admin);
            let said: Greeting = client
                .invoke(
                    "greetings.create",
                    &NewGreeting {
                        text: "Hello!".into(),
                    },
                    &CallOptions::default(),
                )
                .await?;
            println!("said {:?} as {}", said.text, said.by);
            let all: Vec<Greeting> = client
                .invoke_stream(
                    "greetings.list",
                    &serde_json::json!({}),
                    &CallOptions::default(),
                )
                .await?
                .try_collect()
                .await?;
            println!("listed {} greeting(s)", all.len());
            running.shutdown().await;
        }
    }
    Ok(())
}
