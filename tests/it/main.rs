//! The integration suite, one test binary so that it links once. Most suites drive the gateway in process,
//! through its service over a real SQLite data directory ([`support::gateway`]); the ones where the process
//! matters (the CLI, TLS, signals, crashes, slow and hostile clients) start the real `opgate` binary on
//! `127.0.0.1:0` ([`support::process`]).

mod support;

mod api_keys;
mod cli;
mod client;
mod config_tls;
mod crash;
mod docs_page;
mod errors;
mod examples;
mod fleet;
mod grants;
mod guard_rails;
mod hardening;
mod isolation;
mod lifecycle;
mod list_stream;
mod mcp;
mod operating;
mod order_of_checks;
mod registry_table;
mod rotation;
mod sessions;
mod spec;
mod tenancy;
mod upstream;
mod webhooks;
