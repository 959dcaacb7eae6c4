//! `opgate serve`: the settings from flags, environment and config file turned into a [`Service`], served
//! until SIGTERM or Ctrl-C.

use std::time::Duration;

use opgate::logging::LogFormat;
use opgate::server::ServerConfig;
use opgate::{BoxError, Metrics, Service};

use crate::{ServeArgs, Switch};

/// Runs the gateway until a shutdown signal, then stops it gracefully.
pub(crate) async fn run(args: ServeArgs) -> Result<(), BoxError> {
    opgate::logging::init(match args.log_format {
        crate::LogFormat::Human => LogFormat::Human,
        crate::LogFormat::Json => LogFormat::Json,
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(opgate::server::Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let secs = Duration::from_secs;
    let config = ServerConfig {
        tls,
        trusted_proxies: args.trusted_proxies,
        default_rate_limit: args.default_rate_limit,
        org_rate_limit: args.org_rate_limit,
        shared_limits_down: match args.rate_limit_fallback {
            crate::RateLimitFallback::Open => opgate::server::rate_limit::WhenShareDown::Open {
                fleet_size: args.fleet_size,
            },
            crate::RateLimitFallback::Closed => opgate::server::rate_limit::WhenShareDown::Closed,
        },
        max_body_bytes: args.max_body_bytes,
        shutdown_grace: secs(args.shutdown_grace_seconds),
        header_read_timeout: secs(args.header_read_timeout_seconds),
        body_read_timeout: secs(args.body_read_timeout_seconds),
        write_timeout: secs(args.write_timeout_seconds),
        shutdown_delay: secs(args.shutdown_delay_seconds),
        request_timeout: secs(args.request_timeout_seconds),
        max_header_bytes: args.max_header_bytes,
        max_concurrent_requests: args.max_concurrent_requests,
        max_concurrent_requests_per_principal: args.max_concurrent_requests_per_principal as usize,
        max_concurrent_requests_per_org: args.max_concurrent_requests_per_org as usize,
        max_streams_per_principal: args.max_streams_per_principal as usize,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip as usize,
        mcp_allowed_origins: args.mcp_allowed_origins,
        ..ServerConfig::default()
    };
    let metrics = match (args.metrics, args.metrics_listen) {
        (Switch::Off, _) => Metrics::Off,
        (Switch::On, None) => Metrics::ApiPort,
        (Switch::On, Some(addr)) => Metrics::Listen(addr),
    };
    let sessions = args
        .data
        .session_settings(args.session_issuer, args.session_audience);
    let mut builder = Service::builder(&args.data.data_dir)
        .listen(args.listen)
        .config(config)
        .sessions(sessions)
        .metrics(metrics)
        .docs(args.docs == Switch::On)
        .audit_retention_days(Some(args.audit_retention_days).filter(|&d| d > 0))
        .webhook_retention_days(Some(args.webhook_retention_days).filter(|&d| d > 0))
        .database_url(args.data.database_url.clone())
        .webhooks(opgate::webhooks::DispatchConfig {
            policy: opgate::webhooks::guard::Policy {
                allow_private: args.allow_private_webhooks,
                allow_insecure: args.allow_insecure_webhooks,
            },
            attempt_timeout: std::time::Duration::from_secs(args.webhook_timeout_seconds),
            ..Default::default()
        });
    if let Some(secret) = &args.data.secret {
        builder = builder.secret(secret.clone());
    }
    if let Some(path) = &args.config {
        builder = builder
            .upstreams(opgate::upstream::load(path).map_err(|problems| problems.join("\n"))?);
    }
    let service = builder.start().await?;
    if let Some(admin_key) = service.admin_key() {
        // Printed once, deliberately, on a line of its own; never logged.
        eprintln!("admin key: {admin_key}");
    }
    if let Some(addr) = service.metrics_addr() {
        eprintln!("metrics on http://{addr}/metrics");
    }
    eprintln!("opgate listening on {}", service.url());
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = reloads(&service, args.config.as_deref()) => {}
    }
    service.shutdown().await;
    opgate::logging::flush();
    Ok(())
}

/// On each SIGHUP, reads the configuration file's upstream operations again and swaps them in whole; an invalid
/// file is refused (each problem logged) and the running set stays. Never resolves.
async fn reloads(service: &Service, config: Option<&std::path::Path>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            let Some(path) = config else {
                tracing::warn!("SIGHUP: no --config file to reload");
                continue;
            };
            // Whatever the file holds, a reload never takes the server down: a panic is a refusal too.
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                opgate::upstream::load(path)
                    .map_err(|problems| problems.join("; "))
                    .and_then(|upstreams| {
                        service
                            .reload_upstreams(&upstreams)
                            .map(|()| upstreams.len())
                            .map_err(|e| e.to_string())
                    })
            }))
            .unwrap_or_else(|_| Err("reading it failed unexpectedly".to_owned()));
            match loaded {
                Ok(count) => tracing::info!(
                    config = %path.display(),
                    upstream_operations = count,
                    "SIGHUP: configuration reloaded"
                ),
                Err(problems) => tracing::error!(
                    config = %path.display(),
                    problems = %problems,
                    "SIGHUP: configuration refused; the running operations stay"
                ),
            }
        }
    }
    std::future::pending().await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
