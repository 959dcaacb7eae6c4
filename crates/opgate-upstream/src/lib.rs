//! Operations served by upstream HTTP services, declared in the configuration file rather than compiled in:
//! the way to put opgate in front of services that already exist, in any language.
//!
//! Each `[[upstream]]` table ([`config`]) becomes a [`opgate_core::DynamicOperation`] in the registry, so the
//! gateway authenticates, checks scopes, limits, idempotency and audit by its declared side effect exactly as
//! for a built-in. The handler validates the body against the declared JSON Schema, POSTs it to the service
//! with the caller's identity signed in headers (never the client's credential), and passes the answer back:
//! JSON as is, NDJSON line by line with backpressure, a contract-shaped error with its status, anything else
//! as `bad_gateway` (502) or `gateway_timeout` (504).
//!
//! The URLs are the operator's (from the configuration file, not from tenants), so they may and usually do
//! point into the operator's own network.

mod call;
pub mod config;
mod identity;

pub use config::{load, load_description, parse, Declaration};
