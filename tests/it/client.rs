//! `opgate-client` against the gateway served on a local socket from this process: every typed method returns
//! the server's own types, streams are handed out item by item as they arrive (10,000 keys), errors carry the
//! contract's code, status, message and request id, the generic call reaches every operation, a client set to
//! a workspace (`X-Workspace-ID`) makes keys and service accounts there, and a webhook endpoint goes through
//! its whole life with the deliveries a key's events make.

use std::time::Duration;

use crate::support::{closed_port, opgate, TestGateway};
use futures_util::{StreamExt, TryStreamExt};
use opgate_client::types::{
    CreateEnvironmentInput, CreateKeyInput, CreateServiceAccountInput, CreateWebhookInput,
    CreateWorkspaceInput, CredentialKind, DeliveryDetails, DeliveryStatus, EventType, GetKeyInput,
    KeyType, ListAuditInput, ListDeliveriesInput, ListKeysInput, ListServiceAccountsInput,
    ListWebhooksInput, ListWorkspacesInput, Mode, RedeliverInput, RevokeKeyInput, RotateKeyInput,
    ServiceAccountIdInput, Status, UpdateKeyInput, UpdateServiceAccountInput, UpdateWebhookInput,
    UpdateWorkspaceInput, WebhookDetails, WebhookIdInput, WorkspaceIdInput,
};
use opgate_client::{webhooks_signature, Client, Code, Error, Reply, Timestamp, TYPED_OPERATIONS};
use serde_json::{json, Value};

fn client(url: &str, token: &str) -> Client {
    Client::new(url).unwrap().with_token(token)
}

/// Runs the `opgate` CLI with `args` and `OPGATE_TOKEN=token` off the async thread (the gateway it talks to
/// is served by this test's runtime).
async fn cli(token: &str, args: &[&str]) -> std::process::Output {
    let mut command = opgate();
    command.args(args).env("OPGATE_TOKEN", token);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[test]
fn typed_methods_cover_registered_operations_only() {
    let registry = opgate::describe_registry().unwrap();
    for (id, streaming) in TYPED_OPERATIONS {
        let entry = registry.get(id).unwrap_or_else(|| {
            panic!("the client has a method for `{id}`, which the gateway lacks")
        });
        assert_eq!(entry.streaming, *streaming, "{id}: streaming");
    }
    // Every built-in operation has a typed method (others are reachable with `call`).
    for entry in registry.entries() {
        assert!(
            TYPED_OPERATIONS.iter().any(|(id, _)| *id == entry.meta.id),
            "`{}` has no typed method in opgate-client",
            entry.meta.id
        );
    }
}

#[tokio::test]
async fn typed_methods_round_trip_the_servers_types() {
    let s = TestGateway::start().await;
    let (url, _server) = s.serve().await;
    let admin = client(&url, s.admin_key());

    let created = admin
        .api_keys()
        .create(CreateKeyInput {
            permissions: Some(vec!["api_keys:read".into(), "audit:read".into()]),
            rate_limit: Some(100),
            expires_in_days: Some(7),
            allowed_ips: Some(vec!["127.0.0.1".into(), "::1".into()]),
            description: Some("from the typed client".into()),
            ..CreateKeyInput::new("typed")
        })
        .await
        .unwrap();
    assert!(created.key.starts_with("opg_"));
    let details = &created.key_details;
    assert_eq!(details.name, "typed");
    assert_eq!(details.status, Status::Active);
    assert_eq!(details.rate_limit, Some(100));
    assert_eq!(
        details.expires_at.map(|t| t.unix()),
        Some(s.clock().now().unix() + 7 * 86_400)
    );
    let id = details.id.clone();

    let reader = client(&url, &created.key);
    let me = reader.auth().whoami().await.unwrap();
    assert_eq!(me.kind, CredentialKind::ApiKey);
    assert_eq!(me.id, id);
    assert_eq!(me.permissions, ["api_keys:read", "audit:read"]);

    let got = reader
        .api_keys()
        .get(GetKeyInput { key_id: id.clone() })
        .await
        .unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.description.as_deref(), Some("from the typed client"));

    let updated = admin
        .api_keys()
        .update(UpdateKeyInput {
            name: Some("typed-2".into()),
            description: Some(None),
            rate_limit: Some(None),
            allowed_ips: Some(None),
            permissions: Some(vec!["api_keys:read".into()]),
            ..UpdateKeyInput::new(&id)
        })
        .await
        .unwrap();
    assert_eq!(updated.name, "typed-2");
    assert_eq!(updated.description, None);
    assert_eq!(updated.rate_limit, None);
    assert!(updated.allowed_ips.is_empty());
    assert_eq!(updated.permissions, ["api_keys:read"]);

    let keys: Vec<_> = admin
        .api_keys()
        .list(ListKeysInput::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].id, id);

    let rotated = admin
        .api_keys()
        .rotate(RotateKeyInput {
            grace_period_seconds: Some(60),
            ..RotateKeyInput::new(&id)
        })
        .await
        .unwrap();
    assert_eq!(rotated.old_key_id, id);
    assert_ne!(rotated.key_details.id, id);
    assert_eq!(rotated.key_details.name, "typed-2");
    assert_eq!(rotated.grace_expires_at.unix(), s.clock().now().unix() + 60);

    let revoke = RevokeKeyInput {
        key_id: rotated.key_details.id.clone(),
    };
    let revoked = admin
        .api_keys()
        .idempotency_key("typed-revoke")
        .revoke(revoke.clone())
        .await
        .unwrap();
    assert_eq!(revoked.status, Status::Revoked);
    // The client sends the key: the same key with another body is the gateway's 422.
    let e = admin
        .api_keys()
        .idempotency_key("typed-revoke")
        .revoke(RevokeKeyInput { key_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::IdempotencyMismatch), "{e:?}");

    let audit: Vec<_> = admin
        .audit()
        .list(ListAuditInput {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ops: Vec<&str> = audit.iter().map(|a| a.operation.as_str()).collect();
    assert_eq!(
        ops,
        ["api_keys.revoke", "api_keys.rotate", "api_keys.update"]
    );
    assert_eq!(audit[0].target_id.as_deref(), Some(revoked.id.as_str()));

    // Sessions work too.
    let token = s.mint_session("default", "alice", &["api_keys:read"], 3600);
    let me = client(&url, &token).auth().whoami().await.unwrap();
    assert_eq!(me.kind, CredentialKind::Session);
    assert_eq!(me.id, "alice");
}

#[tokio::test]
async fn a_stream_of_ten_thousand_keys_arrives_item_by_item() {
    let s = TestGateway::start().await;
    s.seed_keys("default", 10_000).await;
    // Past its first frame, the gateway's answer is held back until the gate opens.
    let (url, _server, gate) = s.serve_gated().await;
    let admin = client(&url, s.admin_key());

    let mut stream = admin
        .api_keys()
        .list(ListKeysInput::default())
        .await
        .unwrap();
    assert!(stream.request_id().is_some_and(|r| r.starts_with("req_")));
    // The first key is handed out while the rest of the body does not exist yet.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the first key arrives before the rest of the stream")
        .unwrap()
        .unwrap();
    assert_eq!(first.name, "admin");
    gate.open();
    // Oldest first: the order they were made in.
    let mut count = 1;
    let mut last_id = first.id;
    while let Some(key) = stream.next().await {
        let key = key.unwrap();
        assert_eq!(key.name, format!("seed-{}", count - 1));
        last_id = key.id;
        count += 1;
    }
    assert_eq!(count, 10_001);

    // A page of it, after a given key.
    let page: Vec<_> = admin
        .api_keys()
        .list(ListKeysInput {
            limit: Some(500),
            after_id: Some(last_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(page.is_empty());

    // The CLI pipes the same stream straight through, and tabulates it.
    let out = cli(
        s.admin_key(),
        &["api-keys", "list", "--json", "--url", &url],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 10_001);
    let out = cli(s.admin_key(), &["api-keys", "list", "--url", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 10_002, "a header and a row per key");
    assert!(text.lines().last().unwrap().contains("seed-9999"));
}

#[tokio::test]
async fn errors_carry_code_status_message_and_request_id() {
    let s = TestGateway::start().await;
    let (url, _server) = s.serve().await;
    let admin = client(&url, s.admin_key());
    let reader = client(&url, &s.create_key("default", &["api_keys:read"]).await);

    let check = |e: Error, code: Code, status: u16, part: &str| {
        match &e {
            Error::Api {
                code: c,
                status: st,
                message,
                request_id,
                streamed,
            } => {
                assert_eq!((*c, *st), (code, status), "{e}");
                assert!(
                    message.contains(part),
                    "{message:?} should contain {part:?}"
                );
                assert!(request_id.as_deref().is_some_and(|r| r.starts_with("req_")));
                assert!(!streamed);
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        assert_eq!(e.code(), Some(code));
    };

    let e = admin
        .api_keys()
        .get(GetKeyInput {
            key_id: "key_00000000000000000000000000".into(),
        })
        .await
        .unwrap_err();
    check(e, Code::NotFound, 404, "key_00000000000000000000000000");

    let e = reader
        .api_keys()
        .create(CreateKeyInput::new("nope"))
        .await
        .unwrap_err();
    assert!(e.is_auth());
    check(e, Code::PermissionDenied, 403, "api_keys:write");

    let e = client(&url, "opg_garbage")
        .auth()
        .whoami()
        .await
        .unwrap_err();
    assert!(e.is_auth());
    check(e, Code::Unauthenticated, 401, "malformed");

    let e = admin
        .api_keys()
        .create(CreateKeyInput {
            rate_limit: Some(0),
            ..CreateKeyInput::new("bad")
        })
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, 400, "rate_limit");

    // A stream refused before its first line is an ordinary error, not a stream.
    let e = admin
        .api_keys()
        .list(ListKeysInput {
            after_id: Some("key_00000000000000000000000000".into()),
            ..Default::default()
        })
        .await
        .err()
        .expect("refused");
    check(e, Code::NotFound, 404, "after_id");

    // Export operations refuse an idempotency key: the client sends it, the gateway says why.
    let e = admin
        .api_keys()
        .idempotency_key("k1")
        .create(CreateKeyInput::new("x"))
        .await
        .unwrap_err();
    check(e, Code::InvalidArgument, 400, "Idempotency-Key");
}

#[tokio::test]
async fn a_stream_that_fails_midway_yields_the_items_then_the_error() {
    let s = TestGateway::start().await;
    s.seed_keys("default", 1_200).await;
    let (url, _server, gate) = s.serve_gated().await;
    let admin = client(&url, s.admin_key());
    let mut stream = admin
        .api_keys()
        .list(ListKeysInput::default())
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.name, "admin");
    // Storage goes away while the rest is held back: the next page cannot be read.
    s.data().store.close().await;
    for file in ["opgate.db", "opgate.db-wal", "opgate.db-shm"] {
        let _ = std::fs::remove_file(s.data_dir().join(file));
    }
    gate.open();
    let mut items = 1;
    let error = loop {
        match stream.next().await.expect("the stream ends with its error") {
            Ok(_) => items += 1,
            Err(e) => break e,
        }
    };
    assert!(items < 1_201, "{items}");
    match &error {
        Error::Api {
            code,
            status,
            streamed,
            request_id,
            ..
        } => {
            assert_eq!((*code, *status, *streamed), (Code::Unavailable, 503, true));
            assert_eq!(request_id.as_deref(), stream.request_id());
        }
        other => panic!("expected the stream's error, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "nothing after the error");
}

#[tokio::test]
async fn the_generic_call_reaches_every_operation() {
    let s = TestGateway::start().await;
    let (url, _server) = s.serve().await;
    let admin = client(&url, s.admin_key());
    let registry = opgate::describe_registry().unwrap();
    assert!(registry.entries().len() >= 21);
    for (i, entry) in registry.entries().iter().enumerate() {
        // Each operation's documented example, aimed at objects that exist: a key, an empty workspace (which
        // `workspaces.delete` may remove), an environment and a service account of the default workspace, and
        // a webhook endpoint (which `webhooks.delete` may remove) with a delivery: the key's creation event.
        let webhook = admin
            .webhooks()
            .create(CreateWebhookInput {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: Some(vec![EventType::ApiKeyCreated]),
                description: None,
            })
            .await
            .unwrap()
            .webhook
            .id;
        let target = s
            .create(
                s.admin_key(),
                json!({ "name": "target", "permissions": ["api_keys:read"] }),
            )
            .await;
        let key = target["key_details"]["id"].as_str().unwrap().to_owned();
        let workspace = admin
            .workspaces()
            .create(CreateWorkspaceInput {
                name: format!("target-{i}"),
                description: None,
            })
            .await
            .unwrap()
            .id;
        let environment = admin
            .environments()
            .create(CreateEnvironmentInput {
                name: format!("target-{i}"),
                workspace_id: None,
            })
            .await
            .unwrap()
            .id;
        let account = admin
            .service_accounts()
            .create(CreateServiceAccountInput {
                name: format!("target-{i}"),
                description: None,
                workspace_id: None,
            })
            .await
            .unwrap()
            .id;
        let deliveries: Vec<_> = admin
            .webhooks()
            .deliveries(ListDeliveriesInput {
                webhook_id: Some(webhook.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        let delivery = deliveries[0].id.clone();
        let mut input: Value = serde_json::from_str(entry.example).unwrap();
        for (_, v) in input.as_object_mut().unwrap().iter_mut() {
            let Some(text) = v.as_str() else { continue };
            for (prefix, id) in [
                ("key_", &key),
                ("ws_", &workspace),
                ("env_", &environment),
                ("sa_", &account),
                ("wh_", &webhook),
                ("whd_", &delivery),
            ] {
                if text.starts_with(prefix) {
                    *v = json!(id);
                    break;
                }
            }
        }
        let id = entry.meta.id;
        match admin.call(id, input.clone()).await {
            Ok(Reply::Json(v)) => {
                assert!(!entry.streaming, "{id}: a JSON answer from a stream");
                assert!(v.is_object(), "{id}: {v}");
            }
            Ok(Reply::Stream(items)) => {
                assert!(entry.streaming, "{id}: a stream from a JSON operation");
                let items: Vec<Value> = items.try_collect().await.unwrap();
                assert!(items.iter().all(Value::is_object), "{id}");
            }
            Err(e) => panic!("{id} {input}: {e:?}"),
        }
        // An organization has at most 20 endpoints per mode: each round removes its own (unless the
        // operation just did).
        let _ = admin
            .call("webhooks.delete", json!({"webhook_id": webhook}))
            .await;
    }
    match admin
        .call("api_keys.list", json!({"limit": 1}))
        .await
        .unwrap()
    {
        Reply::Stream(items) => {
            let items: Vec<_> = items.try_collect().await.unwrap();
            assert_eq!(items.len(), 1);
            assert_eq!(items[0]["name"], "admin");
        }
        other => panic!("{other:?}"),
    }
    // An operation the gateway lacks is its 404.
    let e = admin.call("notes.create", json!({})).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));

    // An unreachable gateway.
    let closed = closed_port();
    let e = Client::new(&closed.url)
        .unwrap()
        .with_token("opg_x")
        .auth()
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e:?}");
}

#[tokio::test]
async fn a_workspace_its_service_account_and_keys() {
    let s = TestGateway::start().await;
    let (url, _server) = s.serve().await;
    let admin = client(&url, s.admin_key());
    let created_at = s.clock().now();

    // The admin key is organization-wide, live, in no workspace.
    let me = admin.auth().whoami().await.unwrap();
    assert_eq!(me.key_type, Some(KeyType::Admin));
    assert_eq!((me.mode, me.livemode), (Mode::Live, true));
    assert_eq!(me.workspace_id, None);
    assert_eq!(me.service_account_id, None);

    let ws = admin
        .workspaces()
        .create(CreateWorkspaceInput {
            name: "Payments".into(),
            description: Some("The payments team's keys.".into()),
        })
        .await
        .unwrap();
    assert!(ws.id.starts_with("ws_") && ws.id.len() == 29, "{ws:?}");
    assert_eq!(ws.org_id, "default");
    assert_eq!(ws.name, "Payments");
    assert_eq!(ws.description.as_deref(), Some("The payments team's keys."));
    assert!(!ws.is_default);
    assert_eq!((ws.created_at, ws.updated_at), (created_at, created_at));

    // The organization's default workspace (made with the first other one, so the oldest) and the new one.
    let all: Vec<_> = admin
        .workspaces()
        .list(ListWorkspacesInput::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1], ws);
    assert!(all[0].is_default && all[0].name == "Default", "{all:?}");
    let default_ws = all[0].id.clone();

    s.advance(Duration::from_secs(60));
    let renamed = admin
        .workspaces()
        .update(UpdateWorkspaceInput {
            workspace_id: ws.id.clone(),
            name: Some("Payments (EU)".into()),
            description: Some(None),
        })
        .await
        .unwrap();
    let ws = opgate_client::types::WorkspaceDetails {
        name: "Payments (EU)".into(),
        description: None,
        updated_at: opgate_client::Timestamp(created_at.unix() + 60),
        ..ws
    };
    assert_eq!(renamed, ws);
    let got = admin
        .workspaces()
        .get(WorkspaceIdInput {
            workspace_id: ws.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got, ws);

    // A client working in the workspace: what it makes goes there.
    let in_ws = admin.clone().with_workspace(&ws.id);
    assert_eq!(in_ws.workspace_id(), Some(ws.id.as_str()));
    let bot = in_ws
        .service_accounts()
        .create(CreateServiceAccountInput {
            name: "deploy-bot".into(),
            description: Some("Keys of the deploy pipeline.".into()),
            workspace_id: None,
        })
        .await
        .unwrap();
    assert!(bot.id.starts_with("sa_"), "{bot:?}");
    assert_eq!(bot.workspace_id, ws.id);
    assert_eq!(bot.name, "deploy-bot");
    assert_eq!(
        bot.description.as_deref(),
        Some("Keys of the deploy pipeline.")
    );
    assert!(bot.is_active);
    assert_eq!(bot.disabled_at, None);
    assert_eq!(bot.created_by, me.id);

    let created = in_ws
        .api_keys()
        .create(CreateKeyInput {
            permissions: Some(vec!["api_keys:read".into()]),
            service_account_id: Some(bot.id.clone()),
            ..CreateKeyInput::new("deploy")
        })
        .await
        .unwrap();
    assert!(created.key.starts_with("opg_") && !created.key.starts_with("opg_test_"));
    let key = &created.key_details;
    assert_eq!(key.name, "deploy");
    assert_eq!(key.workspace_id.as_deref(), Some(ws.id.as_str()));
    assert_eq!(key.environment_id, None);
    assert_eq!(key.service_account_id.as_deref(), Some(bot.id.as_str()));
    assert_eq!(key.key_type, KeyType::Workspace);
    assert_eq!((key.mode, key.livemode), (Mode::Live, true));
    assert_eq!((key.status, key.is_active), (Status::Active, true));
    assert_eq!(key.permissions, ["api_keys:read"]);
    assert_eq!(key.created_by, me.id);

    // A key elsewhere (the default workspace), which the workspace filter leaves out.
    let elsewhere = admin
        .api_keys()
        .create(CreateKeyInput::new("elsewhere"))
        .await
        .unwrap();
    assert_eq!(
        elsewhere.key_details.workspace_id.as_deref(),
        Some(default_ws.as_str())
    );
    let in_workspace: Vec<_> = admin
        .api_keys()
        .list(ListKeysInput {
            workspace_id: Some(ws.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(in_workspace, std::slice::from_ref(key));
    let of_bot: Vec<_> = admin
        .api_keys()
        .list(ListKeysInput {
            service_account_id: Some(bot.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(of_bot, std::slice::from_ref(key));

    // The new key works in its workspace, and only there.
    let deploy = client(&url, &created.key);
    let who = deploy.auth().whoami().await.unwrap();
    assert_eq!(who.id, key.id);
    assert_eq!(who.key_type, Some(KeyType::Workspace));
    assert_eq!(who.workspace_id.as_deref(), Some(ws.id.as_str()));
    assert_eq!(who.service_account_id.as_deref(), Some(bot.id.as_str()));
    assert_eq!(who.mode, Mode::Live);
    let same = deploy.clone().with_workspace(&ws.id).auth().whoami().await;
    assert_eq!(same.unwrap().id, key.id);
    let e = deploy
        .with_workspace(&default_ws)
        .auth()
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some(Code::PermissionDenied), Some(403))
    );
    assert_eq!(
        e.to_string(),
        format!(
            "permission_denied (403): X-Workspace-ID: this key is confined to workspace `{}`",
            ws.id
        )
    );

    // Disabling the service account stops its key from the very next request.
    let disabled = admin
        .service_accounts()
        .update(UpdateServiceAccountInput {
            service_account_id: bot.id.clone(),
            name: None,
            description: None,
            disabled: Some(true),
        })
        .await
        .unwrap();
    assert!(!disabled.is_active);
    assert_eq!(disabled.disabled_at, Some(s.clock().now()));
    let e = client(&url, &created.key)
        .auth()
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some(Code::Unauthenticated), Some(401))
    );
    let listed: Vec<_> = in_ws
        .service_accounts()
        .list(ListServiceAccountsInput::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&disabled));
    let now_inactive = admin
        .api_keys()
        .get(GetKeyInput {
            key_id: key.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        (now_inactive.status, now_inactive.is_active),
        (Status::Active, false)
    );

    // Deleting the account revokes its key; the workspace is then empty and can go.
    let deleted = admin
        .service_accounts()
        .delete(ServiceAccountIdInput {
            service_account_id: bot.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(deleted.service_account.id, bot.id);
    assert_eq!(deleted.revoked_keys, 1);
    let gone = admin
        .workspaces()
        .delete(WorkspaceIdInput {
            workspace_id: ws.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(gone, ws);
    let e = admin
        .workspaces()
        .get(WorkspaceIdInput {
            workspace_id: ws.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
}

#[tokio::test]
async fn a_webhook_endpoint_its_secret_and_its_deliveries() {
    let s = TestGateway::start().await;
    let (url, _server) = s.serve().await;
    let admin = client(&url, s.admin_key());
    let me = admin.auth().whoami().await.unwrap();
    let created_at = s.clock().now();

    // Created: the secret comes once, beside the endpoint (which never carries it).
    let created = admin
        .webhooks()
        .create(CreateWebhookInput {
            url: "http://127.0.0.1:9/hook".into(),
            event_types: Some(vec![EventType::ApiKeyCreated, EventType::ApiKeyRevoked]),
            description: Some("Key changes to the security team.".into()),
        })
        .await
        .unwrap();
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert_eq!(
        webhooks_signature::secret_bytes(&created.secret)
            .unwrap()
            .len(),
        32
    );
    let hook = created.webhook;
    assert!(
        hook.id.starts_with("wh_") && hook.id.len() == 29,
        "{hook:?}"
    );
    assert_eq!(
        hook,
        WebhookDetails {
            id: hook.id.clone(),
            org_id: "default".into(),
            mode: Mode::Live,
            url: "http://127.0.0.1:9/hook".into(),
            description: Some("Key changes to the security team.".into()),
            event_types: vec![EventType::ApiKeyCreated, EventType::ApiKeyRevoked],
            enabled: true,
            disabled_at: None,
            disabled_reason: None,
            created_by: me.id.clone(),
            created_at,
            updated_at: created_at,
        }
    );
    let listed: Vec<_> = admin
        .webhooks()
        .list(ListWebhooksInput::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, std::slice::from_ref(&hook));
    let by_id = WebhookIdInput {
        webhook_id: hook.id.clone(),
    };
    assert_eq!(admin.webhooks().get(by_id.clone()).await.unwrap(), hook);

    // A key's creation is an event the endpoint asked for: one delivery, waiting for its first attempt (no
    // dispatcher runs here).
    let key = admin
        .api_keys()
        .create(CreateKeyInput {
            permissions: Some(vec!["webhooks:read".into()]),
            ..CreateKeyInput::new("ci")
        })
        .await
        .unwrap();
    let deliveries: Vec<_> = admin
        .webhooks()
        .deliveries(ListDeliveriesInput::default())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let delivery = deliveries[0].clone();
    assert!(delivery.id.starts_with("whd_"), "{delivery:?}");
    assert!(delivery.event_id.starts_with("msg_"), "{delivery:?}");
    assert_eq!(
        delivery,
        DeliveryDetails {
            id: delivery.id.clone(),
            webhook_id: hook.id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: "api_key.created".into(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(created_at),
            last_status: None,
            last_error: None,
            last_latency_ms: None,
            created_at,
            finished_at: None,
            history: vec![],
        }
    );
    let delivered: Vec<_> = admin
        .webhooks()
        .deliveries(ListDeliveriesInput {
            status: Some(DeliveryStatus::Delivered),
            ..Default::default()
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(delivered.is_empty(), "{delivered:?}");
    // Endpoints belong to the organization: the new workspace key, webhooks:read or not, sees none.
    let e = client(&url, &key.key)
        .webhooks()
        .list(ListWebhooksInput::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (e.code(), e.status()),
        (Some(Code::PermissionDenied), Some(403))
    );

    // A new secret, shown once; only `updated_at` moves.
    s.advance(Duration::from_secs(60));
    let later = Timestamp(created_at.unix() + 60);
    let rotated = admin.webhooks().rotate_secret(by_id.clone()).await.unwrap();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, created.secret);
    let hook = WebhookDetails {
        updated_at: later,
        ..hook
    };
    assert_eq!(rotated.webhook, hook);

    // Disabled by the caller, description cleared: no events are queued for it meanwhile.
    let disabled = admin
        .webhooks()
        .idempotency_key("disable-hook")
        .update(UpdateWebhookInput {
            description: Some(None),
            enabled: Some(false),
            ..UpdateWebhookInput::new(&hook.id)
        })
        .await
        .unwrap();
    let hook = WebhookDetails {
        description: None,
        enabled: false,
        disabled_at: Some(later),
        disabled_reason: Some("disabled by a caller".into()),
        ..hook
    };
    assert_eq!(disabled, hook);
    admin
        .api_keys()
        .revoke(RevokeKeyInput {
            key_id: key.key_details.id.clone(),
        })
        .await
        .unwrap();
    let of_hook = || async {
        admin
            .webhooks()
            .deliveries(ListDeliveriesInput {
                webhook_id: Some(hook.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    };
    assert_eq!(of_hook().await, std::slice::from_ref(&delivery));

    // Sent again: due now.
    let again = admin
        .webhooks()
        .redeliver(RedeliverInput {
            delivery_id: delivery.id.clone(),
        })
        .await
        .unwrap();
    let delivery = DeliveryDetails {
        next_attempt_at: Some(later),
        ..delivery
    };
    assert_eq!(again, delivery);

    // Deleted: answered as it was; its waiting delivery fails.
    assert_eq!(admin.webhooks().delete(by_id.clone()).await.unwrap(), hook);
    let e = admin.webhooks().get(by_id).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));
    assert_eq!(
        of_hook().await,
        [DeliveryDetails {
            status: DeliveryStatus::Failed,
            next_attempt_at: None,
            last_error: Some("the endpoint was deleted".into()),
            finished_at: Some(later),
            ..delivery
        }]
    );
}
