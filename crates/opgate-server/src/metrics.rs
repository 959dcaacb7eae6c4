//! Prometheus metrics through the `metrics` facade: requests by operation and status, latency histograms by
//! operation, authentication failures by reason, rate-limited calls and requests in flight here; storage
//! latency is recorded by the store. `GET /metrics` renders them in the Prometheus text format.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds buckets for the latency histograms: 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// The installed recorder; render it for `GET /metrics`.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The process-wide Prometheus recorder, installed on first use; `None` if the process already has
    /// another `metrics` recorder.
    pub fn global() -> Option<Self> {
        static GLOBAL: std::sync::OnceLock<Option<Metrics>> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                Self::install()
                    .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                    .ok()
            })
            .clone()
    }

    fn install() -> Result<Self, String> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .map_err(|e| e.to_string())?
            .install_recorder()
            .map_err(|e| e.to_string())?;
        describe();
        // Histogram samples queue in the recorder until upkeep folds them into buckets; without it memory
        // grows with every request between scrapes. A small thread does it every few seconds.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("opgate-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            })
            .map_err(|e| e.to_string())?;
        Ok(Metrics { handle })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn describe() {
    metrics::describe_counter!(
        "opgate_requests_total",
        "Requests answered, by operation and status."
    );
    metrics::describe_histogram!(
        "opgate_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request head to response head, by operation."
    );
    metrics::describe_counter!(
        "opgate_auth_failures_total",
        "Rejected credentials, by reason."
    );
    metrics::describe_counter!("opgate_rate_limited_total", "Requests refused with 429.");
    metrics::describe_gauge!("opgate_requests_in_flight", "Requests being handled now.");
    metrics::describe_histogram!(
        "opgate_storage_seconds",
        metrics::Unit::Seconds,
        "Storage call latency, by kind (read or write)."
    );
}
