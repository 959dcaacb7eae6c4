//! `api_keys.list` over 10,000 keys: read as a byte stream and parsed line by line, paged with `limit` and
//! `after_id`, and with revoked keys hidden or shown.

use std::collections::HashSet;

use crate::support::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

const SEEDED: usize = 10_000;
const ORG: &str = "bulk";

/// A server whose org `bulk` holds, in this order: a key made by `admin create-key` (returned, with
/// `api_keys:read` and `api_keys:write`), 10,000 seeded keys, and one key made through the API (returned).
struct Bulk {
    server: TestServer,
    /// The CLI-made key of org `bulk`, the oldest.
    key: String,
    /// The API-made key, the newest.
    newest: Value,
}

async fn bulk() -> Bulk {
    let server = TestServer::start();
    let key = server.create_key(ORG, &["api_keys:read", "api_keys:write"]);
    server.seed_keys(ORG, SEEDED);
    let newest = server.create(&key, json!({ "name": "newest" })).await;
    Bulk {
        server,
        key,
        newest,
    }
}

/// Streams `api_keys.list`, parsing each NDJSON line as soon as it is complete. Checks every raw line against
/// `secrets` and for secret fields. Returns the items and the number of body chunks they came in.
async fn stream_list(
    s: &TestServer,
    token: &str,
    body: Value,
    secrets: &[&str],
) -> (Vec<Value>, usize) {
    let resp = s
        .request(Method::POST, &op_path("api_keys.list"), Some(token))
        .json(&body)
        .send()
        .await
        .expect("list request");
    assert_eq!(resp.status().as_u16(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    assert!(header("x-request-id").is_some_and(|v| !v.is_empty()));

    let mut bytes = resp.bytes_stream();
    let mut pending = Vec::new();
    let mut items = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = bytes.next().await {
        pending.extend_from_slice(&chunk.expect("stream chunk"));
        chunks += 1;
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&pending[start..start + n]).expect("UTF-8 line");
            for secret in secrets {
                assert!(!line.contains(secret), "a secret leaked: {line}");
            }
            assert!(
                !line.contains("\"key\":") && !line.contains("key_hash"),
                "{line}"
            );
            let item: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(item.get("error").is_none(), "the stream failed: {line}");
            items.push(item);
            start += n + 1;
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty(), "the stream ends with a complete line");
    (items, chunks)
}

#[tokio::test]
async fn streams_ten_thousand_keys_oldest_first_without_secrets() {
    let Bulk {
        server: s,
        key,
        newest,
    } = bulk().await;
    let newest_key = newest["key"].as_str().unwrap();
    let secrets = [key.as_str(), newest_key, s.admin_key()];

    let (items, chunks) = stream_list(&s, &key, json!({}), &secrets).await;
    assert_eq!(items.len(), SEEDED + 2);
    assert!(
        chunks > 1,
        "a list this long arrives in more than one chunk"
    );
    let ids: Vec<String> = items.iter().map(id_of).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "ids are unique"
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in stream order"
    );
    let created: Vec<i64> = items
        .iter()
        .map(|i| rfc3339_unix(i["created_at"].as_str().unwrap()))
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    for item in &items {
        assert_metadata(item);
        assert_eq!(item["org_id"], ORG);
    }
    assert_eq!(
        items[0]["key_prefix"],
        key[..12],
        "the CLI-made key is the oldest"
    );
    assert_eq!(items[1]["name"], "seed-0");
    assert_eq!(items[SEEDED]["name"], format!("seed-{}", SEEDED - 1));
    assert_eq!(
        stable(&items[SEEDED + 1]),
        stable(&newest["key_details"]),
        "the API-made key is the newest"
    );

    // The seeded keys are invisible to the admin's organization.
    let (admin_items, _) = stream_list(&s, s.admin_key(), json!({}), &secrets).await;
    assert_eq!(admin_items.len(), 1);
    assert_eq!(admin_items[0]["org_id"], "default");
}

#[tokio::test]
async fn pages_with_limit_and_after_id_give_the_same_sequence() {
    let Bulk { server: s, key, .. } = bulk().await;
    let (all, _) = stream_list(&s, &key, json!({}), &[&key]).await;
    let all: Vec<String> = all.iter().map(id_of).collect();

    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = match &after {
            None => json!({ "limit": 1000 }),
            Some(id) => json!({ "limit": 1000, "after_id": id }),
        };
        let (page, _) = stream_list(&s, &key, body, &[&key]).await;
        assert!(page.len() <= 1000);
        if page.is_empty() {
            break;
        }
        pages += 1;
        after = Some(id_of(page.last().unwrap()));
        paged.extend(page.iter().map(id_of));
        assert!(pages <= all.len() / 1000 + 1, "paging must end");
    }
    assert_eq!(pages, (SEEDED + 2).div_ceil(1000));
    assert_eq!(
        paged.len(),
        paged.iter().collect::<HashSet<_>>().len(),
        "no duplicates"
    );
    assert_eq!(paged, all, "the pages concatenate to the full list");

    // Small pages from the middle.
    let (one, _) = stream_list(&s, &key, json!({ "limit": 1 }), &[]).await;
    assert_eq!(id_of(&one[0]), all[0]);
    let (three, _) = stream_list(&s, &key, json!({ "limit": 3, "after_id": all[4999] }), &[]).await;
    assert_eq!(three.iter().map(id_of).collect::<Vec<_>>(), all[5000..5003]);
}

#[tokio::test]
async fn revoked_keys_are_hidden_unless_asked_for() {
    let Bulk {
        server: s,
        key,
        newest,
    } = bulk().await;
    let (all, _) = stream_list(&s, &key, json!({}), &[]).await;
    let all: Vec<String> = all.iter().map(id_of).collect();
    let revoked: Vec<String> = vec![
        all[1].clone(),
        all[5000].clone(),
        id_of(&newest["key_details"]),
    ];
    for id in &revoked {
        s.revoke(&key, id).await;
    }

    let (visible, _) = stream_list(&s, &key, json!({}), &[]).await;
    let visible: Vec<String> = visible.iter().map(id_of).collect();
    let expected: Vec<String> = all
        .iter()
        .filter(|id| !revoked.contains(id))
        .cloned()
        .collect();
    assert_eq!(visible, expected, "revoked keys are hidden by default");
    let (explicit, _) = stream_list(&s, &key, json!({ "include_revoked": false }), &[]).await;
    assert_eq!(explicit.len(), visible.len());

    let (everything, _) = stream_list(&s, &key, json!({ "include_revoked": true }), &[]).await;
    assert_eq!(
        everything.iter().map(id_of).collect::<Vec<_>>(),
        all,
        "shown in place when asked for"
    );
    for item in &everything {
        assert_eq!(
            item["revoked_at"].is_null(),
            !revoked.contains(&id_of(item)),
            "{item}"
        );
    }

    // A revoked key still works as a cursor.
    let (page, _) = stream_list(&s, &key, json!({ "limit": 2, "after_id": all[5000] }), &[]).await;
    assert_eq!(page.iter().map(id_of).collect::<Vec<_>>(), all[5001..5003]);
    let (page, _) = stream_list(
        &s,
        &key,
        json!({ "limit": 2, "after_id": all[4999], "include_revoked": false }),
        &[],
    )
    .await;
    assert_eq!(page.iter().map(id_of).collect::<Vec<_>>(), all[5001..5003]);
}
