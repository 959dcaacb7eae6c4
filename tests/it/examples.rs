//! The programs in `examples/` run here, so they cannot rot: the Rust program that embeds the gateway and adds
//! its own operations, the curl walk-through against a real server, and the Python streaming script (with the
//! interpreter in `OPGATE_PYTHON`, default `python3`, which needs `requests`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{EnvClearOpgate, TestServer};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The built example `name` (`target/<profile>/examples/<name>`, beside the `opgate` binary's directory).
/// `cargo test` builds examples before running tests; when only this test target was built, build it now.
fn example(name: &str) -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_opgate")).parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(root()).args(["build", "--example", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    path
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_embedding_example_serves_its_own_operations() {
    let bin = example("notes");
    let out = Command::new(&bin).env_clear_opgate().output().unwrap();
    let stdout = assert_ok(&out, "examples/notes");
    assert!(
        stdout.contains("created note_2 (Water the plants.)"),
        "{stdout}"
    );
    assert!(stdout.contains("listed note_1"), "{stdout}");
    assert!(
        stdout.contains("/docs describes 31 operations, notes.create among them: true"),
        "{stdout}"
    );
    assert!(stdout.contains("test key lists 0 notes"), "{stdout}");
    assert!(
        stdout.contains("after a test note: test key lists 1, live key lists 2"),
        "{stdout}"
    );
    assert!(stdout.contains("permission_denied (403)"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");

    // Its operations are in the generated spec, beside the built-in ones, with their scopes.
    let out = Command::new(&bin)
        .env_clear_opgate()
        .arg("spec")
        .output()
        .unwrap();
    let spec: Value = serde_json::from_str(&assert_ok(&out, "examples/notes spec")).unwrap();
    let create = &spec["paths"]["/v1/op/notes.create"]["post"];
    assert_eq!(create["x-scope"], "notes:write");
    assert_eq!(create["x-side-effect"], "write");
    let list = &spec["paths"]["/v1/notes/list"]["post"];
    assert_eq!(list["x-scope"], "notes:read");
    assert_eq!(list["x-streaming"], true);
    assert!(spec["paths"]["/v1/op/api_keys.create"].is_object());
    assert!(spec["components"]["schemas"]["CreateNoteInput"]["properties"]["text"].is_object());

    // An embedder's SDKs have its operations too.
    let dir = tempfile::tempdir().unwrap();
    for language in ["python", "typescript"] {
        let out = Command::new(&bin)
            .env_clear_opgate()
            .args(["sdk", language])
            .arg(dir.path().join(language))
            .output()
            .unwrap();
        assert_ok(&out, "examples/notes sdk");
    }
    let resources = std::fs::read_to_string(dir.path().join("python/opgate/resources.py")).unwrap();
    assert!(resources.contains("class Notes:"), "{resources}");
    assert!(resources.contains(") -> Stream[Note]:"), "{resources}");
    let client = std::fs::read_to_string(dir.path().join("typescript/src/client.ts")).unwrap();
    assert!(
        client.contains("readonly notes = new Notes(this);"),
        "{client}"
    );
}

#[tokio::test]
async fn the_curl_walkthrough_runs_against_a_real_server() {
    let s = TestServer::start();
    let out = Command::new("bash")
        .env_clear_opgate()
        .arg(root().join("examples/curl-walkthrough.sh"))
        .env("OPGATE_URL", s.url(""))
        .env("OPGATE_TOKEN", s.admin_key())
        .output()
        .unwrap();
    let stdout = assert_ok(&out, "examples/curl-walkthrough.sh");
    assert!(stdout.contains("walk-through complete"), "{stdout}");
    // It cleaned up: both keys it made are revoked, only the admin key is left active.
    let active = s.list(s.admin_key(), serde_json::json!({})).await;
    assert_eq!(active.len(), 1, "{active:?}");
}

#[test]
fn the_python_script_streams_keys_line_by_line() {
    let python = std::env::var("OPGATE_PYTHON").unwrap_or_else(|_| "python3".into());
    let s = TestServer::start();
    s.seed_keys("default", 250);
    let script = root().join("examples/stream_keys.py");
    let run = |token: &str, args: &[&str]| {
        Command::new(&python)
            .env_clear_opgate()
            .arg(&script)
            .args(args)
            .env("OPGATE_URL", s.url(""))
            .env("OPGATE_TOKEN", token)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python} (set OPGATE_PYTHON): {e}"))
    };

    let out = run(s.admin_key(), &[]);
    let stdout = assert_ok(&out, "examples/stream_keys.py");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 251, "{stdout}");
    assert!(lines[0].starts_with("key_") && lines[0].ends_with("admin"));
    assert!(lines[250].ends_with("seed-249"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("251 keys"));

    let out = run(s.admin_key(), &["--limit", "5"]);
    assert_eq!(assert_ok(&out, "--limit 5").lines().count(), 5);

    let out = run("opg_garbage", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthenticated (401)"));
}

/// The embedding guide's program, built as an outside crate builds opgate (a path dependency without the CLI
/// feature), then run: a re-export the guide relies on, or a trap it would fall into, fails here.
#[test]
fn the_embedding_guide_builds_as_an_outside_crate_and_runs() {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_opgate")).parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = root().join("examples/embedded/Cargo.toml");
    let built = Command::new(&cargo)
        .args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert_ok(&built, "cargo build of examples/embedded");
    let bin = target_dir.join("debug").join("greetings");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&bin)
        .arg("demo")
        .arg(dir.path().join("data"))
        .env_clear_opgate()
        .output()
        .unwrap();
    let stdout = assert_ok(&out, "examples/embedded demo");
    assert!(stdout.starts_with("said \"Hello!\" as key_"), "{stdout}");
    assert!(stdout.contains("listed 1 greeting(s)"), "{stdout}");
    // Its spec holds its own operations beside the built-ins.
    let out = Command::new(&bin)
        .arg("spec")
        .env_clear_opgate()
        .output()
        .unwrap();
    let spec: Value = serde_json::from_str(&assert_ok(&out, "examples/embedded spec")).unwrap();
    assert_eq!(
        spec["paths"]["/v1/op/greetings.create"]["post"]["x-scope"],
        "greetings:write"
    );
    assert_eq!(
        spec["paths"]["/v1/op/greetings.list"]["post"]["x-streaming"],
        true
    );
    assert!(spec["paths"]["/v1/op/api_keys.create"].is_object());
}

/// examples/upstream: the Python reports service (standard library only, verifying the identity signature)
/// behind the real binary with the example's configuration, as the README runs it (on a free port here).
#[tokio::test]
async fn the_upstream_example_serves_its_operations_through_the_gateway() {
    use std::io::BufRead;
    let secret = "an-example-secret-of-at-least-32-bytes!";
    /// The service, killed when the test ends however it ends.
    struct Service(std::process::Child);
    impl Drop for Service {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut service = Service(
        Command::new("python3")
            .env_clear_opgate()
            .arg(root().join("examples/upstream/service.py"))
            .arg("0")
            .env("REPORTS_UPSTREAM_SECRET", secret)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the example service"),
    );
    let mut line = String::new();
    std::io::BufReader::new(service.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    // The example's files, pointed at the port the service got.
    let dir = tempfile::tempdir().unwrap();
    let example = root().join("examples/upstream");
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    for file in ["schemas/reports.generate.input.json", "schemas/report.json"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    let config = std::fs::read_to_string(example.join("opgate.toml"))
        .unwrap()
        .replace("http://127.0.0.1:9000", &url);
    std::fs::write(dir.path().join("opgate.toml"), config).unwrap();

    let s = TestServer::start_with_env(
        &["--config", dir.path().join("opgate.toml").to_str().unwrap()],
        &[("REPORTS_UPSTREAM_SECRET", secret)],
    );
    let made = s
        .create(
            s.admin_key(),
            serde_json::json!({"name": "reports", "permissions": ["reports:*"]}),
        )
        .await;
    let (token, key_id) = (
        made["key"].as_str().unwrap(),
        made["key_details"]["id"].as_str().unwrap(),
    );
    let report = s
        .call_ok(
            "reports.generate",
            token,
            serde_json::json!({"title": "Q3 revenue", "pages": 12}),
        )
        .await
        .json();
    assert_eq!(
        report,
        serde_json::json!({"id": "rep_1", "title": "Q3 revenue", "pages": 12, "requested_by": key_id})
    );
    let listed = s
        .call_ok("reports.list", token, serde_json::json!({}))
        .await
        .lines();
    assert_eq!(listed, vec![report]);
    // Another organization's key sees none of them: the service keeps organizations apart by the identity.
    // Minted offline: `--config` lets it hold the upstream operations' scopes.
    let other = s.create_key_with(
        "other-org",
        &["reports:*"],
        &["--config", dir.path().join("opgate.toml").to_str().unwrap()],
    );
    let theirs = s
        .call_ok("reports.list", &other, serde_json::json!({}))
        .await
        .lines();
    assert!(theirs.is_empty(), "{theirs:?}");
}
