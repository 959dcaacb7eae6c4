//! Session tokens end to end, in process with a manual clock: every way a token can be bad is a 401 with
//! `WWW-Authenticate: Bearer`; expiry to the second; issuer and audience checks; sessions creating keys
//! (recorded as their `sub`); scope enforcement; `auth.whoami` for both kinds of credential; the session
//! secret file and `opgate admin mint-session`.

use std::time::Duration;

use crate::support::gateway::capture_logs;
use crate::support::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use opgate::auth::SessionSettings;
use serde_json::{json, Value};

/// The session secret the test gateways get (as `OPGATE_SESSION_SECRET` would give it; raw: it is not base64).
const SECRET: &str = "opgate-test-session-secret-0123456789abcdef";
const WHOAMI: &str = "auth.whoami";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).unwrap())
}

/// A token with any header, HMAC-SHA256-signed with `secret` whatever the header claims.
fn forge(header: Value, claims: &Value, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

/// A well-formed HS256 token over `claims`, signed with the test secret.
fn hs256(claims: &Value) -> String {
    forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        SECRET.as_bytes(),
    )
}

/// Valid claims: issued at `now`, expiring five minutes later.
fn claims_at(now: i64, org: &str, sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "org": org, "scope": scope, "iat": now, "exp": now + 300})
}

/// Valid claims by the gateway's clock.
fn claims(s: &TestGateway, org: &str, sub: &str, scope: &str) -> Value {
    claims_at(s.clock().now().unix(), org, sub, scope)
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

/// The claims inside a token (read without verifying).
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn settings() -> SessionSettings {
    SessionSettings {
        secret: Some(SECRET.into()),
        ..SessionSettings::default()
    }
}

async fn server() -> TestGateway {
    TestGateway::start_with(|setup| setup.sessions = settings()).await
}

async fn whoami(s: &TestGateway, token: &str) -> Reply {
    s.post(&op_path(WHOAMI), Some(token), &json!({})).await
}

/// `auth.whoami` with `token` succeeds and names this session.
#[track_caller]
fn assert_session(reply: &Reply, org: &str, sub: &str, scopes: Value, exp: i64) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "kind": "session",
            "id": sub,
            "org": org,
            "permissions": scopes,
            "rate_limit": null,
            "expires_at": unix_rfc3339(exp),
            "workspace_id": null,
            "environment_id": null,
            "mode": "live",
            "livemode": true,
            "key_type": null,
            "service_account_id": null,
        })
    );
}

#[tokio::test]
async fn every_bad_session_token_is_unauthenticated() {
    let (logs, _guard) = capture_logs();
    let s = server().await;
    let good = claims(&s, "acme", "alice", "api_keys:read");
    let now = s.clock().now().unix();

    let alg_none = format!("{}.{}.", b64_json(&json!({"alg": "none"})), b64_json(&good));
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &good,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // Algorithm confusion: an HMAC made with the secret under a header claiming RS256.
    let rs256 = forge(
        json!({"alg": "RS256", "typ": "JWT"}),
        &good,
        SECRET.as_bytes(),
    );
    // The payload of an admin token under the signature of a read-only one.
    let read_only = hs256(&good);
    let admin = hs256(&with(good.clone(), "scope", json!("*")));
    let parts: Vec<&str> = read_only.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        admin.split('.').nth(1).unwrap(),
        parts[2]
    );
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    let wrong_secret = forge(
        json!({"alg": "HS256"}),
        &good,
        b"another secret that is at least 32 bytes",
    );

    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", alg_none, "`none`; only HS256"),
        ("HS512", hs512, "`HS512`; only HS256"),
        ("RS256 header", rs256, "`RS256`; only HS256"),
        (
            "no alg",
            forge(json!({"typ": "JWT"}), &good, SECRET.as_bytes()),
            "no algorithm",
        ),
        ("bad signature", swapped, "signature is not valid"),
        ("no signature", unsigned, "signature is not valid"),
        ("wrong secret", wrong_secret, "signature is not valid"),
        (
            "expired",
            hs256(&with(good.clone(), "exp", json!(now - 1))),
            "expired at",
        ),
        (
            "issued in the future",
            hs256(&with(good.clone(), "iat", json!(now + 3600))),
            "not valid yet",
        ),
        (
            "not before",
            hs256(&with(good.clone(), "nbf", json!(now + 3600))),
            "not valid before",
        ),
        (
            "no org",
            hs256(&without(good.clone(), "org")),
            "lacks the `org` claim",
        ),
        (
            "no sub",
            hs256(&without(good.clone(), "sub")),
            "lacks the `sub` claim",
        ),
        (
            "no scope",
            hs256(&without(good.clone(), "scope")),
            "lacks the `scope` claim",
        ),
        (
            "no exp",
            hs256(&without(good.clone(), "exp")),
            "lacks the `exp` claim",
        ),
        (
            "no iat",
            hs256(&without(good.clone(), "iat")),
            "lacks the `iat` claim",
        ),
        (
            "empty sub",
            hs256(&with(good.clone(), "sub", json!(""))),
            "`sub` claim must be 1–128 characters",
        ),
        (
            "long org",
            hs256(&with(good.clone(), "org", json!("o".repeat(129)))),
            "`org` claim must be 1–128 letters, digits",
        ),
        (
            "bad scope",
            hs256(&with(
                good.clone(),
                "scope",
                json!("api_keys:read Admin:all"),
            )),
            "`Admin:all`, which is not a scope",
        ),
        (
            "scope not a string",
            hs256(&with(good.clone(), "scope", json!(["api_keys:read"]))),
            "`scope` claim must be a string",
        ),
        (
            "exp not a number",
            hs256(&with(good.clone(), "exp", json!("tomorrow"))),
            "`exp` claim must be a number",
        ),
        (
            "payload not an object",
            forge(json!({"alg": "HS256"}), &json!("hi"), SECRET.as_bytes()),
            "not a JSON object",
        ),
        ("header not JSON", "abc.def.ghi".into(), "malformed"),
        (
            "garbage",
            "hello".into(),
            "neither an API key nor a session token",
        ),
        (
            "two parts",
            "eyJhbGciOiJIUzI1NiJ9.e30".into(),
            "neither an API key nor a session token",
        ),
        (
            "four parts",
            "a.b.c.d".into(),
            "neither an API key nor a session token",
        ),
        (
            "not base64url",
            "a+b.c/d.e==".into(),
            "neither an API key nor a session token",
        ),
    ];
    for (name, token, part) in &cases {
        for path in both_paths(WHOAMI) {
            let reply = s.post(&path, Some(token), &json!({})).await;
            assert_eq!(reply.status, 401, "{name} via {path}: {}", reply.text());
            let message = reply.error_with(401, "unauthenticated", &[part]);
            assert!(
                !message.contains(token.as_str()),
                "{name}: the token is never echoed"
            );
        }
    }
    // The same claims, properly signed, pass: each failure above is the one thing changed.
    assert_session(
        &whoami(&s, &hs256(&good)).await,
        "acme",
        "alice",
        json!(["api_keys:read"]),
        now + 300,
    );
    // A session failure is no different on another operation.
    let reply = s
        .post(&op_path("api_keys.list"), Some("hello"), &json!({}))
        .await;
    reply.error_with(
        401,
        "unauthenticated",
        &["neither an API key nor a session token"],
    );
    // Nothing logs a token (and the requests were logged, so the capture works).
    let log = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(log.contains("auth.whoami"), "{log}");
    for (name, token, _) in &cases {
        if let Some(signature) = token.split('.').nth(2).filter(|s| s.len() > 16) {
            assert!(!log.contains(signature), "{name}: the log holds the token");
        }
        if token.len() > 16 {
            assert!(
                !log.contains(token.as_str()),
                "{name}: the log holds the token"
            );
        }
    }
    assert!(!log.contains(SECRET), "the log holds the session secret");
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let checked = || SessionSettings {
        issuer: Some("https://idp.example".into()),
        audience: Some("opgate-test".into()),
        ..settings()
    };
    let s = TestGateway::start_with(|setup| setup.sessions = checked()).await;
    let now = s.clock().now().unix();
    let good = with(
        with(
            claims(&s, "acme", "alice", "api_keys:read"),
            "iss",
            json!("https://idp.example"),
        ),
        "aud",
        json!("opgate-test"),
    );
    assert_session(
        &whoami(&s, &hs256(&good)).await,
        "acme",
        "alice",
        json!(["api_keys:read"]),
        now + 300,
    );
    // `aud` may also be an array naming this server.
    let listed = with(good.clone(), "aud", json!(["other", "opgate-test"]));
    assert_eq!(whoami(&s, &hs256(&listed)).await.status, 200);

    for (name, claims, part) in [
        (
            "no iss",
            without(good.clone(), "iss"),
            "lacks the `iss` claim",
        ),
        (
            "wrong iss",
            with(good.clone(), "iss", json!("https://evil.example")),
            "issuer (`iss`) is not the one this server accepts",
        ),
        (
            "no aud",
            without(good.clone(), "aud"),
            "lacks the `aud` claim",
        ),
        (
            "wrong aud",
            with(good.clone(), "aud", json!("someone-else")),
            "audience (`aud`) does not include this server",
        ),
        (
            "wrong aud list",
            with(good.clone(), "aud", json!(["a", "b"])),
            "audience (`aud`) does not include this server",
        ),
    ] {
        let reply = whoami(&s, &hs256(&claims)).await;
        let message = reply.error_with(401, "unauthenticated", &[part]);
        assert!(
            !message.contains("idp.example") && !message.contains("opgate-test"),
            "{name}: {message}"
        );
    }
    // What the gateway mints for itself carries them.
    let minted = s.mint_session("acme", "alice", &["api_keys:read"], 60);
    assert_eq!(payload(&minted)["iss"], "https://idp.example");
    assert_eq!(whoami(&s, &minted).await.json()["id"], "alice");

    // `opgate admin mint-session` signs the issuer and audience it is given, so its tokens pass the gateway's
    // checks (verified at the moment they were issued: the CLI signs by the system clock).
    let env = [("OPGATE_SESSION_SECRET", SECRET)];
    let args = [
        "--org",
        "acme",
        "--sub",
        "alice",
        "--scopes",
        "api_keys:read",
    ];
    let flags = [
        "--issuer",
        "https://idp.example",
        "--audience",
        "opgate-test",
    ];
    let minted = mint_session_in(s.data_dir(), &env, &[&args[..], &flags[..]].concat());
    let claims = payload(&minted);
    assert_eq!(claims["iss"], "https://idp.example");
    assert_eq!(claims["aud"], "opgate-test");
    let iat = claims["iat"].as_i64().unwrap();
    let principal = s.data().sessions.verify_at(&minted, iat).unwrap();
    assert_eq!(
        (principal.id.as_str(), principal.org.as_str()),
        ("alice", "acme")
    );
    let plain = mint_session_in(s.data_dir(), &env, &args);
    let iat = payload(&plain)["iat"].as_i64().unwrap();
    let refused = s.data().sessions.verify_at(&plain, iat).unwrap_err();
    assert!(
        refused.message.contains("lacks the `iss` claim"),
        "{refused:?}"
    );

    // Without the settings, iss and aud are not checked.
    let open = server().await;
    assert_eq!(
        whoami(
            &open,
            &hs256(&without(
                claims_at(open.clock().now().unix(), "acme", "alice", "*"),
                "iss"
            ))
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn a_session_works_until_its_exp_to_the_second() {
    let s = server().await;
    let start = s.clock().now().unix();
    let token = s.mint_session("acme", "alice", &["api_keys:read"], 60);
    s.advance(Duration::from_secs(59));
    assert_session(
        &whoami(&s, &token).await,
        "acme",
        "alice",
        json!(["api_keys:read"]),
        start + 60,
    );
    s.list(&token, json!({})).await;
    // At `exp` exactly (no leeway): refused, on every operation.
    s.advance(Duration::from_secs(1));
    for op in [WHOAMI, "api_keys.list"] {
        s.post(&op_path(op), Some(&token), &json!({}))
            .await
            .error_with(
                401,
                "unauthenticated",
                &["expired at", &unix_rfc3339(start + 60)],
            );
    }
    // A token issued in the future is accepted up to 60 seconds ahead of the clock, not more.
    let now = s.clock().now().unix();
    let ahead = |secs: i64| {
        hs256(
            &json!({"sub": "bob", "org": "acme", "scope": "", "iat": now + secs, "exp": now + 600}),
        )
    };
    assert_eq!(whoami(&s, &ahead(60)).await.status, 200);
    whoami(&s, &ahead(61))
        .await
        .error_with(401, "unauthenticated", &["not valid yet"]);
    let nbf = hs256(
        &json!({"sub": "bob", "org": "acme", "scope": "", "iat": now, "nbf": now + 120, "exp": now + 600}),
    );
    whoami(&s, &nbf)
        .await
        .error_with(401, "unauthenticated", &["not valid before"]);
    s.advance(Duration::from_secs(60));
    assert_eq!(
        whoami(&s, &nbf).await.status,
        200,
        "60 s before nbf it passes"
    );
}

#[tokio::test]
async fn a_session_creates_keys_recorded_as_its_subject() {
    let s = server().await;
    let exp = s.clock().now().unix() + 900;
    let token = s.mint_session(
        "acme",
        "alice@example.com",
        &["api_keys:read", "api_keys:write"],
        900,
    );
    let out = s
        .create(
            &token,
            json!({"name": "made by a session", "rate_limit": 60}),
        )
        .await;
    let details = &out["key_details"];
    assert_eq!(details["created_by"], "alice@example.com");
    assert_eq!(details["org_id"], "acme");
    assert_eq!(
        details["permissions"],
        json!(["api_keys:read", "api_keys:write"]),
        "a new key defaults to the session's scopes"
    );
    assert_eq!(
        details["expires_at"],
        unix_rfc3339(exp),
        "a new key expires with the session that made it"
    );
    // The session sees its organization's keys, not `default`'s.
    let ids = s.list_ids(&token, json!({})).await;
    assert_eq!(ids, [details["id"].as_str().unwrap()]);
    // The new key works, in the session's organization.
    let key = out["key"].as_str().unwrap();
    let me = whoami(&s, key).await.json();
    assert_eq!(
        (me["kind"].as_str(), me["org"].as_str()),
        (Some("api_key"), Some("acme"))
    );
    assert_eq!(me["expires_at"], unix_rfc3339(exp));
    // A session can grant no more than it holds, nor a key that outlives it.
    s.post(
        &op_path("api_keys.create"),
        Some(&token),
        &json!({"name": "too much", "permissions": ["*"]}),
    )
    .await
    .error_with(403, "permission_denied", &["`*`"]);
    s.post(
        &op_path("api_keys.create"),
        Some(&token),
        &json!({"name": "too long", "expires_in_days": 1}),
    )
    .await
    .error_with(403, "permission_denied", &["outlive"]);
    // When the session has ended, so has the key it made.
    s.advance(Duration::from_secs(900));
    whoami(&s, key)
        .await
        .error_with(401, "unauthenticated", &["expired at"]);
}

#[tokio::test]
async fn sessions_are_held_to_their_scopes() {
    let s = server().await;
    let reader = s.mint_session("acme", "bob", &["api_keys:read"], 3600);
    s.list(&reader, json!({})).await;
    for path in both_paths("api_keys.create") {
        s.post(&path, Some(&reader), &json!({"name": "nope"}))
            .await
            .error_with(403, "permission_denied", &["`api_keys:write`"]);
    }
    // A forged token is held to its scopes just the same; wildcards work as for keys.
    let wildcard = hs256(&claims(&s, "acme", "carol", "api_keys:*"));
    s.create(&wildcard, json!({"name": "ok"})).await;
    // A session with no scopes may only ask who it is.
    let nothing = s.mint_session("acme", "dave", &[], 3600);
    assert_eq!(whoami(&s, &nothing).await.json()["permissions"], json!([]));
    s.post(&op_path("api_keys.list"), Some(&nothing), &json!({}))
        .await
        .error_with(403, "permission_denied", &["`api_keys:read`"]);
}

#[tokio::test]
async fn whoami_describes_api_keys_and_sessions() {
    let s = server().await;
    let admin = s.admin_key().to_owned();
    let admin_id = s.list_ids(&admin, json!({})).await[0].clone();
    for path in both_paths(WHOAMI) {
        let reply = s.post(&path, Some(&admin), &json!({})).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(
            reply.json(),
            json!({
                "kind": "api_key",
                "id": admin_id,
                "org": "default",
                "permissions": ["*"],
                "rate_limit": null,
                "expires_at": null,
                "workspace_id": null,
                "environment_id": null,
                "mode": "live",
                "livemode": true,
                "key_type": "admin",
                "service_account_id": null,
            })
        );
    }
    // An empty body is `{}`; an unknown field is refused.
    let reply = s
        .post_raw(&op_path(WHOAMI), Some(&admin), None, Vec::new())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    s.post(&op_path(WHOAMI), Some(&admin), &json!({"verbose": true}))
        .await
        .error_with(400, "invalid_argument", &["verbose"]);

    // A key's own rate limit and expiry.
    let out = s
        .create(
            &admin,
            json!({"name": "limited", "permissions": ["api_keys:read"], "rate_limit": 100, "expires_in_days": 30}),
        )
        .await;
    let key = out["key"].as_str().unwrap();
    let me = whoami(&s, key).await.json();
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["id"], out["key_details"]["id"]);
    assert_eq!(me["org"], "default");
    assert_eq!(me["permissions"], json!(["api_keys:read"]));
    assert_eq!(me["rate_limit"], 100);
    assert_eq!(me["expires_at"], out["key_details"]["expires_at"]);
    assert!(me["expires_at"].is_string());

    // A session: id = sub, expires_at = exp, no rate limit of its own. Needs no scope at all.
    let token = s.mint_session("acme", "user_42", &["api_keys:read", "api_keys:write"], 600);
    let claims = payload(&token);
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(claims["iat"].as_i64().unwrap(), s.clock().now().unix());
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), 600);
    assert_eq!(claims["scope"], "api_keys:read api_keys:write");
    assert_eq!(
        whoami(&s, &token).await.json(),
        json!({
            "kind": "session",
            "id": "user_42",
            "org": "acme",
            "permissions": ["api_keys:read", "api_keys:write"],
            "rate_limit": null,
            "expires_at": unix_rfc3339(exp),
            "workspace_id": null,
            "environment_id": null,
            "mode": "live",
            "livemode": true,
            "key_type": null,
            "service_account_id": null,
        })
    );
}

#[tokio::test]
async fn the_session_secret_file_is_private_durable_and_shared_with_mint_session() {
    // No session secret given: the gateway creates `<data-dir>/session_secret` on first start.
    let mut s = TestGateway::start().await;
    let path = s.data_dir().join("session_secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "session_secret is private");
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .expect("base64");
    assert_eq!(secret.len(), 32);

    // A token forged with the file's bytes verifies; the test secret is not this gateway's.
    let forged = forge(
        json!({"alg": "HS256"}),
        &claims(&s, "acme", "frank", "api_keys:read"),
        &secret,
    );
    assert_eq!(whoami(&s, &forged).await.json()["id"], "frank");
    whoami(&s, &hs256(&claims(&s, "acme", "frank", "*")))
        .await
        .error_with(401, "unauthenticated", &["signature"]);

    // `opgate admin mint-session` signs with the same file (verified as of the moment it signed: the CLI
    // uses the system clock).
    let minted = mint_session_in(
        s.data_dir(),
        &[],
        &["--org", "acme", "--sub", "erin", "--scopes", "*"],
    );
    let iat = payload(&minted)["iat"].as_i64().unwrap();
    assert_eq!(
        s.data().sessions.verify_at(&minted, iat).unwrap().id,
        "erin"
    );

    // The secret survives a restart, and so do the tokens signed with it.
    s.restart().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(whoami(&s, &forged).await.json()["id"], "frank");
    assert_eq!(
        s.data().sessions.verify_at(&minted, iat).unwrap().id,
        "erin"
    );
}

#[test]
fn mint_session_refuses_bad_input_and_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("OPGATE_SESSION_SECRET", SECRET)];
    for (name, args) in [
        ("bad scope", &["--sub", "a", "--scopes", "Admin"][..]),
        ("empty sub", &["--sub", "", "--scopes", "*"][..]),
        ("ttl 0", &["--sub", "a", "--scopes", "*", "--ttl", "0"][..]),
        (
            "ttl over 30 days",
            &["--sub", "a", "--scopes", "*", "--ttl", "2592001"][..],
        ),
        ("no sub", &["--scopes", "*"][..]),
    ] {
        let out = opgate()
            .args(["admin", "mint-session"])
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .envs(env)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        assert!(!out.stderr.is_empty(), "{name}: the reason on stderr");
    }
    // A short secret is refused, naming the variable but not the value.
    let out = opgate()
        .args(["admin", "mint-session", "--sub", "a", "--scopes", "*"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("OPGATE_SESSION_SECRET", "too-short-secret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OPGATE_SESSION_SECRET") && !stderr.contains("too-short-secret"),
        "{stderr}"
    );
    // The defaults: org `default`, one hour.
    let token = mint_session_in(dir.path(), &env, &["--sub", "a", "--scopes", "*"]);
    let claims = payload(&token);
    assert_eq!(claims["org"], "default");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none());
}
