//! Workspaces, environments, live/test mode and service accounts, as a user meets them: the default
//! workspace, `X-Workspace-ID`, test keys, key types, service accounts that stop their keys, the list
//! filters, and a data directory from before tenancy that keeps working.

use crate::support::{id_of, op_path, Reply, TestGateway, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

async fn call(s: &TestGateway, token: &str, op: &str, body: Value) -> Reply {
    s.post(&op_path(op), Some(token), &body).await
}

async fn ok(s: &TestGateway, token: &str, op: &str, body: Value) -> Value {
    let reply = call(s, token, op, body.clone()).await;
    assert_eq!(reply.status, 200, "{op} {body}: {}", reply.text());
    reply.json()
}

async fn in_workspace(s: &TestGateway, token: &str, ws: &str, op: &str, body: Value) -> Reply {
    s.request(Method::POST, &op_path(op), Some(token))
        .header("x-workspace-id", ws)
        .json(&body)
        .send()
        .await
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

#[tokio::test]
async fn keys_land_in_the_default_workspace_unless_one_is_named() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    // The bootstrap key is a live, organization-wide admin key.
    let me = ok(&s, &admin, "auth.whoami", json!({})).await;
    assert_eq!(
        (
            &me["key_type"],
            &me["mode"],
            &me["livemode"],
            &me["workspace_id"]
        ),
        (&json!("admin"), &json!("live"), &json!(true), &Value::Null)
    );
    // A key made without a workspace is a workspace key of the default workspace, made on first need.
    let out = s.create(&admin, json!({"name": "first"})).await;
    let details = &out["key_details"];
    let workspaces = s
        .call_ok("workspaces.list", &admin, json!({}))
        .await
        .lines();
    assert_eq!(workspaces.len(), 1);
    let default = &workspaces[0];
    assert_eq!(
        (&default["name"], &default["is_default"], &default["org_id"]),
        (&json!("Default"), &json!(true), &json!("default"))
    );
    assert_eq!(details["workspace_id"], default["id"]);
    assert_eq!(
        (
            &details["key_type"],
            &details["mode"],
            &details["livemode"],
            &details["is_active"],
            &details["environment_id"],
            &details["service_account_id"],
        ),
        (
            &json!("workspace"),
            &json!("live"),
            &json!(true),
            &json!(true),
            &Value::Null,
            &Value::Null
        )
    );
    // The default workspace cannot be deleted.
    call(
        &s,
        &admin,
        "workspaces.delete",
        json!({"workspace_id": default["id"]}),
    )
    .await
    .error_with(
        409,
        "conflict",
        &["the default workspace cannot be deleted"],
    );

    // X-Workspace-ID puts the admin's call in a workspace: its keys go there and it sees only them.
    let ws = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "Payments"})).await);
    let made = in_workspace(&s, &admin, &ws, "api_keys.create", json!({"name": "pay"})).await;
    assert_eq!(made.status, 200, "{}", made.text());
    let pay = made.json();
    assert_eq!(pay["key_details"]["workspace_id"], json!(ws));
    let listed = in_workspace(&s, &admin, &ws, "api_keys.list", json!({})).await;
    assert_eq!(ids(&listed.lines()), [id_of(&pay["key_details"])]);
    // Without the header the admin sees every workspace's keys and its own admin key.
    assert_eq!(s.list(&admin, json!({})).await.len(), 3);
    // The header must name a workspace of the caller's organization, well formed.
    in_workspace(&s, &admin, "ws_nope", "api_keys.list", json!({}))
        .await
        .error_with(
            400,
            "invalid_argument",
            &["X-Workspace-ID: must be a workspace id"],
        );
    let other = s.create_key("acme", &["*"]).await;
    in_workspace(&s, &other, &ws, "api_keys.list", json!({}))
        .await
        .error_with(404, "not_found", &[&format!("no workspace `{ws}`")]);
    // A body naming another workspace than the header is refused.
    let default_id = default["id"].as_str().unwrap();
    in_workspace(
        &s,
        &admin,
        &ws,
        "api_keys.create",
        json!({"name": "x", "workspace_id": default_id}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["X-Workspace-ID confines the call to workspace"],
    );
}

#[tokio::test]
async fn a_workspace_key_is_confined_to_its_workspace() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let a = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let b = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "B"})).await);
    let out = s
        .create(
            &admin,
            json!({"name": "a", "workspace_id": a, "permissions": ["*"]}),
        )
        .await;
    let key = out["key"].as_str().unwrap().to_owned();
    let me = ok(&s, &key, "auth.whoami", json!({})).await;
    assert_eq!(
        (&me["workspace_id"], &me["key_type"]),
        (&json!(a), &json!("workspace"))
    );
    // Naming its own workspace is fine; another is 403, whatever the operation.
    assert_eq!(
        in_workspace(&s, &key, &a, "auth.whoami", json!({}))
            .await
            .status,
        200
    );
    in_workspace(&s, &key, &b, "auth.whoami", json!({}))
        .await
        .error_with(
            403,
            "permission_denied",
            &[&format!("confined to workspace `{a}`")],
        );
    // Its keys go to its workspace; it cannot make admin keys, nor keys elsewhere.
    let child = s.create(&key, json!({"name": "child"})).await;
    assert_eq!(child["key_details"]["workspace_id"], json!(a));
    call(
        &s,
        &key,
        "api_keys.create",
        json!({"name": "x", "key_type": "admin"}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["key_type: only an organization-wide caller"],
    );
    call(
        &s,
        &key,
        "api_keys.create",
        json!({"name": "x", "workspace_id": b}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["workspace_id: this key is confined"],
    );
    // It sees its workspace only: not the admin key, not the other workspaces.
    let listed = s.list_ids(&key, json!({"include_revoked": true})).await;
    assert_eq!(
        listed,
        [id_of(&out["key_details"]), id_of(&child["key_details"])]
    );
    let spaces = s.call_ok("workspaces.list", &key, json!({})).await.lines();
    assert_eq!(ids(&spaces), std::slice::from_ref(&a));
    // Workspaces are made and deleted by organization-wide callers.
    call(&s, &key, "workspaces.create", json!({"name": "C"}))
        .await
        .error_with(403, "permission_denied", &["organization-wide caller"]);
    // An admin key belongs to no workspace, so it takes none of the workspace fields.
    call(
        &s,
        &admin,
        "api_keys.create",
        json!({"name": "x", "key_type": "admin", "workspace_id": a}),
    )
    .await
    .error_with(
        400,
        "invalid_argument",
        &["workspace_id: an admin key is organization-wide"],
    );
    let org_key = s
        .create(&admin, json!({"name": "org", "key_type": "admin"}))
        .await;
    assert_eq!(
        (
            &org_key["key_details"]["key_type"],
            &org_key["key_details"]["workspace_id"]
        ),
        (&json!("admin"), &Value::Null)
    );
}

#[tokio::test]
async fn test_keys_see_and_make_test_objects_only() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let out = s
        .create(
            &admin,
            json!({"name": "sandbox", "mode": "test", "permissions": ["*"]}),
        )
        .await;
    let test = out["key"].as_str().unwrap().to_owned();
    // Recognisable from its text: `opg_test_`, 32 random characters and a 6-character checksum.
    assert!(test.starts_with("opg_test_"), "{test}");
    assert_eq!(test.len(), "opg_test_".len() + 32 + 6);
    assert_eq!(out["key_details"]["key_prefix"], json!(&test[..12]));
    assert_eq!(
        (&out["key_details"]["mode"], &out["key_details"]["livemode"]),
        (&json!("test"), &json!(false))
    );
    let me = ok(&s, &test, "auth.whoami", json!({})).await;
    assert_eq!(
        (&me["mode"], &me["livemode"]),
        (&json!("test"), &json!(false))
    );
    // A test key stripped or dressed up to pass for another fails its checksum or its shape.
    let stripped = format!("opg_{}", &test["opg_test_".len()..]);
    call(&s, &stripped, "auth.whoami", json!({}))
        .await
        .error(401, "unauthenticated");

    // Its keys are test keys; a live one it may not make.
    let child = s.create(&test, json!({"name": "child"})).await;
    assert!(child["key"].as_str().unwrap().starts_with("opg_test_"));
    call(
        &s,
        &test,
        "api_keys.create",
        json!({"name": "x", "mode": "live"}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["mode: a test-mode caller cannot create a live key"],
    );
    // It lists test keys only; the live admin lists live keys only.
    let test_ids = s.list_ids(&test, json!({})).await;
    assert_eq!(
        test_ids,
        [id_of(&out["key_details"]), id_of(&child["key_details"])]
    );
    let live_ids = s.list_ids(&admin, json!({})).await;
    assert!(live_ids.iter().all(|id| !test_ids.contains(id)));
    // The structure is shared and read-only in test mode.
    let spaces = s.call_ok("workspaces.list", &test, json!({})).await.lines();
    assert_eq!(spaces.len(), 1);
    call(&s, &test, "workspaces.create", json!({"name": "x"}))
        .await
        .error_with(403, "permission_denied", &["live-mode credential"]);
    // Audit records carry the mode, and each mode reads its own.
    let test_log = s.call_ok("audit.list", &test, json!({})).await.lines();
    assert!(!test_log.is_empty());
    assert!(test_log.iter().all(|r| r["mode"] == "test"), "{test_log:?}");
    let live_log = s.call_ok("audit.list", &admin, json!({})).await.lines();
    assert!(live_log.iter().all(|r| r["mode"] == "live"), "{live_log:?}");
    // A test-mode session works the same way.
    let session = s.mint_session_mode("default", "tess", &["*"], opgate::core::Mode::Test);
    let me = ok(&s, &session, "auth.whoami", json!({})).await;
    assert_eq!(
        (&me["mode"], &me["key_type"]),
        (&json!("test"), &Value::Null)
    );
    assert_eq!(s.list_ids(&session, json!({})).await, test_ids);
}

#[tokio::test]
async fn a_service_accounts_keys_stop_when_it_is_disabled_or_deleted() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let admin_id = ok(&s, &admin, "auth.whoami", json!({})).await["id"].clone();
    let sa = ok(
        &s,
        &admin,
        "service_accounts.create",
        json!({"name": "deploy-bot", "description": "CI"}),
    )
    .await;
    let sa_id = id_of(&sa);
    assert_eq!(
        (&sa["is_active"], &sa["created_by"], &sa["disabled_at"]),
        (&json!(true), &admin_id, &Value::Null)
    );
    let out = s
        .create(
            &admin,
            json!({"name": "bot", "service_account_id": sa_id, "permissions": ["api_keys:read"]}),
        )
        .await;
    let key = out["key"].as_str().unwrap().to_owned();
    let key_id = id_of(&out["key_details"]);
    // The key belongs to the account; `created_by` stays the person who made it.
    assert_eq!(out["key_details"]["service_account_id"], json!(sa_id));
    assert_eq!(out["key_details"]["workspace_id"], sa["workspace_id"]);
    assert_eq!(out["key_details"]["created_by"], admin_id);
    let me = ok(&s, &key, "auth.whoami", json!({})).await;
    assert_eq!(me["service_account_id"], json!(sa_id));
    assert_eq!(
        s.list_ids(&admin, json!({"service_account_id": sa_id}))
            .await,
        std::slice::from_ref(&key_id)
    );

    // Disabled: the very next request fails (the key was cached by the call above).
    let disabled = ok(
        &s,
        &admin,
        "service_accounts.update",
        json!({"service_account_id": sa_id, "disabled": true}),
    )
    .await;
    assert_eq!(disabled["is_active"], json!(false));
    assert!(disabled["disabled_at"].is_string());
    call(&s, &key, "auth.whoami", json!({})).await.error_with(
        401,
        "unauthenticated",
        &["service account is disabled or deleted"],
    );
    assert_eq!(s.get(&admin, &key_id).await["is_active"], json!(false));
    call(
        &s,
        &admin,
        "api_keys.create",
        json!({"name": "x", "service_account_id": sa_id}),
    )
    .await
    .error_with(409, "conflict", &["is disabled"]);
    call(&s, &admin, "api_keys.rotate", json!({"key_id": key_id}))
        .await
        .error_with(409, "conflict", &["service account is disabled"]);
    // Enabled again: the key works again.
    ok(
        &s,
        &admin,
        "service_accounts.update",
        json!({"service_account_id": sa_id, "disabled": false}),
    )
    .await;
    ok(&s, &key, "auth.whoami", json!({})).await;

    // Deleting the account revokes its keys in the same step.
    let gone = ok(
        &s,
        &admin,
        "service_accounts.delete",
        json!({"service_account_id": sa_id}),
    )
    .await;
    assert_eq!(
        (&gone["revoked_keys"], &gone["service_account"]["id"]),
        (&json!(1), &json!(sa_id))
    );
    call(&s, &key, "auth.whoami", json!({}))
        .await
        .error_with(401, "unauthenticated", &["revoked"]);
    assert_eq!(s.get(&admin, &key_id).await["status"], json!("revoked"));
    call(
        &s,
        &admin,
        "service_accounts.get",
        json!({"service_account_id": sa_id}),
    )
    .await
    .error(404, "not_found");
}

#[tokio::test]
async fn environments_are_unique_per_workspace_and_hold_while_keys_use_them() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let ws = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let env = ok(
        &s,
        &admin,
        "environments.create",
        json!({"name": "production", "workspace_id": ws}),
    )
    .await;
    assert_eq!(
        (&env["name"], &env["workspace_id"]),
        (&json!("production"), &json!(ws))
    );
    call(
        &s,
        &admin,
        "environments.create",
        json!({"name": "production", "workspace_id": ws}),
    )
    .await
    .error_with(
        409,
        "conflict",
        &["already has an environment named `production`"],
    );
    // The same name in another workspace is another environment.
    ok(
        &s,
        &admin,
        "environments.create",
        json!({"name": "production"}),
    )
    .await;
    call(&s, &admin, "environments.create", json!({"name": "Prod"}))
        .await
        .error_with(400, "invalid_argument", &["name: must be 1-63 lowercase"]);

    // A key bound to it: the environment, and then its workspace, are held while the key is active.
    let env_id = id_of(&env);
    let out = s
        .create(&admin, json!({"name": "k", "environment_id": env_id}))
        .await;
    assert_eq!(
        (
            &out["key_details"]["environment_id"],
            &out["key_details"]["workspace_id"]
        ),
        (&json!(env_id), &json!(ws))
    );
    assert_eq!(
        s.list_ids(&admin, json!({"environment_id": env_id})).await,
        [id_of(&out["key_details"])]
    );
    call(
        &s,
        &admin,
        "environments.delete",
        json!({"environment_id": env_id}),
    )
    .await
    .error_with(
        409,
        "conflict",
        &["active API keys (of either mode) bound to it"],
    );
    call(&s, &admin, "workspaces.delete", json!({"workspace_id": ws}))
        .await
        .error_with(409, "conflict", &["still has active API keys"]);
    s.revoke(&admin, &id_of(&out["key_details"])).await;
    let deleted = ok(&s, &admin, "workspaces.delete", json!({"workspace_id": ws})).await;
    assert_eq!(deleted["id"], json!(ws));
    // Its environments went with it.
    let envs = s
        .call_ok("environments.list", &admin, json!({"workspace_id": ws}))
        .await
        .lines();
    assert!(envs.is_empty(), "{envs:?}");
}

#[tokio::test]
async fn list_filters_and_cursors_both_ways() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let ws = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let maker = s
        .create(
            &admin,
            json!({"name": "maker", "workspace_id": ws, "permissions": ["api_keys:*"]}),
        )
        .await;
    let maker_key = maker["key"].as_str().unwrap().to_owned();
    let maker_id = id_of(&maker["key_details"]);
    let mut made = Vec::new();
    for i in 0..4 {
        made.push(id_of(
            &s.create(&maker_key, json!({"name": format!("k{i}")})).await["key_details"],
        ));
    }
    assert_eq!(
        s.list_ids(&admin, json!({"created_by": maker_id})).await,
        made
    );
    assert_eq!(
        s.list_ids(&admin, json!({"workspace_id": ws, "before_id": made[2]}))
            .await,
        [maker_id.clone(), made[0].clone(), made[1].clone()]
    );
    assert_eq!(
        s.list_ids(
            &admin,
            json!({"workspace_id": ws, "after_id": made[0], "before_id": made[3]})
        )
        .await,
        [made[1].clone(), made[2].clone()]
    );
    assert_eq!(
        s.list_ids(
            &admin,
            json!({"created_by": maker_id, "limit": 1, "after_id": made[1]})
        )
        .await,
        [made[2].clone()]
    );
    call(
        &s,
        &admin,
        "api_keys.list",
        json!({"before_id": "key_01jf3m8v6k2x9q4w7e5r1t0y8z"}),
    )
    .await
    .error_with(404, "not_found", &["before_id: no API key"]);
}

#[tokio::test]
async fn one_idempotency_key_in_two_workspaces_is_two_requests() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let a = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let b = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "B"})).await);
    let send = |ws: String| {
        s.request(
            Method::POST,
            &op_path("service_accounts.create"),
            Some(&admin),
        )
        .header("x-workspace-id", ws)
        .header("idempotency-key", "same-key")
        .json(&json!({"name": "bot"}))
        .send()
    };
    let first = send(a.clone()).await;
    assert_eq!(first.json()["workspace_id"], json!(a));
    let replay = send(a.clone()).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);
    send(b)
        .await
        .error_with(422, "idempotency_mismatch", &["Idempotency-Key"]);
}

/// A data directory made by the release before tenancy (schema 4), rebuilt from its SQL dump with its secret:
/// the current binary migrates it, and every key works as before, now a live admin key.
#[tokio::test]
async fn a_data_dir_from_before_tenancy_opens_and_its_keys_work_unchanged() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/it/fixtures/pre-tenancy.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("opgate.db")).unwrap();
        let sql: Vec<&str> = fixture["sql"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        conn.execute_batch(&sql.join("\n")).unwrap();
        let version = fixture["user_version"].as_i64().unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }
    let secret_path = dir.path().join("secret");
    std::fs::write(&secret_path, fixture["secret"].as_str().unwrap()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let server = TestServer::start_existing(dir.path(), &[], &[]);
    let keys = &fixture["keys"];
    let admin = keys["admin"].as_str().unwrap();
    // Each key works with the permissions and organization it had; all are live admin keys now.
    for (name, org, permission) in [
        ("admin", "default", "*"),
        ("reader", "default", "api_keys:read"),
        ("acme_ci", "default", "api_keys:*"),
    ] {
        let token = keys[name].as_str().unwrap();
        let me = server.call_ok("auth.whoami", token, json!({})).await.json();
        assert_eq!(
            (
                &me["org"],
                &me["mode"],
                &me["key_type"],
                &me["workspace_id"]
            ),
            (&json!(org), &json!("live"), &json!("admin"), &Value::Null),
            "{name}"
        );
        assert!(
            me["permissions"]
                .as_array()
                .unwrap()
                .contains(&json!(permission)),
            "{name}: {me}"
        );
    }
    let reader_id = fixture["ids"]["reader"].as_str().unwrap();
    let reader = server
        .call_ok("api_keys.get", admin, json!({"key_id": reader_id}))
        .await
        .json();
    assert_eq!(
        (
            &reader["key_type"],
            &reader["mode"],
            &reader["workspace_id"],
            &reader["is_active"],
            &reader["service_account_id"],
        ),
        (
            &json!("admin"),
            &json!("live"),
            &Value::Null,
            &json!(true),
            &Value::Null
        )
    );
    // The old audit log reads on, as live records of no workspace.
    let log = server
        .call_ok("audit.list", admin, json!({"limit": 1000}))
        .await
        .lines();
    assert!(!log.is_empty());
    assert!(log
        .iter()
        .all(|r| r["mode"] == "live" && r["workspace_id"].is_null()));
    // The organization gets its default workspace on first need, and new keys go there.
    let made = server
        .call_ok("api_keys.create", admin, json!({"name": "new"}))
        .await
        .json();
    let spaces = server
        .call_ok("workspaces.list", admin, json!({}))
        .await
        .lines();
    assert_eq!(spaces.len(), 1);
    assert_eq!(made["key_details"]["workspace_id"], spaces[0]["id"]);
    // The reader key still cannot write.
    server
        .post(
            &op_path("api_keys.create"),
            Some(keys["reader"].as_str().unwrap()),
            &json!({"name": "x"}),
        )
        .await
        .error(403, "permission_denied");
}

/// A narrow key can neither lock out nor revive a service account whose keys are stronger than it.
#[tokio::test]
async fn a_narrow_key_cannot_disable_revive_or_delete_a_stronger_service_account() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let sa = id_of(
        &ok(
            &s,
            &admin,
            "service_accounts.create",
            json!({"name": "deploy"}),
        )
        .await,
    );
    let strong = s
        .create(
            &admin,
            json!({"name": "deploy", "service_account_id": sa, "permissions": ["*"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let narrow = s
        .create(
            &admin,
            json!({"name": "sa-ops", "permissions": ["service_accounts:write"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let beyond = "a key of the account holds `*`, beyond the caller's own permissions";
    for disabled in [true, false] {
        call(
            &s,
            &narrow,
            "service_accounts.update",
            json!({"service_account_id": sa, "disabled": disabled}),
        )
        .await
        .error_with(403, "permission_denied", &[beyond]);
    }
    // An admin disables it; the narrow key cannot bring it back, nor delete it.
    ok(
        &s,
        &admin,
        "service_accounts.update",
        json!({"service_account_id": sa, "disabled": true}),
    )
    .await;
    call(
        &s,
        &narrow,
        "service_accounts.update",
        json!({"service_account_id": sa, "disabled": false}),
    )
    .await
    .error_with(403, "permission_denied", &[beyond]);
    call(&s, &strong, "auth.whoami", json!({}))
        .await
        .error(401, "unauthenticated");
    call(
        &s,
        &narrow,
        "service_accounts.delete",
        json!({"service_account_id": sa}),
    )
    .await
    .error_with(403, "permission_denied", &[beyond]);
    // Renaming stops or starts nothing: allowed.
    let renamed = ok(
        &s,
        &narrow,
        "service_accounts.update",
        json!({"service_account_id": sa, "name": "deploy-bot"}),
    )
    .await;
    assert_eq!(renamed["name"], "deploy-bot");
}

/// A service account's key makes keys of its own account only, and rotates only those: nothing it makes
/// outlives the account's kill switch. An environment-bound key passes its environment on the same way.
#[tokio::test]
async fn a_service_accounts_key_cannot_mint_its_way_past_the_kill_switch() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let sa = id_of(&ok(&s, &admin, "service_accounts.create", json!({"name": "ci"})).await);
    let other = id_of(
        &ok(
            &s,
            &admin,
            "service_accounts.create",
            json!({"name": "other"}),
        )
        .await,
    );
    let bot = s
        .create(
            &admin,
            json!({"name": "ci", "service_account_id": sa, "permissions": ["api_keys:write"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = s.create(&bot, json!({"name": "child"})).await;
    assert_eq!(child["key_details"]["service_account_id"], json!(sa));
    call(
        &s,
        &bot,
        "api_keys.create",
        json!({"name": "x", "service_account_id": other}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["this key belongs to service account"],
    );
    // Another key of the workspace, not the account's: the bot may not take its secret by rotating it.
    let plain = s
        .create(
            &admin,
            json!({"name": "plain", "permissions": ["api_keys:read"]}),
        )
        .await;
    call(
        &s,
        &bot,
        "api_keys.rotate",
        json!({"key_id": id_of(&plain["key_details"])}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["gets secrets only of keys of it"],
    );
    // Disabling the account stops the child too.
    let child_key = child["key"].as_str().unwrap();
    ok(&s, child_key, "auth.whoami", json!({})).await;
    ok(
        &s,
        &admin,
        "service_accounts.update",
        json!({"service_account_id": sa, "disabled": true}),
    )
    .await;
    call(&s, child_key, "auth.whoami", json!({}))
        .await
        .error(401, "unauthenticated");

    // Environments pass on the same way.
    let prod = id_of(
        &ok(
            &s,
            &admin,
            "environments.create",
            json!({"name": "production"}),
        )
        .await,
    );
    let staging = id_of(
        &ok(
            &s,
            &admin,
            "environments.create",
            json!({"name": "staging"}),
        )
        .await,
    );
    let prod_key = s
        .create(
            &admin,
            json!({"name": "p", "environment_id": prod, "permissions": ["api_keys:write"]}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = s.create(&prod_key, json!({"name": "p2"})).await;
    assert_eq!(made["key_details"]["environment_id"], json!(prod));
    call(
        &s,
        &prod_key,
        "api_keys.create",
        json!({"name": "x", "environment_id": staging}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["this key belongs to environment"],
    );
}

/// Organization-wide changes are not made from inside a workspace, the header is given once, and refusals
/// are tallied per workspace so that each workspace's log holds its own.
#[tokio::test]
async fn the_workspace_header_is_one_workspace_for_everything_the_call_does() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let a = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let b = id_of(&ok(&s, &admin, "workspaces.create", json!({"name": "B"})).await);
    in_workspace(
        &s,
        &admin,
        &a,
        "api_keys.create",
        json!({"name": "x", "key_type": "admin"}),
    )
    .await
    .error_with(
        403,
        "permission_denied",
        &["an admin key is organization-wide, but X-Workspace-ID"],
    );
    in_workspace(&s, &admin, &a, "workspaces.create", json!({"name": "x"}))
        .await
        .error_with(403, "permission_denied", &["an organization-wide change"]);
    let twice = s
        .request(Method::POST, &op_path("auth.whoami"), Some(&admin))
        .header("x-workspace-id", &b)
        .header("x-workspace-id", &a)
        .json(&json!({}))
        .send()
        .await;
    twice.error_with(
        400,
        "invalid_argument",
        &["X-Workspace-ID: give the header once"],
    );

    // Five refused calls in B and one in A within one interval: B's log says 5, A's says 1.
    for ws in [&b, &b, &b, &b, &b, &a] {
        in_workspace(
            &s,
            &admin,
            ws,
            "service_accounts.create",
            json!({"name": ""}),
        )
        .await
        .error(400, "invalid_argument");
    }
    s.flush_refusals().await;
    for (ws, count) in [(&a, 1), (&b, 5)] {
        let reader = s
            .create(
                &admin,
                json!({"name": "auditor", "workspace_id": ws, "permissions": ["audit:read"]}),
            )
            .await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let log = s
            .call_ok(
                "audit.list",
                &reader,
                json!({"operation": "service_accounts.create"}),
            )
            .await
            .lines();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(
            (&log[0]["workspace_id"], &log[0]["count"], &log[0]["status"]),
            (&json!(ws), &json!(count), &json!(400))
        );
    }
}
