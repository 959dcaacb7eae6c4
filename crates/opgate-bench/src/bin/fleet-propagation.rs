//! Measures how long a key revoked through one gateway instance keeps working on another: creates N keys
//! through instance A, uses each once on instance B (so B has it cached), then revokes them one at a time
//! through A and polls B with the key until B refuses it. Prints the distribution as one JSON line.
//!
//! Usage: `fleet-propagation URL_A URL_B ADMIN_KEY [COUNT]`
//!
//! The clock starts when A has acknowledged the revoke (its response has arrived), so the figure is the window
//! in which a caller could still use a key its owner has been told is revoked.

use std::time::{Duration, Instant};

use opgate_client::{Client, Reply};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fleet-propagation <url-a> <url-b> <admin-key> [count]");
        std::process::exit(2);
    }
    let count: usize = args.get(4).map_or(1000, |c| c.parse().expect("a count"));
    let a = Client::new(&args[1]).expect("url a").with_token(&args[3]);
    let b = Client::new(&args[2]).expect("url b");

    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let Reply::Json(created) = a
            .call(
                "api_keys.create",
                json!({ "name": format!("propagation {i}"), "permissions": ["api_keys:read"] }),
            )
            .await
            .expect("create a key through A")
        else {
            panic!("api_keys.create answers one object");
        };
        let secret = created["key"].as_str().expect("the secret").to_owned();
        let id = created["key_details"]["id"]
            .as_str()
            .expect("the id")
            .to_owned();
        let on_b = b.clone().with_token(&secret);
        on_b.auth().whoami().await.expect("the new key works on B");
        keys.push((id, on_b));
    }

    let mut windows = Vec::with_capacity(count);
    let mut polls_total = 0u64;
    for (id, on_b) in &keys {
        a.call("api_keys.revoke", json!({ "key_id": id }))
            .await
            .expect("revoke through A");
        let acked = Instant::now();
        loop {
            polls_total += 1;
            match on_b.auth().whoami().await {
                Ok(_) => {}
                Err(e) if e.status() == Some(401) => break,
                Err(e) => panic!("B answered {e}"),
            }
            assert!(
                acked.elapsed() < Duration::from_secs(30),
                "B still accepts {id} 30 s after its revocation"
            );
        }
        windows.push(acked.elapsed());
    }
    windows.sort();
    let at = |q: f64| {
        let i = ((windows.len() as f64 * q).ceil() as usize).clamp(1, windows.len()) - 1;
        windows[i].as_secs_f64() * 1000.0
    };
    println!(
        "{}",
        json!({
            "revokes": windows.len(),
            "p50_ms": at(0.50),
            "p90_ms": at(0.90),
            "p99_ms": at(0.99),
            "max_ms": at(1.0),
            "polls": polls_total,
        })
    );
}
