//! The `opgate` CLI as an API client, driven as a subprocess against a real server: every `api-keys`
//! command, `auth whoami`, `audit list`, the `workspaces`, `environments` and `service-accounts` commands
//! (with `--workspace`), the `webhooks` commands (with a receiver of their deliveries) and `call`, in human
//! and `--json` output, the exit status of every kind of failure (including a stream that fails midway),
//! shell completions, and every CLI form the API reference and the README document.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{assert_metadata, closed_port, id_of, opgate, EnvClearOpgate, TestServer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_opgate");

/// What a run of the CLI printed and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn fails(self, code: i32, stderr_has: &str) -> Run {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        assert!(
            self.stderr.contains(stderr_has),
            "stderr should contain {stderr_has:?}: {self:#?}"
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    fn ndjson(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
            .collect()
    }

    /// The value of a `field  value` line of human output.
    #[track_caller]
    fn field(&self, name: &str) -> String {
        self.stdout
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no `{name}` line in {self:#?}"))
    }
}

/// Runs `opgate args...` with `OPGATE_URL` and `OPGATE_TOKEN` set (and no other `OPGATE_*`), `stdin` as input.
fn run_with(url: &str, token: Option<&str>, args: &[&str], stdin: &str) -> Run {
    let mut cmd = opgate();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env("OPGATE_URL", url);
    if let Some(token) = token {
        cmd.env("OPGATE_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("run opgate");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("wait for opgate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn run(s: &TestServer, token: &str, args: &[&str]) -> Run {
    run_with(&s.url(""), Some(token), args, "")
}

/// A URL nothing listens on (its port stays reserved while the returned value lives).
fn closed_url() -> crate::support::ClosedPort {
    closed_port()
}

#[test]
fn api_keys_commands_in_human_output() {
    let s = TestServer::start();
    let admin = s.admin_key();

    let created = run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--name",
            "ci-reader",
            "--permissions",
            "api_keys:read,audit:read",
            "--rate-limit",
            "600",
            "--expires-in-days",
            "30",
            "--allowed-ips",
            "127.0.0.1,::1,10.0.0.0/8",
            "--description",
            "reads keys",
        ],
    )
    .ok();
    let key = created.field("key");
    assert!(key.starts_with("opg_") && key.len() == 42, "{created:#?}");
    assert!(
        created.stderr.contains("only time the secret key is shown"),
        "{created:#?}"
    );
    let id = created.field("id");
    assert_eq!(created.field("name"), "ci-reader");
    assert_eq!(created.field("permissions"), "api_keys:read,audit:read");
    assert_eq!(created.field("rate_limit"), "600/min");
    assert_eq!(created.field("allowed_ips"), "127.0.0.1,::1,10.0.0.0/8");
    assert_eq!(created.field("description"), "reads keys");
    let expires = created.field("expires_at");
    assert!(
        expires.ends_with("(in 30d)") || expires.ends_with("(in 29d)"),
        "{created:#?}"
    );

    // The new key works: whoami with it (flags beat the environment).
    let me = run_with(
        &closed_url().url,
        Some("opg_not_this_one"),
        &["auth", "whoami", "--url", &s.url(""), "--token", &key],
        "",
    )
    .ok();
    assert_eq!(me.field("kind"), "api_key");
    assert_eq!(me.field("id"), id);
    assert_eq!(me.field("org"), "default");
    assert_eq!(me.field("rate_limit"), "600/min");

    // The list: an aligned table with a header, relative times, oldest first.
    let list = run(&s, admin, &["api-keys", "list"]).ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{list:#?}");
    for column in [
        "ID",
        "NAME",
        "PREFIX",
        "STATUS",
        "PERMISSIONS",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    ] {
        assert!(lines[0].contains(column), "{list:#?}");
    }
    assert!(lines[1].contains("admin"));
    assert!(lines[2].starts_with(&id) && lines[2].contains("ci-reader"));
    assert!(
        lines[2].contains("in 30d") || lines[2].contains("in 29d"),
        "{list:#?}"
    );
    // Columns line up: every row's second column starts where the header's does.
    let name_col = lines[0].find("NAME").unwrap();
    assert_eq!(lines[2].find("ci-reader"), Some(name_col), "{list:#?}");

    let got = run(&s, admin, &["api-keys", "get", "--key-id", &id]).ok();
    assert_eq!(got.field("id"), id);
    assert_eq!(got.field("status"), "active");

    let updated = run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            "--key-id",
            &id,
            "--name",
            "ci-reader-eu",
            "--permissions",
            "api_keys:read",
            "--rate-limit",
            "60",
            "--description",
            "narrowed",
            "--allowed-ips",
            "127.0.0.0/8,::1",
        ],
    )
    .ok();
    assert_eq!(updated.field("name"), "ci-reader-eu");
    assert_eq!(updated.field("permissions"), "api_keys:read");
    assert_eq!(updated.field("rate_limit"), "60/min");
    assert_eq!(updated.field("description"), "narrowed");
    assert_eq!(updated.field("allowed_ips"), "127.0.0.0/8,::1");

    let cleared = run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            "--key-id",
            &id,
            "--clear-description",
            "--clear-rate-limit",
            "--clear-allowed-ips",
        ],
    )
    .ok();
    assert_eq!(cleared.field("name"), "ci-reader-eu");
    assert_eq!(cleared.field("description"), "-");
    assert_eq!(cleared.field("rate_limit"), "server default");
    assert_eq!(cleared.field("allowed_ips"), "any");

    let rotated = run(
        &s,
        admin,
        &[
            "api-keys",
            "rotate",
            "--key-id",
            &id,
            "--grace-period-seconds",
            "3600",
        ],
    )
    .ok();
    let new_key = rotated.field("key");
    let new_id = rotated.field("id");
    assert!(new_key.starts_with("opg_") && new_key != key);
    assert_ne!(new_id, id);
    assert_eq!(rotated.field("old_key_id"), id);
    let until = rotated.field("old_key_works_until");
    assert!(
        until.ends_with("(in 1h)") || until.ends_with("(in 59m)"),
        "{until}"
    );
    assert!(rotated.stderr.contains("only time the secret key is shown"));
    // The old key is rotating, the new one works.
    let old = run(&s, admin, &["api-keys", "get", "--key-id", &id]).ok();
    assert_eq!(old.field("status"), "rotating");
    assert_eq!(old.field("replaced_by_key_id"), new_id);
    run(&s, &new_key, &["api-keys", "get", "--key-id", &new_id]).ok();

    let revoked = run(&s, admin, &["api-keys", "revoke", "--key-id", &new_id]).ok();
    assert_eq!(revoked.field("status"), "revoked");
    assert!(revoked.field("revoked_at").ends_with("(just now)"));
    run(&s, &new_key, &["auth", "whoami"]).fails(3, "unauthenticated (401)");

    // Revoked keys are hidden unless asked for; --status filters.
    let active = run(&s, admin, &["api-keys", "list"]).ok();
    assert!(!active.stdout.contains(&new_id));
    let all = run(&s, admin, &["api-keys", "list", "--include-revoked"]).ok();
    assert!(all.stdout.contains(&new_id));
    let only = run(&s, admin, &["api-keys", "list", "--status", "revoked"]).ok();
    assert_eq!(only.stdout.lines().count(), 2, "{only:#?}");
    let page = run(
        &s,
        admin,
        &["api-keys", "list", "--limit", "1", "--after-id", &id],
    )
    .ok();
    assert_eq!(page.stdout.lines().count(), 1, "header only: {page:#?}");

    // The audit log shows what was done, newest first.
    let audit = run(&s, admin, &["audit", "list", "--limit", "2"]).ok();
    let lines: Vec<&str> = audit.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{audit:#?}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("OPERATION"));
    assert!(lines[1].contains("api_keys.revoke") && lines[1].contains(&new_id));
    assert!(lines[2].contains("api_keys.rotate"));
    let revokes = run(
        &s,
        admin,
        &["audit", "list", "--operation", "api_keys.revoke"],
    )
    .ok();
    assert_eq!(revokes.stdout.lines().count(), 2);
}

#[test]
fn json_output_is_what_the_gateway_sent() {
    let s = TestServer::start();
    let admin = s.admin_key();
    let created = run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--json",
            "--name",
            "machine",
            "--permissions",
            "api_keys:read",
        ],
    )
    .ok();
    let out = created.json();
    let key = out["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("opg_"));
    assert_metadata(&out["key_details"]);
    let id = id_of(&out["key_details"]);
    assert!(created.stderr.contains("only time the secret key is shown"));

    // `--json` may come before the subcommand too; streams are NDJSON.
    let list = run(&s, admin, &["api-keys", "--json", "list"]).ok();
    let items = list.ndjson();
    assert_eq!(items.len(), 2);
    items.iter().for_each(assert_metadata);
    assert_eq!(id_of(&items[1]), id);
    assert!(list.stdout.ends_with('\n'));

    let got = run(&s, admin, &["api-keys", "get", "--key-id", &id, "--json"]).ok();
    assert_eq!(got.json()["name"], "machine");
    let updated = run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            "--json",
            "--key-id",
            &id,
            "--description",
            "d",
            "--rate-limit",
            "5",
        ],
    )
    .ok();
    assert_eq!(updated.json()["description"], "d");
    assert_eq!(updated.json()["rate_limit"], 5);
    let cleared = run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            "--json",
            "--key-id",
            &id,
            "--clear-description",
            "--clear-rate-limit",
        ],
    )
    .ok();
    assert_eq!(cleared.json()["description"], Value::Null);
    assert_eq!(cleared.json()["rate_limit"], Value::Null);

    let rotated = run(
        &s,
        admin,
        &["api-keys", "rotate", "--json", "--key-id", &id],
    )
    .ok();
    let r = rotated.json();
    assert_eq!(r["old_key_id"], id.as_str());
    assert!(r["key"].as_str().unwrap().starts_with("opg_"));
    let new_id = id_of(&r["key_details"]);

    // Idempotent revoke: the retry gets the first answer.
    let revoke = |k: &str| {
        run(
            &s,
            admin,
            &[
                "api-keys",
                "revoke",
                "--json",
                "--key-id",
                &new_id,
                "--idempotency-key",
                k,
            ],
        )
        .ok()
        .json()
    };
    let first = revoke("cli-retry-1");
    assert_eq!(first["status"], "revoked");
    assert_eq!(revoke("cli-retry-1"), first);

    let me = run(&s, &key, &["auth", "whoami", "--json"]).ok().json();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["kind"], "api_key");

    let audit = run(&s, admin, &["audit", "list", "--json"]).ok().ndjson();
    assert!(audit.len() >= 4);
    assert_eq!(audit[0]["operation"], "api_keys.revoke");

    // The second revoke above was a replay, not a second run of an idempotent revoke: the CLI sent the key,
    // and the gateway keeps the answer under it, so the same key with another body is refused.
    run(
        &s,
        admin,
        &[
            "api-keys",
            "revoke",
            "--json",
            "--key-id",
            &id,
            "--idempotency-key",
            "cli-retry-1",
        ],
    )
    .fails(4, "idempotency_mismatch (422)");
    // A retried update gets the stored answer and does not run again.
    let update = |name: &str, key: Option<&str>| {
        let mut args = vec![
            "api-keys", "update", "--json", "--key-id", &id, "--name", name,
        ];
        if let Some(key) = key {
            args.extend(["--idempotency-key", key]);
        }
        run(&s, admin, &args).ok().json()
    };
    let first = update("first", Some("cli-update-1"));
    assert_eq!(first["name"], "first");
    update("between", None);
    assert_eq!(
        update("first", Some("cli-update-1")),
        first,
        "the stored answer"
    );
    let now = run(&s, admin, &["api-keys", "get", "--json", &id])
        .ok()
        .json();
    assert_eq!(now["name"], "between", "the retry did not run again");
}

#[test]
fn the_key_id_is_positional_or_a_flag() {
    let s = TestServer::start();
    let admin = s.admin_key();
    let id = id_of(
        &run(
            &s,
            admin,
            &["api-keys", "create", "--json", "--name", "positional"],
        )
        .ok()
        .json()["key_details"],
    );

    // `get ID` is `get --key-id ID`: the same request, so the same answer.
    let flag = run(&s, admin, &["api-keys", "get", "--json", "--key-id", &id]).ok();
    let positional = run(&s, admin, &["api-keys", "get", "--json", &id]).ok();
    assert_eq!(positional.stdout, flag.stdout);
    let got = run(&s, admin, &["api-keys", "get", &id]).ok();
    assert_eq!(got.field("id"), id);
    assert_eq!(got.field("name"), "positional");
    assert_eq!(got.field("status"), "active");

    let updated = run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            &id,
            "--name",
            "renamed",
            "--rate-limit",
            "7",
        ],
    )
    .ok();
    assert_eq!(updated.field("id"), id);
    assert_eq!(updated.field("name"), "renamed");
    assert_eq!(updated.field("rate_limit"), "7/min");

    let rotated = run(
        &s,
        admin,
        &["api-keys", "rotate", &id, "--grace-period-seconds", "60"],
    )
    .ok();
    assert_eq!(rotated.field("old_key_id"), id);
    assert_eq!(rotated.field("name"), "renamed");
    let new_id = rotated.field("id");
    assert_ne!(new_id, id);
    assert_eq!(
        run(&s, admin, &["api-keys", "get", &id])
            .ok()
            .field("status"),
        "rotating"
    );

    let revoked = run(&s, admin, &["api-keys", "revoke", &new_id]).ok();
    assert_eq!(revoked.field("id"), new_id);
    assert_eq!(revoked.field("status"), "revoked");

    // Exactly one of the two, refused before any request (exit 2, not 5, against a closed port).
    let closed = closed_url();
    let url = closed.url.clone();
    for command in ["get", "update", "rotate", "revoke"] {
        let usage = |args: &[&str], stderr_has: &str| {
            let mut argv = vec!["api-keys", command];
            argv.extend_from_slice(args);
            run_with(&url, Some(admin), &argv, "").fails(2, stderr_has);
        };
        usage(
            &[&id, "--key-id", &id],
            "the argument '[KEY_ID]' cannot be used with '--key-id <KEY_ID>'",
        );
        usage(&["--key-id", &id, &id], "cannot be used with");
        usage(
            &[],
            "the following required arguments were not provided:\n  <KEY_ID|--key-id <KEY_ID>>",
        );
        usage(&[&id, &new_id], "unexpected argument");
        // Either form parses: the request is made, and fails to connect.
        run_with(&url, Some(admin), &["api-keys", command, &id], "").fails(5, "cannot reach");
        run_with(
            &url,
            Some(admin),
            &["api-keys", command, "--key-id", &id],
            "",
        )
        .fails(5, "cannot reach");
    }
}

#[test]
fn call_reaches_any_operation() {
    let s = TestServer::start();
    let admin = s.admin_key();

    // Pretty-printed by default, as sent with --json.
    let created = run(
        &s,
        admin,
        &["call", "api_keys.create", r#"{"name": "via-call"}"#],
    )
    .ok();
    assert!(
        created.stdout.contains("\n  \"key\": \"opg_"),
        "{created:#?}"
    );
    assert!(created.stderr.contains("only time the secret key is shown"));
    let id = id_of(&created.json()["key_details"]);
    let raw = run(
        &s,
        admin,
        &[
            "call",
            "--json",
            "api_keys.get",
            &format!(r#"{{"key_id":"{id}"}}"#),
        ],
    )
    .ok();
    assert_eq!(raw.stdout.lines().count(), 1, "compact: {raw:#?}");
    assert_eq!(raw.json()["name"], "via-call");

    // The input from stdin.
    let got = run_with(
        &s.url(""),
        Some(admin),
        &["call", "api_keys.get", "-"],
        &format!(r#"{{"key_id": "{id}"}}"#),
    )
    .ok();
    assert_eq!(got.json()["id"], id.as_str());

    // No input means {}; a stream is NDJSON.
    let list = run(&s, admin, &["call", "api_keys.list"]).ok();
    assert_eq!(list.ndjson().len(), 2);
    let me = run(&s, admin, &["call", "auth.whoami"]).ok();
    assert_eq!(me.json()["permissions"], json!(["*"]));

    // The gateway's own errors, with their exit statuses.
    run(&s, admin, &["call", "nothing.here"]).fails(4, "not_found (404)");
    run(&s, admin, &["call", "api_keys.get", "[1]"]).fails(4, "invalid_argument (400)");
    run(&s, admin, &["call", "api_keys.get", "{"]).fails(4, "not valid JSON");
}

#[test]
fn failures_exit_with_their_own_status() {
    let s = TestServer::start();
    let admin = s.admin_key();
    let reader = s.create_key("default", &["api_keys:read"]);

    // 401 and 403: 3.
    run(&s, "opg_garbage", &["api-keys", "list"]).fails(3, "unauthenticated (401): ");
    run(&s, &reader, &["api-keys", "create", "--name", "x"]).fails(3, "permission_denied (403)");
    run(&s, &reader, &["audit", "list"]).fails(3, "permission_denied (403)");
    // Other 4xx: 4, with the code, message and request id on stderr.
    let missing = run(
        &s,
        admin,
        &[
            "api-keys",
            "get",
            "--key-id",
            "key_01jf3m8v6k2x9q4w7e5r1t0y8z",
        ],
    )
    .fails(
        4,
        "not_found (404): key_id: no API key `key_01jf3m8v6k2x9q4w7e5r1t0y8z`",
    );
    assert!(missing.stderr.contains("[request req_"), "{missing:#?}");
    assert!(missing.stdout.is_empty());
    run(
        &s,
        admin,
        &["api-keys", "create", "--name", "x", "--rate-limit", "0"],
    )
    .fails(4, "invalid_argument (400): rate_limit");
    run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--name",
            "x",
            "--allowed-ips",
            "nowhere",
        ],
    )
    .fails(4, "invalid_argument (400)");
    let victim = s.create_key("default", &["api_keys:read"]);
    let victim_id = run(&s, &victim, &["auth", "whoami", "--json"]).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&s, admin, &["api-keys", "revoke", "--key-id", &victim_id]).ok();
    run(&s, admin, &["api-keys", "rotate", "--key-id", &victim_id]).fails(4, "conflict (409)");
    run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--name",
            "x",
            "--expires-in-days",
            "0",
        ],
    )
    .fails(4, "expires_in_days");

    // The gateway's own failures (5xx): 5, with the code on stderr.
    for (status, code) in [
        ("503 Service Unavailable", "unavailable"),
        ("500 Internal Server Error", "internal"),
    ] {
        let body = json!({"error": {"code": code, "message": "storage is unavailable; retry later", "request_id": "req_fake"}});
        let url = stand_in_gateway(status, "application/json", body.to_string());
        let status = &status[..3];
        run_with(&url, Some(admin), &["api-keys", "list"], "")
            .fails(5, &format!("{code} ({status})"));
        run_with(&url, Some(admin), &["call", "auth.whoami"], "")
            .fails(5, &format!("{code} ({status})"));
    }

    // Unreachable gateway: 5.
    run_with(&closed_url().url, Some(admin), &["api-keys", "list"], "").fails(5, "cannot reach");
    run_with(&closed_url().url, Some(admin), &["call", "auth.whoami"], "").fails(5, "cannot reach");

    // Usage errors: 2 (clap's), before any request.
    run(&s, admin, &["api-keys", "create"]).fails(2, "--name");
    run(&s, admin, &["api-keys", "list", "--status", "sleeping"])
        .fails(2, "possible values: active, expired, revoked, rotating");
    run(&s, admin, &["api-keys", "list", "--limit", "many"]).fails(2, "invalid value");
    run(
        &s,
        admin,
        &[
            "api-keys",
            "update",
            "--key-id",
            "k",
            "--description",
            "d",
            "--clear-description",
        ],
    )
    .fails(2, "cannot be used with");
    run(&s, admin, &["api-keys", "frobnicate"]).fails(2, "unrecognized subcommand");
    run_with(&s.url(""), None, &["api-keys", "list"], "").fails(2, "no token");
    run_with("not a url", Some(admin), &["api-keys", "list"], "").fails(2, "not a URL");
}

/// The characters a terminal acts on (besides line ends): C0 and C1 controls, DEL, bidi controls, line and
/// paragraph separators. Human output must never contain one.
fn terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            c != '\n'
                && (c.is_control()
                    || matches!(
                        c,
                        '\u{61c}'
                            | '\u{200e}'
                            | '\u{200f}'
                            | '\u{202a}'..='\u{202e}'
                            | '\u{2066}'..='\u{2069}'
                            | '\u{2028}'
                            | '\u{2029}'
                    ))
        })
        .collect()
}

/// Asserts that a run printed nothing a terminal would act on, on stdout or stderr.
#[track_caller]
fn assert_terminal_safe(r: &Run) {
    assert_eq!(
        terminal_controls(&r.stdout),
        [] as [char; 0],
        "stdout: {r:#?}"
    );
    assert_eq!(
        terminal_controls(&r.stderr),
        [] as [char; 0],
        "stderr: {r:#?}"
    );
}

/// OSC 52 (set the clipboard), a fake line, a C1 CSI, a right-to-left override, DEL and NUL.
const EVIL_NAME: &str = "evil\x1b]52;c;ZXZpbA==\x07\r\nkey_fake\u{9b}31m\u{202e}gpj.exe\x7f\0";
const EVIL_NAME_SHOWN: &str =
    r"evil\x1b]52;c;ZXZpbA==\x07\r\nkey_fake\u{9b}31m\u{202e}gpj.exe\x7f\x00";
const EVIL_DESCRIPTION: &str = "line1\nline2\t\u{2066}x\u{2069}\x1b[2J\u{85}";
const EVIL_DESCRIPTION_SHOWN: &str = r"line1\nline2\t\u{2066}x\u{2069}\x1b[2J\u{85}";
const EVIL_AGENT: &str = "curl/8\x1b[1A\x1b[2K";
const EVIL_AGENT_SHOWN: &str = r"curl/8\x1b[1A\x1b[2K";
/// An OSC 8 hyperlink.
const EVIL_TARGET: &str = "key_\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\";
const EVIL_TARGET_SHOWN: &str = r"key_\x1b]8;;https://evil.example\x1b\link\x1b]8;;\x1b\";

#[test]
fn human_output_escapes_terminal_controls() {
    let s = TestServer::start();
    let admin = s.admin_key();
    let id = id_of(
        &run(
            &s,
            admin,
            &["api-keys", "create", "--json", "--name", "plain"],
        )
        .ok()
        .json()["key_details"],
    );
    // The gateway refuses such names, so they go into the database directly; keys and the audit log are read
    // from it fresh (only authentication is cached). PostgreSQL's text cannot hold NUL: there the name ends
    // before it.
    let on_postgres = s
        .data_dir()
        .join(crate::support::DATABASE_URL_NOTE)
        .exists();
    let (evil_name, evil_name_shown) = if on_postgres {
        (
            EVIL_NAME.trim_end_matches('\0'),
            EVIL_NAME_SHOWN.trim_end_matches(r"\x00"),
        )
    } else {
        (EVIL_NAME, EVIL_NAME_SHOWN)
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = crate::support::db::Db::open_dir(s.data_dir()).await;
        let changed = db
            .execute(
                "UPDATE api_keys SET name = ?1, description = ?2, last_used_at = ?3, last_used_user_agent = ?4
                 WHERE id = ?5",
                &[
                    evil_name.into(),
                    EVIL_DESCRIPTION.into(),
                    crate::support::now_unix().into(),
                    EVIL_AGENT.into(),
                    (&id).into(),
                ],
            )
            .await;
        assert_eq!(changed, 1);
        let changed = db
            .execute(
                "UPDATE audit_log SET target_id = ?1 WHERE operation = 'api_keys.create'",
                &[EVIL_TARGET.into()],
            )
            .await;
        assert_eq!(changed, 1);
    });

    // The table: one row per key (no fake line), escaped, the columns sized on the escaped text.
    let list = run(&s, admin, &["api-keys", "list"]).ok();
    assert_terminal_safe(&list);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{list:#?}");
    assert!(
        lines[2].starts_with(&format!("{id}  {evil_name_shown}  opg_")),
        "{list:#?}"
    );
    let prefix_col = lines[0].find("PREFIX").unwrap();
    assert_eq!(lines[1].find("opg_"), Some(prefix_col), "{list:#?}");
    assert_eq!(lines[2].find("opg_"), Some(prefix_col), "{list:#?}");

    let got = run(&s, admin, &["api-keys", "get", &id]).ok();
    assert_terminal_safe(&got);
    assert_eq!(got.field("name"), evil_name_shown);
    assert_eq!(got.field("description"), EVIL_DESCRIPTION_SHOWN);
    assert_eq!(got.field("last_used_user_agent"), EVIL_AGENT_SHOWN);
    assert_eq!(got.stdout.lines().count(), 21, "{got:#?}");

    let audit = run(&s, admin, &["audit", "list"]).ok();
    assert_terminal_safe(&audit);
    assert_eq!(audit.stdout.lines().count(), 2, "{audit:#?}");
    assert!(audit.stdout.contains(EVIL_TARGET_SHOWN), "{audit:#?}");

    // `call` pretty-prints JSON of the same value, with the controls as `\u` escapes.
    let call = run(
        &s,
        admin,
        &["call", "api_keys.get", &json!({ "key_id": id }).to_string()],
    )
    .ok();
    assert_terminal_safe(&call);
    assert_eq!(call.json()["name"], evil_name);
    let json_escaped = if on_postgres {
        r"\u009b31m\u202egpj.exe\u007f"
    } else {
        r"\u009b31m\u202egpj.exe\u007f\u0000"
    };
    assert!(call.stdout.contains(json_escaped), "{call:#?}");

    // A stream through `call` (no `--json`) is escaped line by line too, each line still JSON of the value.
    let streamed = run(&s, admin, &["call", "api_keys.list"]).ok();
    assert_terminal_safe(&streamed);
    assert!(streamed.stdout.contains(r"\u202egpj.exe"), "{streamed:#?}");
    let line: serde_json::Value =
        serde_json::from_str(streamed.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(line["name"], evil_name);

    // `--json` is the gateway's bytes exactly.
    let raw = run(&s, admin, &["api-keys", "get", "--json", &id]).ok();
    let direct = tokio::runtime::Runtime::new().unwrap().block_on(s.post(
        &crate::support::op_path("api_keys.get"),
        Some(admin),
        &json!({ "key_id": id }),
    ));
    assert_eq!(direct.status, 200);
    let mut expected = direct.body.clone();
    if expected.last() != Some(&b'\n') {
        expected.push(b'\n');
    }
    assert_eq!(raw.stdout.as_bytes(), expected);
    assert!(raw.stdout.contains("\u{9b}31m\u{202e}gpj.exe\u{7f}"));
    assert_eq!(raw.json()["name"], evil_name);
    assert_eq!(raw.json()["description"], EVIL_DESCRIPTION);
    let listed = run(&s, admin, &["api-keys", "list", "--json"])
        .ok()
        .ndjson();
    assert_eq!(listed[1]["name"], evil_name);
    let audited = run(&s, admin, &["audit", "list", "--json"]).ok().ndjson();
    assert_eq!(audited[0]["target_id"], EVIL_TARGET);

    // An error message quoting an id chosen by the caller: escaped on the one `error:` line. (Whether the
    // gateway quotes such an id is its business; if it does, it shows escaped.)
    let evil_id = "key_\x1b]52;c;ZXZpbA==\x07";
    let refused = run(&s, admin, &["api-keys", "get", "--key-id", evil_id]).fails(4, "error: ");
    assert_terminal_safe(&refused);
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:#?}");
    assert!(
        !refused.stderr.contains("ZXZpbA==")
            || refused.stderr.contains(r"key_\x1b]52;c;ZXZpbA==\x07"),
        "{refused:#?}"
    );
}

#[test]
fn error_lines_escape_terminal_controls() {
    // A gateway's error message (here a stand-in's) is printed escaped, on one line, whatever it holds.
    let message = format!("key_id: no API key `{EVIL_NAME}`\n{EVIL_DESCRIPTION}");
    let body =
        json!({"error": {"code": "not_found", "message": message, "request_id": "req_fake"}});
    let url = stand_in_gateway("404 Not Found", "application/json", body.to_string());
    let refused = run_with(
        &url,
        Some("opg_whatever"),
        &["api-keys", "get", "key_1"],
        "",
    )
    .fails(4, "");
    assert_terminal_safe(&refused);
    assert_eq!(
        refused.stderr,
        format!(
            "error: not_found (404): key_id: no API key `{EVIL_NAME_SHOWN}`\\n{EVIL_DESCRIPTION_SHOWN} [request req_fake]\n"
        )
    );
    assert!(refused.stdout.is_empty());

    // `--json` changes nothing on stderr: the error line is for humans either way.
    let refused = run_with(
        &url,
        Some("opg_whatever"),
        &["api-keys", "get", "--json", "key_1"],
        "",
    )
    .fails(4, "");
    assert_terminal_safe(&refused);
}

/// A stand-in gateway that answers every request with `status`, `content_type` and `body`.
fn stand_in_gateway(status: &'static str, content_type: &'static str, body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            // Read the request head and its Content-Length body.
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut request = vec![0; length];
            let _ = reader.read_exact(&mut request);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nx-request-id: req_fake\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(body.as_bytes());
        }
    });
    url
}

/// A stand-in gateway that answers every request with two keys and then the error line of a failed stream.
fn failing_stream_server() -> String {
    let key = |i: u32| {
        json!({
            "id": format!("key_{i}"), "name": format!("k{i}"), "description": null,
            "key_prefix": "opg_abcdefgh", "permissions": ["api_keys:read"], "rate_limit": null,
            "allowed_ips": [], "org_id": "default", "workspace_id": "ws_01jf3m8v6k2x9q4w7e5r1t0y8z",
            "environment_id": null, "mode": "live", "livemode": true, "key_type": "workspace",
            "is_active": true, "service_account_id": null, "created_by": "cli",
            "created_at": "2026-01-01T00:00:00Z", "expires_at": null, "last_used_at": null,
            "last_used_ip": null, "last_used_user_agent": null, "revoked_at": null,
            "replaced_by_key_id": null, "grace_expires_at": null, "status": "active"
        })
        .to_string()
    };
    let error = r#"{"error":{"code":"unavailable","message":"storage is unavailable; retry later","request_id":"req_fake"}}"#;
    let body = format!("{}\n{}\n{error}\n", key(1), key(2));
    stand_in_gateway("200 OK", "application/x-ndjson", body)
}

#[test]
fn a_stream_that_fails_midway_exits_non_zero() {
    let url = failing_stream_server();
    let token = Some("opg_whatever");

    let json = run_with(&url, token, &["api-keys", "list", "--json"], "").fails(
        5,
        "the stream failed: unavailable (503): storage is unavailable",
    );
    assert_eq!(
        json.ndjson().len(),
        2,
        "the lines before the error are printed"
    );
    assert!(json.stderr.contains("[request req_fake]"));

    let human = run_with(&url, token, &["api-keys", "list"], "").fails(5, "the stream failed");
    assert_eq!(
        human.stdout.lines().count(),
        3,
        "header and two rows: {human:#?}"
    );
    assert!(human.stdout.contains("key_2"));

    let call = run_with(&url, token, &["call", "api_keys.list"], "").fails(5, "the stream failed");
    assert_eq!(call.ndjson().len(), 2);
}

#[test]
fn shell_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_with(&closed_url().url, None, &["completions", shell], "").ok();
        assert!(out.stdout.contains("api-keys"), "{shell}: {out:#?}");
        assert!(out.stdout.contains("rate-limit"), "{shell}");
    }
    run_with(&closed_url().url, None, &["completions", "tcsh"], "").fails(2, "invalid value");
}

/// The lines of ```sh blocks in `text` that run `opgate`.
fn documented_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && l.starts_with("opgate ") => out.push(l.to_owned()),
            _ => {}
        }
    }
    out
}

fn reference_pages() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api-reference");
    let mut pages: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_documented_cli_form_parses() {
    // Each documented example runs through the real binary (so the real parser, global flags included)
    // against a gateway that is not there: a command line the parser takes exits 5 (unreachable), one it
    // refuses exits 2 before any request.
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let closed = closed_url();
    let url = closed.url.clone();
    let mut examples = 0;
    let mut synopses = 0;
    // The README's client commands too (not `opgate admin` or `serve`, which would touch this directory).
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let client_commands: Vec<String> = documented_commands(&readme)
        .into_iter()
        .filter(|l| {
            [
                "api-keys",
                "auth",
                "audit",
                "workspaces",
                "environments",
                "service-accounts",
                "webhooks",
                "call",
            ]
            .iter()
            .any(|c| l.starts_with(&format!("opgate {c} ")))
        })
        .collect();
    assert!(client_commands.len() >= 8, "{client_commands:?}");
    let mut pages = reference_pages();
    pages.push((PathBuf::from("README.md"), client_commands.join("\n")));
    for (page, text) in pages {
        let lines = if page.ends_with("README.md") {
            text.lines().map(str::to_owned).collect()
        } else {
            documented_commands(&text)
        };
        for line in lines {
            let out = Command::new("sh")
                .env_clear_opgate()
                .arg("-c")
                .arg(&line)
                .env("PATH", &path)
                .env("OPGATE_URL", &url)
                .env("OPGATE_TOKEN", "opg_documented")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(5),
                "{}: `{line}` should parse and then fail to connect; stderr: {stderr}",
                page.display()
            );
            assert!(stderr.contains("cannot reach"), "{line}: {stderr}");
            examples += 1;
        }
        // The synopsis in each operation's CLI row: the subcommand exists and takes every flag shown.
        for row in text.lines().filter(|l| l.starts_with("| CLI | ")) {
            for form in row.split('`').skip(1).step_by(2) {
                let form = form.replace("\\|", "|");
                let words: Vec<&str> = form.split_whitespace().collect();
                assert_eq!(words[0], "opgate", "{row}");
                if words[1] == "call" {
                    assert_eq!(words[3], "'<json>'", "{row}");
                    continue;
                }
                let help = opgate()
                    .args([words[1], words[2], "--help"])
                    .output()
                    .unwrap();
                let help_text = String::from_utf8_lossy(&help.stdout);
                assert!(help.status.success(), "`{form}`: no such command");
                for flag in words.iter().filter_map(|w| {
                    let w = w.trim_start_matches('[').trim_end_matches(']');
                    w.starts_with("--").then_some(w)
                }) {
                    assert!(
                        help_text.contains(&format!("{flag} "))
                            || help_text.contains(&format!("{flag}\n")),
                        "`{form}`: `opgate {} {}` has no {flag}\n{help_text}",
                        words[1],
                        words[2]
                    );
                }
                synopses += 1;
            }
        }
    }
    assert!(examples >= 24, "found only {examples} documented commands");
    assert!(synopses >= 8, "found only {synopses} typed CLI forms");
}

/// The names of the `field  value` lines of human output, in order.
fn field_names(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(k, _)| k))
        .collect()
}

/// What the CLI prints as a table of `rows` (the header first): each column as wide as its widest cell, two
/// spaces apart, no trailing blanks.
fn table(rows: &[Vec<&str>]) -> String {
    let mut widths = vec![0; rows[0].len()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn workspaces_environments_and_service_accounts() {
    let s = TestServer::start();
    let admin = s.admin_key();

    // The organization starts with its default workspace.
    let first = run(&s, admin, &["workspaces", "list", "--json"])
        .ok()
        .ndjson();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["is_default"], true);
    let default_ws = first[0]["id"].as_str().unwrap().to_owned();

    let created = run(
        &s,
        admin,
        &[
            "workspaces",
            "create",
            "--name",
            "Payments",
            "--description",
            "The payments team's keys.",
        ],
    )
    .ok();
    assert_eq!(
        field_names(&created),
        [
            "id",
            "name",
            "description",
            "is_default",
            "org_id",
            "created_at",
            "updated_at"
        ]
    );
    let ws = created.field("id");
    assert!(ws.starts_with("ws_") && ws.len() == 29, "{created:#?}");
    assert_eq!(created.field("name"), "Payments");
    assert_eq!(created.field("description"), "The payments team's keys.");
    assert_eq!(created.field("is_default"), "false");
    assert_eq!(created.field("org_id"), "default");
    assert!(created.field("created_at").ends_with("(just now)"));

    let list = run(&s, admin, &["workspaces", "list"]).ok();
    assert_eq!(
        list.stdout,
        table(&[
            vec!["ID", "NAME", "DEFAULT", "CREATED", "DESCRIPTION"],
            vec![&default_ws, "Default", "yes", "just now", "-"],
            vec![
                &ws,
                "Payments",
                "no",
                "just now",
                "The payments team's keys."
            ],
        ])
    );
    let page = run(
        &s,
        admin,
        &["workspaces", "list", "--json", "--after-id", &default_ws],
    )
    .ok()
    .ndjson();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["id"], ws.as_str());

    // Positional id or flag; `--clear-description` sends null.
    assert_eq!(
        run(&s, admin, &["workspaces", "get", &ws])
            .ok()
            .field("name"),
        "Payments"
    );
    let updated = run(
        &s,
        admin,
        &[
            "workspaces",
            "update",
            "--workspace-id",
            &ws,
            "--name",
            "Payments (EU)",
            "--clear-description",
        ],
    )
    .ok();
    assert_eq!(updated.field("name"), "Payments (EU)");
    assert_eq!(updated.field("description"), "-");

    // The admin key works in a workspace when it names one.
    let me = run(&s, admin, &["auth", "whoami"]).ok();
    assert_eq!(me.field("key_type"), "admin");
    assert_eq!(me.field("mode"), "live");
    assert_eq!(me.field("workspace_id"), "-");
    assert_eq!(me.field("permissions"), "*");
    let admin_id = me.field("id");
    let there = run(&s, admin, &["auth", "whoami", "--workspace", &ws]).ok();
    assert_eq!(there.field("workspace_id"), ws);

    // An environment and a service account in it.
    let env = run(
        &s,
        admin,
        &[
            "environments",
            "create",
            "--name",
            "production",
            "--workspace-id",
            &ws,
        ],
    )
    .ok();
    assert_eq!(
        field_names(&env),
        ["id", "name", "workspace_id", "org_id", "created_at"]
    );
    let env_id = env.field("id");
    assert!(env_id.starts_with("env_"), "{env:#?}");
    assert_eq!(env.field("name"), "production");
    assert_eq!(env.field("workspace_id"), ws);
    let envs = run(&s, admin, &["environments", "list", "--workspace-id", &ws]).ok();
    assert_eq!(
        envs.stdout,
        table(&[
            vec!["ID", "NAME", "WORKSPACE", "CREATED"],
            vec![&env_id, "production", &ws, "just now"],
        ])
    );
    run(
        &s,
        admin,
        &[
            "environments",
            "create",
            "--name",
            "production",
            "--workspace-id",
            &ws,
        ],
    )
    .fails(
        4,
        "conflict (409): name: the workspace already has an environment named `production`",
    );

    let bot = run(
        &s,
        admin,
        &[
            "service-accounts",
            "create",
            "--workspace",
            &ws,
            "--name",
            "deploy-bot",
            "--description",
            "Keys of the deploy pipeline.",
        ],
    )
    .ok();
    assert_eq!(
        field_names(&bot),
        [
            "id",
            "name",
            "description",
            "is_active",
            "workspace_id",
            "org_id",
            "created_by",
            "created_at",
            "updated_at"
        ]
    );
    let sa = bot.field("id");
    assert!(sa.starts_with("sa_"), "{bot:#?}");
    assert_eq!(bot.field("workspace_id"), ws);
    assert_eq!(bot.field("is_active"), "true");
    assert_eq!(bot.field("created_by"), admin_id);
    let accounts = run(&s, admin, &["service-accounts", "list"]).ok();
    assert_eq!(
        accounts.stdout,
        table(&[
            vec!["ID", "NAME", "WORKSPACE", "STATUS", "CREATED BY", "CREATED"],
            vec![&sa, "deploy-bot", &ws, "active", &admin_id, "just now"],
        ])
    );

    // A key of the service account, in the workspace the call works in (`--workspace`), holding the `read`
    // preset.
    let key = run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--workspace",
            &ws,
            "--name",
            "deploy",
            "--permissions",
            "read",
            "--service-account-id",
            &sa,
            "--environment-id",
            &env_id,
        ],
    )
    .ok();
    let secret = key.field("key");
    let key_id = key.field("id");
    assert_eq!(key.field("key_type"), "workspace");
    assert_eq!(key.field("mode"), "live");
    assert_eq!(key.field("is_active"), "true");
    assert_eq!(key.field("permissions"), "read");
    assert_eq!(key.field("workspace_id"), ws);
    assert_eq!(key.field("environment_id"), env_id);
    assert_eq!(key.field("service_account_id"), sa);
    assert_eq!(key.field("created_by"), admin_id);
    let raw = run(&s, admin, &["api-keys", "get", "--json", &key_id])
        .ok()
        .json();
    assert_eq!(raw["permissions"], json!(["*:read"]));
    assert_eq!(raw["livemode"], true);

    // `--workspace-id` names the workspace in the input instead; an admin key belongs to none; a test key.
    let other = run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--json",
            "--name",
            "payments-ci",
            "--workspace-id",
            &ws,
            "--mode",
            "test",
        ],
    )
    .ok()
    .json();
    assert!(other["key"].as_str().unwrap().starts_with("opg_test_"));
    assert_eq!(other["key_details"]["workspace_id"], ws.as_str());
    assert_eq!(other["key_details"]["mode"], "test");
    let org_reader = run(
        &s,
        admin,
        &[
            "api-keys",
            "create",
            "--name",
            "org-reader",
            "--key-type",
            "admin",
            "--permissions",
            "read-write",
        ],
    )
    .ok();
    assert_eq!(org_reader.field("key_type"), "admin");
    assert_eq!(org_reader.field("workspace_id"), "-");
    assert_eq!(org_reader.field("permissions"), "read-write");
    run(
        &s,
        admin,
        &["api-keys", "create", "--name", "x", "--key-type", "root"],
    )
    .fails(2, "possible values: admin, workspace");

    // The key list, filtered by workspace (live keys only: the caller's mode), with its MODE and WORKSPACE.
    let listed = run(&s, admin, &["api-keys", "list", "--workspace-id", &ws]).ok();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{listed:#?}");
    let header = [
        "ID",
        "NAME",
        "PREFIX",
        "STATUS",
        "MODE",
        "WORKSPACE",
        "PERMISSIONS",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    ];
    let at = |column: &str| lines[0].find(column).unwrap();
    let mut columns: Vec<usize> = header.iter().map(|c| at(c)).collect();
    let sorted = columns.clone();
    columns.sort_unstable();
    assert_eq!(columns, sorted, "{listed:#?}");
    assert!(lines[1].starts_with(&format!("{key_id}  deploy  ")));
    assert_eq!(
        lines[1][at("STATUS")..]
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>(),
        ["active", "live", ws.as_str(), "read"],
        "{listed:#?}"
    );
    let by = |flag: &str, value: &str| {
        run(&s, admin, &["api-keys", "list", "--json", flag, value])
            .ok()
            .ndjson()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("--service-account-id", &sa), ["deploy"]);
    assert_eq!(by("--environment-id", &env_id), ["deploy"]);
    assert_eq!(by("--created-by", &admin_id), ["deploy", "org-reader"]);
    assert_eq!(by("--before-id", &key_id), ["admin"]);

    // The workspace key works in its own workspace only.
    let who = run(&s, &secret, &["auth", "whoami"]).ok();
    assert_eq!(who.field("id"), key_id);
    assert_eq!(who.field("key_type"), "workspace");
    assert_eq!(who.field("workspace_id"), ws);
    assert_eq!(who.field("environment_id"), env_id);
    assert_eq!(who.field("service_account_id"), sa);
    assert_eq!(who.field("permissions"), "read");
    run(&s, &secret, &["auth", "whoami", "--workspace", &ws]).ok();
    let refused = run(
        &s,
        &secret,
        &["api-keys", "list", "--workspace", &default_ws],
    )
    .fails(
        3,
        &format!(
            "error: permission_denied (403): X-Workspace-ID: this key is confined to workspace `{ws}` [request req_"
        ),
    );
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:#?}");
    // The same from OPGATE_WORKSPACE.
    let out = opgate()
        .args(["auth", "whoami"])
        .env("OPGATE_URL", s.url(""))
        .env("OPGATE_TOKEN", &secret)
        .env("OPGATE_WORKSPACE", &default_ws)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("this key is confined to workspace"));

    // In use: the environment and the workspace cannot go.
    run(&s, admin, &["environments", "delete", &env_id])
        .fails(4, "conflict (409): environment_id: ");
    run(&s, admin, &["workspaces", "delete", &ws]).fails(4, "conflict (409): workspace_id: ");
    run(&s, admin, &["workspaces", "delete", &default_ws]).fails(4, "conflict (409)");

    // Disabling the service account stops its key from the next request on.
    let disabled = run(
        &s,
        admin,
        &["service-accounts", "update", &sa, "--disabled", "true"],
    )
    .ok();
    assert_eq!(disabled.field("is_active"), "false");
    assert!(disabled.field("disabled_at").ends_with("(just now)"));
    run(&s, &secret, &["auth", "whoami"]).fails(
        3,
        "unauthenticated (401): the API key's service account is disabled or deleted",
    );
    let key_now = run(&s, admin, &["api-keys", "get", &key_id]).ok();
    assert_eq!(key_now.field("status"), "active");
    assert_eq!(key_now.field("is_active"), "false");
    let accounts = run(
        &s,
        admin,
        &["service-accounts", "list", "--workspace-id", &ws],
    )
    .ok();
    assert!(accounts
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .contains("  disabled  "));
    // The bare flag disables too; `false` enables.
    let bare = run(
        &s,
        admin,
        &[
            "service-accounts",
            "update",
            "--service-account-id",
            &sa,
            "--disabled",
        ],
    )
    .ok();
    assert_eq!(bare.field("is_active"), "false");
    let enabled = run(
        &s,
        admin,
        &["service-accounts", "update", &sa, "--disabled", "false"],
    )
    .ok();
    assert_eq!(enabled.field("is_active"), "true");
    assert_eq!(
        field_names(&enabled).len(),
        9,
        "no disabled_at: {enabled:#?}"
    );

    // Deleting the account revokes its key; the environment, then the workspace, can go (the test key
    // revoked first).
    let deleted = run(&s, admin, &["service-accounts", "delete", &sa]).ok();
    assert_eq!(deleted.field("id"), sa);
    assert_eq!(deleted.field("revoked_keys"), "1");
    run(&s, &secret, &["auth", "whoami"]).fails(3, "unauthenticated (401)");
    let env_gone = run(
        &s,
        admin,
        &["environments", "delete", "--environment-id", &env_id],
    )
    .ok();
    assert_eq!(env_gone.field("id"), env_id);
    let test_key_id = other["key_details"]["id"].as_str().unwrap();
    run(
        &s,
        other["key"].as_str().unwrap(),
        &["api-keys", "revoke", test_key_id],
    )
    .ok();
    let gone = run(&s, admin, &["workspaces", "delete", &ws]).ok();
    assert_eq!(gone.field("name"), "Payments (EU)");
    run(&s, admin, &["workspaces", "get", &ws]).fails(
        4,
        &format!("not_found (404): workspace_id: no workspace `{ws}` in this organization"),
    );
}

/// Runs `webhooks deliveries --json` until `done` holds for what it lists (the server's dispatcher works in
/// the background), then answers that list.
#[track_caller]
fn deliveries_once(s: &TestServer, token: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = run(s, token, &["webhooks", "deliveries", "--json"])
            .ok()
            .ndjson();
        if done(&listed) {
            return listed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries never settled: {listed:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn webhooks_commands() {
    // Loopback receivers are refused unless the server allows private addresses.
    let s = TestServer::start_with(&["--allow-private-webhooks"]);
    let admin = s.admin_key();
    let admin_id = run(&s, admin, &["auth", "whoami"]).ok().field("id");
    // A receiver that answers every delivery 204.
    let receiver = format!(
        "{}/hook",
        stand_in_gateway("204 No Content", "text/plain", String::new())
    );
    let warning =
        "warning: this is the only time the secret key is shown; store it now, it cannot be retrieved again\n";
    let fields = [
        "id",
        "url",
        "description",
        "event_types",
        "enabled",
        "mode",
        "org_id",
        "created_by",
        "created_at",
        "updated_at",
    ];
    let with_secret: Vec<&str> = std::iter::once("secret").chain(fields).collect();

    // Created: the secret is printed once, first, and the warning goes to stderr.
    let created = run(
        &s,
        admin,
        &[
            "webhooks",
            "create",
            "--webhook-url",
            &receiver,
            "--event-types",
            "api_key.created,api_key.revoked",
            "--description",
            "Key changes to the security team.",
        ],
    )
    .ok();
    assert_eq!(field_names(&created), with_secret);
    assert_eq!(created.stderr, warning);
    let secret = created.field("secret");
    assert!(secret.starts_with("whsec_"), "{created:#?}");
    assert_eq!(created.stdout.matches(&secret).count(), 1);
    let hook = created.field("id");
    assert!(hook.starts_with("wh_") && hook.len() == 29, "{created:#?}");
    assert_eq!(created.field("url"), receiver);
    assert_eq!(
        created.field("description"),
        "Key changes to the security team."
    );
    assert_eq!(
        created.field("event_types"),
        "api_key.created,api_key.revoked"
    );
    assert_eq!(created.field("enabled"), "true");
    assert_eq!(created.field("mode"), "live");
    assert_eq!(created.field("org_id"), "default");
    assert_eq!(created.field("created_by"), admin_id);
    assert!(created.field("created_at").ends_with("(just now)"));
    run(
        &s,
        admin,
        &[
            "webhooks",
            "create",
            "--webhook-url",
            &receiver,
            "--event-types",
            "key.made",
        ],
    )
    .fails(
        2,
        "`key.made` is not an event type (possible values: api_key.created,",
    );
    // `--url` is the gateway's: after `create` or `update` it is refused before any request (the token must
    // never go to a receiver); before the subcommand, or in OPGATE_URL, it names the gateway as everywhere.
    let refused = run(
        &s,
        admin,
        &["webhooks", "update", &hook, "--url", &receiver],
    )
    .fails(
        2,
        "error: `--url` is the gateway's URL, not the endpoint's: give the endpoint's with `--webhook-url`, \
         and the gateway's in OPGATE_URL or before the subcommand (`opgate webhooks --url <gateway> update ...`)",
    );
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    run(&s, admin, &["webhooks", "create", "--url", &receiver]).fails(
        2,
        "required arguments were not provided:\n  --webhook-url <URL>",
    );
    let closed = closed_url();
    let same = run_with(
        &closed.url,
        Some(admin),
        &[
            "webhooks",
            "--url",
            &s.url(""),
            "update",
            &hook,
            "--webhook-url",
            &receiver,
        ],
        "",
    )
    .ok();
    assert_eq!(same.field("url"), receiver);
    // Organization-wide only: not while working in a workspace.
    let default_ws = run(&s, admin, &["workspaces", "list", "--json"])
        .ok()
        .ndjson()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&s, admin, &["webhooks", "list", "--workspace", &default_ws]).fails(
        3,
        "permission_denied (403): webhook endpoints belong to the organization",
    );

    let list = run(&s, admin, &["webhooks", "list"]).ok();
    assert_eq!(
        list.stdout,
        table(&[
            vec![
                "ID",
                "URL",
                "EVENT TYPES",
                "STATUS",
                "CREATED",
                "DESCRIPTION"
            ],
            vec![
                &hook,
                &receiver,
                "api_key.created,api_key.revoked",
                "enabled",
                "just now",
                "Key changes to the security team."
            ],
        ])
    );
    let got = run(&s, admin, &["webhooks", "get", "--json", &hook])
        .ok()
        .json();
    assert_eq!(got["id"], hook.as_str());
    assert!(got.get("secret").is_none() && !got.to_string().contains(&secret));

    // A key's creation is delivered, and listed as such.
    let key = run(&s, admin, &["api-keys", "create", "--json", "--name", "ci"])
        .ok()
        .json();
    let key_id = key["key_details"]["id"].as_str().unwrap().to_owned();
    let listed = deliveries_once(&s, admin, |d| d.len() == 1 && d[0]["status"] == "delivered");
    let delivery = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(delivery.starts_with("whd_"), "{listed:?}");
    assert_eq!(listed[0]["webhook_id"], hook.as_str());
    assert_eq!(listed[0]["event_type"], "api_key.created");
    assert_eq!(
        (&listed[0]["attempts"], &listed[0]["last_status"]),
        (&json!(1), &json!(204))
    );
    let latency = format!("{}ms", listed[0]["last_latency_ms"].as_u64().unwrap());
    let deliveries = run(
        &s,
        admin,
        &["webhooks", "deliveries", "--webhook-id", &hook],
    )
    .ok();
    assert_eq!(
        deliveries.stdout,
        table(&[
            vec![
                "ID",
                "WEBHOOK",
                "EVENT TYPE",
                "STATUS",
                "ATTEMPTS",
                "LAST ANSWER",
                "LATENCY",
                "CREATED",
                "NEXT ATTEMPT",
                "LAST ERROR"
            ],
            vec![
                &delivery,
                &hook,
                "api_key.created",
                "delivered",
                "1",
                "204",
                &latency,
                "just now",
                "-",
                "-"
            ],
        ])
    );
    let pending = run(
        &s,
        admin,
        &["webhooks", "deliveries", "--status", "pending"],
    )
    .ok();
    assert_eq!(
        pending.stdout.lines().count(),
        1,
        "the header only: {pending:#?}"
    );
    run(&s, admin, &["webhooks", "deliveries", "--status", "lost"])
        .fails(2, "possible values: pending, delivered, failed");

    // Disabled (and its description cleared): a revocation meanwhile queues nothing for it.
    let disabled = run(
        &s,
        admin,
        &[
            "webhooks",
            "update",
            &hook,
            "--enabled",
            "false",
            "--clear-description",
        ],
    )
    .ok();
    let mut with_disabled = fields.to_vec();
    with_disabled.extend(["disabled_at", "disabled_reason"]);
    assert_eq!(field_names(&disabled), with_disabled);
    assert_eq!(disabled.field("enabled"), "false");
    assert_eq!(disabled.field("description"), "-");
    assert!(disabled.field("disabled_at").ends_with("(just now)"));
    assert_eq!(disabled.field("disabled_reason"), "disabled by a caller");
    run(&s, admin, &["api-keys", "revoke", &key_id]).ok();
    let listed = run(&s, admin, &["webhooks", "deliveries", "--json"])
        .ok()
        .ndjson();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The bare flag enables it again, as the API reference shows it.
    let enabled = run(
        &s,
        admin,
        &["webhooks", "update", "--webhook-id", &hook, "--enabled"],
    )
    .ok();
    assert_eq!(field_names(&enabled), fields);
    assert_eq!(enabled.field("enabled"), "true");

    // A new secret, printed once, with the same warning; `--json` prints the gateway's answer.
    let rotated = run(&s, admin, &["webhooks", "rotate-secret", &hook]).ok();
    assert_eq!(field_names(&rotated), with_secret);
    assert_eq!(rotated.stderr, warning);
    let new_secret = rotated.field("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert_eq!(rotated.field("id"), hook);
    let raw = run(
        &s,
        admin,
        &["webhooks", "rotate-secret", "--json", "--webhook-id", &hook],
    )
    .ok();
    assert_eq!(raw.stderr, warning);
    let raw = raw.json();
    assert!(raw["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_ne!(raw["secret"], new_secret.as_str());
    assert_eq!(raw["webhook"]["id"], hook.as_str());

    // Sent again: the same delivery, pending until the receiver has it once more.
    let again = run(&s, admin, &["webhooks", "redeliver", &delivery]).ok();
    assert_eq!(
        field_names(&again),
        [
            "id",
            "webhook_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status",
            "last_error",
            "last_latency_ms",
            "created_at",
            "finished_at",
            "attempt_1"
        ]
    );
    // The first attempt's line: when, the answer's status, the latency, the outcome.
    let first: Vec<String> = again
        .field("attempt_1")
        .split("  ")
        .map(str::to_owned)
        .collect();
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(first[1], "204");
    assert!(first[2].ends_with("ms"), "{first:?}");
    assert_eq!(first[3], "delivered");
    assert_eq!(again.field("id"), delivery);
    assert_eq!(
        again.field("event_id"),
        listed[0]["event_id"].as_str().unwrap()
    );
    assert_eq!(again.field("status"), "pending");
    assert_eq!(again.field("finished_at"), "-");
    let listed = deliveries_once(&s, admin, |d| d[0]["status"] == "delivered");
    // A redelivery starts a new round of retries; the history keeps both attempts.
    assert_eq!(
        (
            &listed[0]["id"],
            &listed[0]["attempts"],
            listed[0]["history"].as_array().unwrap().len()
        ),
        (&json!(delivery), &json!(1), 2)
    );

    // Deleted: printed as it was, then gone.
    let deleted = run(&s, admin, &["webhooks", "delete", "--webhook-id", &hook]).ok();
    assert_eq!(field_names(&deleted), fields);
    assert_eq!(deleted.field("id"), hook);
    run(&s, admin, &["webhooks", "get", &hook]).fails(
        4,
        &format!("not_found (404): webhook_id: no webhook endpoint `{hook}` in this organization"),
    );
    assert_eq!(
        run(&s, admin, &["webhooks", "list"]).ok().stdout,
        table(&[vec![
            "ID",
            "URL",
            "EVENT TYPES",
            "STATUS",
            "CREATED",
            "DESCRIPTION"
        ]])
    );
}
