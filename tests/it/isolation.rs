//! Isolation between organizations, workspaces and modes, as a table: every operation, aimed at one
//! workspace's objects, called by principals that must not reach them (another organization, another
//! workspace, the other mode, a disabled or deleted service account, a foreign workspace named in
//! `X-Workspace-ID`). Each call gets its exact status and code, no answer carries an object it must not, and
//! the targeted objects are unchanged afterwards.

use crate::support::{id_of, op_path, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

/// What a call by an outsider gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// 404 `not_found`: the object does not exist for the caller.
    NotFound,
    /// 403 `permission_denied`: the caller may not do this whatever the target.
    Forbidden,
    /// 200 with only what the caller may see: its own objects, or the organization's structure that both
    /// modes share (workspaces, environments, service accounts). Never a hidden object.
    Seen,
}
use Want::{Forbidden as F, NotFound as N, Seen as S};

/// One workspace's objects (the targets) and the outsiders.
struct World {
    admin: String,
    ws_a: String,
    ws_b: String,
    env_a: String,
    sa_a: String,
    key_a: String,
    key_a_id: String,
    key_sa_id: String,
    audit_a: String,
    /// The organization's live webhook endpoint, and a delivery to it.
    webhook: String,
    delivery: String,
    /// Admin key of another organization.
    other_org: String,
    /// Workspace key of workspace B (same organization, live).
    other_workspace: String,
    /// Test-mode workspace key of workspace A.
    test_in_workspace: String,
    /// Test-mode admin key of the organization.
    test_admin: String,
    /// Key of a disabled service account of workspace A.
    disabled_account: String,
    /// Key of a deleted service account of workspace A.
    deleted_account: String,
}

async fn call(s: &TestGateway, token: &str, op: &str, body: &Value) -> Reply {
    s.post(&op_path(op), Some(token), body).await
}

async fn ok(s: &TestGateway, token: &str, op: &str, body: Value) -> Value {
    let reply = call(s, token, op, &body).await;
    assert_eq!(reply.status, 200, "{op} {body}: {}", reply.text());
    reply.json()
}

async fn world(s: &TestGateway) -> World {
    let admin = s.admin_key().to_owned();
    let ws_a = id_of(&ok(s, &admin, "workspaces.create", json!({"name": "A"})).await);
    let ws_b = id_of(&ok(s, &admin, "workspaces.create", json!({"name": "B"})).await);
    let env_a = id_of(
        &ok(
            s,
            &admin,
            "environments.create",
            json!({"name": "production", "workspace_id": ws_a}),
        )
        .await,
    );
    let sa_a = id_of(
        &ok(
            s,
            &admin,
            "service_accounts.create",
            json!({"name": "ci", "workspace_id": ws_a}),
        )
        .await,
    );
    let home = s
        .create(
            &admin,
            json!({"name": "home", "environment_id": env_a, "permissions": ["*"]}),
        )
        .await;
    assert_eq!(home["key_details"]["workspace_id"], json!(ws_a));
    let key_a = home["key"].as_str().unwrap().to_owned();
    let key_a_id = id_of(&home["key_details"]);
    let key_sa_id = id_of(
        &s.create(
            &admin,
            json!({"name": "ci key", "service_account_id": sa_a, "permissions": ["*"]}),
        )
        .await["key_details"],
    );
    // A record in workspace A's live audit log.
    ok(
        s,
        &key_a,
        "api_keys.update",
        json!({"key_id": key_a_id, "description": "home"}),
    )
    .await;
    let audit = s
        .call_ok("audit.list", &key_a, json!({"limit": 1}))
        .await
        .lines();
    let audit_a = id_of(&audit[0]);

    let other_org = s.create_key("evil", &["*"]).await;
    let key = |body: Value| {
        let admin = admin.clone();
        async move {
            s.create(&admin, body).await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let other_workspace =
        key(json!({"name": "b", "workspace_id": ws_b, "permissions": ["*"]})).await;
    let test_in_workspace =
        key(json!({"name": "t", "workspace_id": ws_a, "mode": "test", "permissions": ["*"]})).await;
    let test_admin =
        key(json!({"name": "ta", "key_type": "admin", "mode": "test", "permissions": ["*"]})).await;
    let mut accounts = Vec::new();
    for name in ["disabled", "deleted"] {
        let sa = id_of(
            &ok(
                s,
                &admin,
                "service_accounts.create",
                json!({"name": name, "workspace_id": ws_a}),
            )
            .await,
        );
        let k = key(json!({"name": name, "service_account_id": sa, "permissions": ["*"]})).await;
        accounts.push((sa, k));
    }
    let (disabled_sa, disabled_account) = accounts.remove(0);
    let (deleted_sa, deleted_account) = accounts.remove(0);
    ok(
        s,
        &admin,
        "service_accounts.update",
        json!({"service_account_id": disabled_sa, "disabled": true}),
    )
    .await;
    ok(
        s,
        &admin,
        "service_accounts.delete",
        json!({"service_account_id": deleted_sa}),
    )
    .await;
    // An endpoint of the organization's live events, and a delivery waiting for it (no dispatcher runs here).
    let webhook = id_of(
        &ok(
            s,
            &admin,
            "webhooks.create",
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await["webhook"],
    );
    s.create(&admin, json!({"name": "after the hook"})).await;
    let delivery = id_of(
        &s.call_ok("webhooks.deliveries", &admin, json!({}))
            .await
            .lines()[0],
    );
    World {
        admin,
        ws_a,
        ws_b,
        env_a,
        sa_a,
        key_a,
        key_a_id,
        key_sa_id,
        audit_a,
        webhook,
        delivery,
        other_org,
        other_workspace,
        test_in_workspace,
        test_admin,
        disabled_account,
        deleted_account,
    }
}

/// Every operation aimed at workspace A's live objects, and what each of the four outsiders gets:
/// `[other organization, other workspace, test key of workspace A, test admin key]`. The audit log rows come
/// first, before the outsiders' own refused calls are in their logs.
fn table(w: &World) -> Vec<(&'static str, Value, [Want; 4])> {
    let (ws, env, sa, key) = (&w.ws_a, &w.env_a, &w.sa_a, &w.key_a_id);
    vec![
        ("audit.list", json!({}), [S, S, S, S]),
        ("audit.list", json!({"before": w.audit_a}), [N, N, N, N]),
        ("auth.whoami", json!({}), [S, S, S, S]),
        ("api_keys.get", json!({"key_id": key}), [N, N, N, N]),
        (
            "api_keys.update",
            json!({"key_id": key, "name": "x"}),
            [N, N, N, N],
        ),
        ("api_keys.rotate", json!({"key_id": key}), [N, N, N, N]),
        ("api_keys.revoke", json!({"key_id": key}), [N, N, N, N]),
        ("api_keys.list", json!({"after_id": key}), [N, N, N, N]),
        ("api_keys.list", json!({"before_id": key}), [N, N, N, N]),
        ("api_keys.list", json!({"workspace_id": ws}), [S, S, S, S]),
        (
            "api_keys.list",
            json!({"environment_id": env}),
            [S, S, S, S],
        ),
        (
            "api_keys.list",
            json!({"service_account_id": sa}),
            [S, S, S, S],
        ),
        (
            "api_keys.list",
            json!({"created_by": w.key_a_id}),
            [S, S, S, S],
        ),
        (
            "api_keys.list",
            json!({"include_revoked": true}),
            [S, S, S, S],
        ),
        (
            "api_keys.create",
            json!({"name": "x", "workspace_id": ws}),
            [N, F, S, S],
        ),
        (
            "api_keys.create",
            json!({"name": "x", "environment_id": env}),
            [N, N, S, S],
        ),
        (
            "api_keys.create",
            json!({"name": "x", "service_account_id": sa}),
            [N, N, S, S],
        ),
        (
            "api_keys.create",
            json!({"name": "x", "mode": "live"}),
            [S, S, F, F],
        ),
        ("workspaces.get", json!({"workspace_id": ws}), [N, N, S, S]),
        ("workspaces.list", json!({"after_id": ws}), [N, N, S, S]),
        (
            "workspaces.update",
            json!({"workspace_id": ws, "name": "x"}),
            [N, N, F, F],
        ),
        (
            "workspaces.delete",
            json!({"workspace_id": ws}),
            [N, F, F, F],
        ),
        ("workspaces.create", json!({"name": "x"}), [S, F, F, F]),
        (
            "environments.list",
            json!({"workspace_id": ws}),
            [S, S, S, S],
        ),
        (
            "environments.create",
            json!({"name": "x", "workspace_id": ws}),
            [N, F, F, F],
        ),
        (
            "environments.delete",
            json!({"environment_id": env}),
            [N, N, F, F],
        ),
        (
            "service_accounts.get",
            json!({"service_account_id": sa}),
            [N, N, S, S],
        ),
        (
            "service_accounts.list",
            json!({"workspace_id": ws}),
            [S, S, S, S],
        ),
        (
            "service_accounts.create",
            json!({"name": "x", "workspace_id": ws}),
            [N, F, F, F],
        ),
        (
            "service_accounts.update",
            json!({"service_account_id": sa, "disabled": true}),
            [N, N, F, F],
        ),
        (
            "service_accounts.delete",
            json!({"service_account_id": sa}),
            [N, N, F, F],
        ),
        // Endpoints belong to the organization and a mode: workspace keys are refused whatever the target.
        ("webhooks.list", json!({}), [S, F, F, S]),
        (
            "webhooks.list",
            json!({"after_id": w.webhook}),
            [N, F, F, N],
        ),
        (
            "webhooks.get",
            json!({"webhook_id": w.webhook}),
            [N, F, F, N],
        ),
        (
            "webhooks.update",
            json!({"webhook_id": w.webhook, "enabled": false}),
            [N, F, F, N],
        ),
        (
            "webhooks.rotate_secret",
            json!({"webhook_id": w.webhook}),
            [N, F, F, N],
        ),
        ("webhooks.deliveries", json!({}), [S, F, F, S]),
        (
            "webhooks.deliveries",
            json!({"webhook_id": w.webhook}),
            [S, F, F, S],
        ),
        (
            "webhooks.deliveries",
            json!({"before_id": w.delivery}),
            [N, F, F, N],
        ),
        (
            "webhooks.redeliver",
            json!({"delivery_id": w.delivery}),
            [N, F, F, N],
        ),
        (
            "webhooks.delete",
            json!({"webhook_id": w.webhook}),
            [N, F, F, N],
        ),
        (
            "webhooks.create",
            json!({"url": "http://127.0.0.1:9/x"}),
            [S, F, F, S],
        ),
    ]
}

/// Checks one outsider's answer: its exact status and code, and for a 200 that no hidden id is in it.
fn check(label: &str, reply: &Reply, want: Want, hidden: &[&str]) {
    match want {
        Want::NotFound => {
            reply.error(404, "not_found");
        }
        Want::Forbidden => {
            reply.error(403, "permission_denied");
        }
        Want::Seen => {
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let text = reply.text();
            for id in hidden {
                assert!(!text.contains(id), "{label}: leaks {id}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn no_operation_reaches_across_organizations_workspaces_or_modes() {
    let s = TestGateway::start().await;
    let w = world(&s).await;
    let rows = table(&w);
    let names = s.data().registry().unwrap();
    // Every registered operation is in the table.
    for entry in names.entries() {
        assert!(
            rows.iter().any(|(op, _, _)| *op == entry.meta.id),
            "{} is missing from the isolation table",
            entry.meta.id
        );
    }
    // Everything of workspace A is hidden from another organization and another workspace; its live keys and
    // live audit records from the test mode.
    let everything = [
        w.ws_a.as_str(),
        &w.env_a,
        &w.sa_a,
        &w.key_a_id,
        &w.key_sa_id,
        &w.audit_a,
        &w.webhook,
        &w.delivery,
    ];
    let live_only = [
        w.key_a_id.as_str(),
        &w.key_sa_id,
        &w.audit_a,
        &w.webhook,
        &w.delivery,
    ];
    let outsiders: [(&str, &str, &[&str]); 4] = [
        ("other organization", &w.other_org, &everything),
        ("other workspace", &w.other_workspace, &everything),
        (
            "test key of the workspace",
            &w.test_in_workspace,
            &live_only,
        ),
        ("test admin key", &w.test_admin, &live_only),
    ];
    let mut cases = 0;
    for (op, body, wants) in &rows {
        for ((who, token, hidden), want) in outsiders.iter().zip(wants) {
            let reply = call(&s, token, op, body).await;
            check(&format!("{who}: {op} {body}"), &reply, *want, hidden);
            cases += 1;
        }
        // The same call from a foreign workspace named in the header, or from a dead service account.
        let named = |token: &str| {
            s.request(Method::POST, &op_path(op), Some(token))
                .header("x-workspace-id", &w.ws_a)
                .json(body)
                .send()
        };
        named(&w.other_workspace).await.error_with(
            403,
            "permission_denied",
            &["confined to workspace"],
        );
        named(&w.other_org)
            .await
            .error_with(404, "not_found", &["X-Workspace-ID: no workspace"]);
        call(&s, &w.disabled_account, op, body).await.error_with(
            401,
            "unauthenticated",
            &["service account is disabled or deleted"],
        );
        call(&s, &w.deleted_account, op, body).await.error_with(
            401,
            "unauthenticated",
            &["revoked"],
        );
        cases += 4;
    }
    eprintln!(
        "isolation table: {} rows x 8 outsiders = {cases} calls",
        rows.len()
    );
    assert_eq!(cases, rows.len() * 8);

    // Workspace A is as it was: its key works and is unchanged, its structure is all there.
    let me = ok(&s, &w.key_a, "auth.whoami", json!({})).await;
    assert_eq!(me["workspace_id"], json!(w.ws_a));
    let key = ok(&s, &w.admin, "api_keys.get", json!({"key_id": w.key_a_id})).await;
    assert_eq!(
        (&key["name"], &key["status"], &key["description"]),
        (&json!("home"), &json!("active"), &json!("home"))
    );
    let ws = ok(
        &s,
        &w.admin,
        "workspaces.get",
        json!({"workspace_id": w.ws_a}),
    )
    .await;
    assert_eq!(ws["name"], "A");
    let sa = ok(
        &s,
        &w.admin,
        "service_accounts.get",
        json!({"service_account_id": w.sa_a}),
    )
    .await;
    assert_eq!(
        (&sa["name"], &sa["is_active"]),
        (&json!("ci"), &json!(true))
    );
    let envs = s
        .call_ok(
            "environments.list",
            &w.admin,
            json!({"workspace_id": w.ws_a}),
        )
        .await
        .lines();
    assert_eq!(envs.len(), 1);
    assert_eq!(id_of(&envs[0]), w.env_a);

    // The organization's endpoint is as it was.
    let hook = ok(
        &s,
        &w.admin,
        "webhooks.get",
        json!({"webhook_id": w.webhook}),
    )
    .await;
    assert_eq!(
        (&hook["enabled"], &hook["url"]),
        (&json!(true), &json!("http://127.0.0.1:9/hook"))
    );

    // Workspace A's live audit log holds none of the outsiders' calls.
    let mut ids = Vec::new();
    for token in [&w.other_workspace, &w.test_in_workspace, &w.test_admin] {
        let me = ok(&s, token, "auth.whoami", json!({})).await;
        ids.push(me["id"].as_str().unwrap().to_owned());
    }
    let other = ok(&s, &w.other_workspace, "auth.whoami", json!({})).await;
    assert_eq!(other["workspace_id"], json!(w.ws_b));
    let log = s
        .call_ok("audit.list", &w.key_a, json!({"limit": 1000}))
        .await
        .lines();
    assert!(!log.is_empty());
    for record in &log {
        assert_eq!(
            (&record["workspace_id"], &record["mode"]),
            (&json!(w.ws_a), &json!("live")),
            "{record}"
        );
        assert!(
            !ids.contains(&record["principal_id"].as_str().unwrap().to_owned()),
            "an outsider's call in workspace A's log: {record}"
        );
    }
    // The test mode's log is its own: the test key of workspace A sees only test records of workspace A.
    let test_log = s
        .call_ok("audit.list", &w.test_in_workspace, json!({"limit": 1000}))
        .await
        .lines();
    assert!(!test_log.is_empty());
    for record in &test_log {
        assert_eq!(
            (&record["workspace_id"], &record["mode"]),
            (&json!(w.ws_a), &json!("test")),
            "{record}"
        );
    }
}
