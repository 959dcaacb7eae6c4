//! `api_keys.list` over 10,000 keys, in process: read frame by frame and parsed line by line, paged with
//! `limit` and `after_id`, with revoked keys hidden or shown, and a stream whose storage fails after its first
//! line, which ends with one error line.

use std::collections::HashSet;

use crate::support::*;
use http_body_util::BodyExt;
use reqwest::Method;
use serde_json::{json, Value};

const SEEDED: usize = 10_000;
const ORG: &str = "bulk";

/// A server whose org `bulk` holds, in this order: a key made by `admin create-key` (returned, with
/// `api_keys:read` and `api_keys:write`), 10,000 seeded keys, and one key made through the API (returned).
struct Bulk {
    server: TestGateway,
    /// The CLI-made key of org `bulk`, the oldest.
    key: String,
    /// The API-made key, the newest.
    newest: Value,
}

async fn bulk() -> Bulk {
    let server = TestGateway::start().await;
    let key = server
        .create_key(ORG, &["api_keys:read", "api_keys:write"])
        .await;
    server.seed_keys(ORG, SEEDED).await;
    let newest = server.create(&key, json!({ "name": "newest" })).await;
    Bulk {
        server,
        key,
        newest,
    }
}

/// Streams `api_keys.list`, parsing each NDJSON line as soon as it is complete. Checks every raw line against
/// `secrets` and for secret fields. Returns the items and the number of body frames they came in.
async fn stream_list(
    s: &TestGateway,
    token: &str,
    body: Value,
    secrets: &[&str],
) -> (Vec<Value>, usize) {
    let (items, error, frames) = read_stream(s, token, body, secrets).await;
    assert!(error.is_none(), "the stream failed: {error:?}");
    (items, frames)
}

/// Like [`stream_list`], also returning the stream's final error line, if it ended with one.
async fn read_stream(
    s: &TestGateway,
    token: &str,
    body: Value,
    secrets: &[&str],
) -> (Vec<Value>, Option<Value>, usize) {
    let resp = s
        .request(Method::POST, &op_path("api_keys.list"), Some(token))
        .json(&body)
        .respond()
        .await;
    read_frames(resp, secrets).await
}

/// Reads an NDJSON response frame by frame, each line as soon as it is complete.
async fn read_frames(
    resp: opgate::server::Resp,
    secrets: &[&str],
) -> (Vec<Value>, Option<Value>, usize) {
    assert_eq!(resp.status(), 200);
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

    let mut body = resp.into_body();
    let mut pending = Vec::new();
    let mut items = Vec::new();
    let mut error = None;
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.unwrap().into_data() else {
            continue;
        };
        pending.extend_from_slice(&chunk);
        frames += 1;
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
            assert!(error.is_none(), "a line after the error line: {line}");
            if item.get("error").is_some() {
                error = Some(item);
            } else {
                items.push(item);
            }
            start += n + 1;
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty(), "the stream ends with a complete line");
    (items, error, frames)
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
    // Oldest first: the order they were made in (ids are random past their time part).
    for (i, item) in items[1..=SEEDED].iter().enumerate() {
        assert_eq!(item["name"], format!("seed-{i}"), "in the order made");
    }
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

#[tokio::test]
async fn a_stream_that_fails_after_its_first_line_ends_with_one_error_line() {
    let s = TestGateway::start().await;
    s.seed_keys("default", 1_200).await;
    let resp = s
        .request(Method::POST, &op_path("api_keys.list"), Some(s.admin_key()))
        .json(&json!({}))
        .respond()
        .await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    let mut text = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    assert!(text.ends_with(b"\n") && !text.is_empty());
    // Once the first lines are out, storage goes away under the stream: the store is closed and its files
    // removed, so the next page cannot be read.
    s.data().store.close().await;
    for file in ["opgate.db", "opgate.db-wal", "opgate.db-shm"] {
        let _ = std::fs::remove_file(s.data_dir().join(file));
    }
    while let Some(frame) = body.frame().await {
        text.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    assert!(text.ends_with('\n'), "whole lines only");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (last, items) = lines.split_last().unwrap();
    // Every line before the last is a key, in order; the last is the contract's error, alone.
    assert!(
        !items.is_empty() && items.len() < 1_201,
        "{} items",
        items.len()
    );
    for (i, item) in items.iter().enumerate() {
        assert_metadata(item);
        if i > 0 {
            assert_eq!(item["name"], format!("seed-{}", i - 1));
        }
    }
    assert_eq!(last.as_object().unwrap().len(), 1, "{last}");
    let error = last["error"].as_object().expect("an error line");
    assert_eq!(error.len(), 3, "{last}");
    assert_eq!(error["code"], "unavailable");
    assert_eq!(error["message"], "storage is unavailable; retry later");
    assert_eq!(error["request_id"], request_id.as_str());
}
