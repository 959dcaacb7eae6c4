//! The physical limit of this machine for an HTTP/1.1 JSON endpoint: a bare hyper server that reads the
//! request body and answers every request with a fixed 200 JSON body. `scripts/bench` drives it with the same
//! load as opgate, in the same run, and reports opgate's figures as ratios of this one's.
//!
//! Usage: `bench-baseline [ADDR]` (default `127.0.0.1:0`); prints `listening on ADDR` on stderr.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const BODY: &[u8] = br#"{"kind":"api_key","id":"key_01jf3m8v6k2x9q4w7e5r1t0y8z","org":"default"}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body like a real endpoint would.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    Ok(resp)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
