//! `GET /docs` and `GET /openapi.json`: served without a token, describing exactly the operations this gateway
//! serves, the page locked to its own origin by its Content-Security-Policy; `--docs off` turns both off. And
//! the examples the page pre-fills work when tried as they are. (The page in a real browser: tests/browser.)

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{op_path, TestGateway};

#[tokio::test]
async fn the_page_and_the_spec_are_served_without_a_token() {
    let s = TestGateway::start().await;
    let page = s.request(Method::GET, "/docs", None).send().await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(
        csp.contains("; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let html = page.text();
    assert!(html.contains("<title>opgate · API reference</title>"));
    for outside in ["http://", "https://", "//cdn", "@import", "fonts."] {
        assert!(
            !html.contains(outside),
            "the page names nothing outside the gateway: found {outside:?}"
        );
    }

    let spec = s.request(Method::GET, "/openapi.json", None).send().await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.header("content-type"), Some("application/json"));
    let served = spec.json();
    let committed = opgate::openapi().unwrap();
    assert_eq!(served, opgate::spec::page::served_spec(&committed));
    assert_eq!(
        served["servers"],
        json!([{"url": "/", "description": "This gateway."}])
    );
    let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().all(|p| p.starts_with("/v1/op/")), "{paths:?}");
    assert_eq!(
        paths.len(),
        committed["paths"].as_object().unwrap().len() / 2,
        "each operation once, its alias left out"
    );

    // GET or HEAD only, as the other service endpoints.
    let post = s.post("/docs", None, &json!({})).await;
    post.error_with(405, "method_not_allowed", &["use GET for /docs"]);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn docs_off_serves_neither() {
    let s = TestGateway::start_with(|setup| setup.docs = false).await;
    for path in ["/docs", "/openapi.json"] {
        let r = s.request(Method::GET, path, None).send().await;
        r.error_with(404, "not_found", &[&format!("no route for {path}")]);
    }
}

/// The ids an example names exist in no fresh gateway; an operation that needs one is tried from the page
/// with an id a previous answer links to (`links` in the spec, buttons on the page). Every other example is
/// a call that works as it is.
#[tokio::test]
async fn every_example_works_as_it_is_unless_it_must_name_an_object() {
    let s = TestGateway::start().await;
    let admin = s.admin_key().to_owned();
    let spec = s
        .request(Method::GET, "/openapi.json", None)
        .send()
        .await
        .json();
    let schemas = &spec["components"]["schemas"];
    let mut tried = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        let op = &item["post"];
        let id = op["operationId"].as_str().unwrap();
        let content = &op["requestBody"]["content"]["application/json"];
        let example = content["example"].clone();
        let schema = content["schema"]["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .map_or(&Value::Null, |name| &schemas[name]);
        let needs_an_object = schema["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f.as_str().unwrap().ends_with("_id")));
        if needs_an_object {
            continue;
        }
        assert_eq!(path, &op_path(id));
        let r = s.post(path, Some(&admin), &example).await;
        assert_eq!(r.status, 200, "{id} {example}: {}", r.text());
        tried.push(id.to_owned());
    }
    assert_eq!(
        tried,
        [
            "api_keys.create",
            "api_keys.list",
            "audit.list",
            "auth.whoami",
            "environments.create",
            "environments.list",
            "service_accounts.create",
            "service_accounts.list",
            "webhooks.create",
            "webhooks.deliveries",
            "webhooks.list",
            "workspaces.create",
            "workspaces.list",
        ]
    );
}
