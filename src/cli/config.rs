//! `--config FILE`: a TOML file of `opgate serve` settings, one `key = value` per flag (`listen`,
//! `data_dir`, `max_body_bytes`, `trusted_proxies = ["10.0.0.0/8"]`, ...). Precedence, lowest first: built-in
//! default, file, `OPGATE_*` environment variable, command-line flag. The file only fills in what neither the
//! environment nor the command line set. Its `[[upstream]]` tables declare upstream operations
//! (`opgate_upstream::config`), the one part `serve` reads again on SIGHUP.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use opgate::BoxError;

use crate::ServeArgs;

/// The command line with the config file's values appended for every setting the command line and the
/// environment left at its default, and the ids of those settings. `argv` is the full original command line.
pub(crate) fn merge(
    serve: &Command,
    matches: &ArgMatches,
    path: &Path,
    argv: Vec<OsString>,
) -> Result<(Vec<OsString>, Vec<String>), BoxError> {
    let mut from_file = Vec::new();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let mut argv = argv;
    for (key, value) in &table {
        if key == "upstream" {
            // Upstream operations, not a setting: read by `serve` itself (and again on SIGHUP).
            continue;
        }
        let id = key.replace('-', "_");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some() && id != "config")
            .ok_or_else(|| format!("config file {}: unknown setting `{key}`", path.display()))?;
        let from_default = matches!(
            matches.value_source(&id),
            None | Some(ValueSource::DefaultValue)
        );
        if !from_default {
            continue;
        }
        let flag = format!("--{}", arg.get_long().expect("checked above"));
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(n) => Ok(n.to_string()),
                    _ => Err(format!(
                        "config file {}: `{key}` must be a list of strings",
                        path.display()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => {
                return Err(format!(
                    "config file {}: `{key}` has an unsupported type",
                    path.display()
                )
                .into())
            }
        };
        argv.push(flag.into());
        argv.push(text.into());
        from_file.push(id);
    }
    Ok((argv, from_file))
}

/// The effective settings of `serve`, one `key = value  # source` line each, secrets masked.
pub(crate) fn describe(serve: &Command, matches: &ArgMatches, from_file: &[String]) -> String {
    let mut out = String::new();
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none() || matches!(id, "help" | "version" | "config") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.iter().any(|f| f == id) => "config file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown = if values.is_empty() {
            "(none)".to_owned()
        } else if id.contains("secret") {
            "******** (masked)".to_owned()
        } else if id == "database_url" {
            values
                .iter()
                .map(|v| without_password(v))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            values.join(",")
        };
        out.push_str(&format!("{id} = {shown}  # {source}\n"));
    }
    out
}

/// `opgate config check`: everything `serve` would check before listening, then the effective settings.
/// `command` is the `config check` subcommand, whose arguments are `serve`'s.
pub(crate) fn check(
    args: &ServeArgs,
    command: &Command,
    matches: &ArgMatches,
    from_file: &[String],
) -> Result<(), BoxError> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        opgate::server::Tls::from_pem_files(cert, key)?;
    }
    let upstreams = match &args.config {
        Some(path) => opgate::upstream::load(path).map_err(|problems| problems.join("\n"))?,
        None => Vec::new(),
    };
    // The whole registry, as `serve` builds it: an upstream id another operation has is caught here too.
    opgate::Service::builder(&args.data.data_dir)
        .upstreams(upstreams.clone())
        .openapi(&opgate::api_info())?;
    print!("{}", describe(command, matches, from_file));
    for upstream in &upstreams {
        // A query may carry a credential: shown as `?…`, like the other secrets.
        let mut url = upstream.url.clone();
        let masked = url.query().is_some();
        url.set_query(None);
        println!(
            "upstream {} = POST {}{}  # scope {}, {}{}",
            upstream.id,
            url,
            if masked { "?…" } else { "" },
            upstream.scope,
            upstream.side_effect.as_str(),
            if upstream.streaming {
                ", streaming"
            } else {
                ""
            }
        );
    }
    println!("# ok: the settings are valid");
    Ok(())
}

/// A database URL with its password masked: `postgres://user:********@host/db`, or `password=********` in the
/// key-value form.
fn without_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:********@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some(("password", _)) => "password=********".to_owned(),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
