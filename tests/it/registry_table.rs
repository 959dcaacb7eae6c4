//! One table-driven test over the registry, in process: every operation the gateway serves, present and
//! future, through both of its paths, gets the checks every operation shares — 401 for each kind of bad
//! credential, 405, 413, 415, 429, 403 without its scope, 400 for an unknown field, its documented example
//! answered, and `Idempotency-Key` handled as its side-effect class says.

use std::collections::BTreeSet;

use crate::support::{both_paths, TestGateway};
use opgate::core::{scope, SideEffect};
use reqwest::Method;
use serde_json::{json, Value};

const LIMIT: usize = 4096;

#[tokio::test]
async fn every_operation_through_both_paths_gets_the_shared_checks() {
    let s = TestGateway::start_with(|setup| setup.config.max_body_bytes = LIMIT).await;
    let admin = s.admin_key().to_owned();
    let registry = opgate::describe_registry().unwrap();
    let served = s.data().registry().unwrap();
    let ids = |r: &opgate::core::Registry| -> BTreeSet<&'static str> {
        r.entries().iter().map(|e| e.meta.id).collect()
    };
    assert_eq!(
        ids(&registry),
        ids(&served),
        "the gateway serves the registry"
    );
    assert!(registry.entries().len() >= 8);
    let scopes: BTreeSet<&str> = registry
        .entries()
        .iter()
        .map(|e| e.meta.scope)
        .filter(|s| !s.is_empty())
        .collect();

    // Bad credentials: none, garbage, a bad checksum, a revoked key.
    let mut forged = admin.clone().into_bytes();
    forged[10] = if forged[10] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let revoked = s.create_key("default", &["*"]).await;
    let revoked_id = s.id_of_key(&revoked).await;
    s.revoke(&admin, &revoked_id).await;
    let bad_tokens: [(Option<&str>, &str); 4] = [
        (None, "missing `Authorization: Bearer <token>` header"),
        (Some("garbage"), "neither an API key nor a session token"),
        (Some(forged.as_str()), "checksum does not match"),
        (Some(revoked.as_str()), "revoked"),
    ];

    let mut checked = 0;
    for entry in registry.entries() {
        let id = entry.meta.id;
        let example: Value = serde_json::from_str(entry.example)
            .unwrap_or_else(|e| panic!("{id}: the example is not JSON: {e}"));
        let example_bytes = serde_json::to_vec(&example).unwrap();
        // A key that holds every scope but this operation's (none when nothing else falls short of it).
        let lacking: Vec<&str> = scopes
            .iter()
            .copied()
            .filter(|other| !scope::holds(&[other], entry.meta.scope))
            .collect();
        for (n, path) in both_paths(id).iter().enumerate() {
            let post = |token: Option<&str>| s.request(Method::POST, path, token);

            for (token, part) in &bad_tokens {
                post(*token).json(&example).send().await.error_with(
                    401,
                    "unauthenticated",
                    &[part],
                );
            }

            let reply = s.request(Method::GET, path, Some(&admin)).send().await;
            reply.error_with(405, "method_not_allowed", &["POST"]);
            assert_eq!(reply.header("allow"), Some("POST"), "{path}");

            let mut big = example_bytes.clone();
            big.pop();
            big.resize(LIMIT, b' ');
            big.push(b'}');
            post(Some(&admin))
                .header("content-type", "application/json")
                .body(big)
                .send()
                .await
                .error_with(413, "payload_too_large", &[&LIMIT.to_string()]);

            post(Some(&admin))
                .header("content-type", "text/plain")
                .body(example_bytes.clone())
                .send()
                .await
                .error_with(415, "unsupported_media_type", &["application/json"]);

            let limited = s
                .create_key_with("default", &["*"], |k| k.rate_limit = Some(1))
                .await;
            // The first call spends the limit whatever its answer (refusals count too).
            let first = post(Some(&limited)).json(&example).send().await;
            assert_ne!(first.status, 429, "{path}: {}", first.text());
            let refused = post(Some(&limited)).json(&example).send().await;
            refused.error_with(429, "rate_limited", &["1 requests per minute"]);
            assert!(refused.header("retry-after").is_some(), "{path}");

            if entry.meta.scope.is_empty() {
                assert!(lacking.is_empty());
            } else {
                let without = s.create_key("default", &lacking).await;
                post(Some(&without)).json(&example).send().await.error_with(
                    403,
                    "permission_denied",
                    &[id, entry.meta.scope],
                );
            }

            let mut unknown = example.clone();
            unknown["field_no_operation_has"] = json!(1);
            post(Some(&admin)).json(&unknown).send().await.error_with(
                400,
                "invalid_argument",
                &["unknown field `field_no_operation_has`"],
            );

            // The example itself: answered, or the operation's own 404 for the absent id it names, or its
            // own 409 for a name the rate-limit probe above already took (names unique in a workspace).
            let answered = post(Some(&admin)).json(&example).send().await;
            match answered.status {
                409 if entry.errors.contains(&opgate::core::Code::Conflict)
                    && entry.meta.id.ends_with(".create") =>
                {
                    answered.error(409, "conflict");
                }
                200 => {
                    let content_type = if entry.streaming {
                        "application/x-ndjson"
                    } else {
                        "application/json"
                    };
                    assert_eq!(
                        answered.header("content-type"),
                        Some(content_type),
                        "{path}"
                    );
                    if entry.streaming {
                        answered.lines();
                    } else {
                        assert!(answered.json().is_object(), "{path}");
                    }
                }
                _ => {
                    answered.error(404, "not_found");
                }
            }

            // Idempotency by side effect.
            let key = format!("table-{id}-{n}");
            let with_key = || {
                post(Some(&admin))
                    .header("idempotency-key", &key)
                    .json(&example)
            };
            match entry.meta.side_effect {
                SideEffect::Write | SideEffect::Destructive => {
                    let first = with_key().send().await;
                    assert!(
                        first.header("idempotent-replayed").is_none(),
                        "{path}: {}",
                        first.text()
                    );
                    let replay = with_key().send().await;
                    // A 409 is not kept (the conflict may clear): the retry runs again.
                    let kept = (first.status != 409).then_some("true");
                    assert_eq!(
                        replay.header("idempotent-replayed"),
                        kept,
                        "{path}: {}",
                        replay.text()
                    );
                    assert_eq!(replay.status, first.status, "{path}");
                    if kept.is_some() {
                        assert_eq!(
                            replay.body, first.body,
                            "{path}: the original, byte for byte"
                        );
                        assert_ne!(replay.request_id(), first.request_id(), "{path}");
                    }
                }
                SideEffect::Export => {
                    with_key().send().await.error_with(
                        400,
                        "invalid_argument",
                        &["Idempotency-Key"],
                    );
                }
                SideEffect::Read => {
                    for _ in 0..2 {
                        let reply = with_key().send().await;
                        assert_eq!(reply.status, answered.status, "{path}");
                        assert!(reply.header("idempotent-replayed").is_none(), "{path}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * registry.entries().len());
}
