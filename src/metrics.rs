//! Process-wide metrics (prometheus-client), shared by both front doors:
//! requests by protocol/endpoint/status, request latency, rows and bytes
//! streamed, rows ingested; the node gauges (applied LSN, lag, DuckDB
//! memory) and open sessions are read from the engine when `/metrics` is
//! scraped. A per-second window of recent requests feeds the status page.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::MonthStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub protocol: &'static str,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub month: String,
    pub node: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    rows: Family<ProtocolLabels, Counter>,
    bytes: Family<ProtocolLabels, Counter>,
    ingest_rows: Counter,
    applied_lsn: Family<NodeLabels, Gauge>,
    lag_lsn: Family<NodeLabels, Gauge>,
    lag_seconds: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    memory_bytes: Family<NodeLabels, Gauge>,
    size_bytes: Family<NodeLabels, Gauge>,
    healthy: Family<NodeLabels, Gauge>,
    verified_lsn: Family<NodeLabels, Gauge>,
    verify_mismatches: Family<NodeLabels, Gauge>,
    apply_failures: Family<NodeLabels, Gauge>,
    sessions: Gauge,
    transactions: Gauge,
    queries_running: Gauge,
    queries_queued: Gauge,
    http_json: Gauge,
    http_json_peak: Gauge,
    recent: Mutex<Window>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("duckflock");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by protocol (flight, http), endpoint and status (gRPC code or HTTP status)",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time to the response (for streams: to the first message) by protocol and endpoint",
            latency.clone(),
        );
        let rows = Family::<ProtocolLabels, Counter>::default();
        registry.register("rows_streamed", "Result rows sent to clients", rows.clone());
        let bytes = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "bytes_streamed",
            "Result bytes sent to clients (Flight data messages, HTTP JSON bodies)",
            bytes.clone(),
        );
        let ingest_rows = Counter::default();
        registry.register(
            "ingest_rows",
            "Rows inserted by bulk ingest",
            ingest_rows.clone(),
        );
        let applied_lsn = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "applied_lsn",
            "Last change set a node holds, per open month and node",
            applied_lsn.clone(),
        );
        let lag_lsn = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "lag_lsn",
            "Change sets a replica is behind its primary",
            lag_lsn.clone(),
        );
        let lag_seconds = Family::<NodeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lag_seconds",
            "Age of the oldest change set a replica has not applied",
            lag_seconds.clone(),
        );
        let memory_bytes = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "duckdb_memory_bytes",
            "Bytes DuckDB's buffer manager holds, per open node file",
            memory_bytes.clone(),
        );
        let size_bytes = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_file_bytes",
            "Size of a node's database file and WAL",
            size_bytes.clone(),
        );
        let healthy = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_healthy",
            "1 when a node serves (a replica: healthy and applying), else 0",
            healthy.clone(),
        );
        let verified_lsn = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "replica_verified_lsn",
            "LSN of a replica's last verification against its primary",
            verified_lsn.clone(),
        );
        let verify_mismatches = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "replica_verify_mismatches",
            "Verifications since start that found the replica different from its primary (each rebuilt it)",
            verify_mismatches.clone(),
        );
        let apply_failures = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "replica_apply_failures",
            "Apply batches since start that failed, a self-check included (each rebuilt the replica)",
            apply_failures.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "open_sessions",
            "Flight SQL sessions open now",
            sessions.clone(),
        );
        let transactions = Gauge::default();
        registry.register(
            "open_transactions",
            "Flight SQL transactions open now",
            transactions.clone(),
        );
        let queries_running = Gauge::default();
        registry.register(
            "queries_running",
            "Statements streaming results now (at most --max-concurrent-queries)",
            queries_running.clone(),
        );
        let queries_queued = Gauge::default();
        registry.register(
            "queries_queued",
            "Queries waiting for a turn now (at most --max-queued-queries)",
            queries_queued.clone(),
        );
        let http_json = Gauge::default();
        registry.register(
            "http_json_bytes",
            "Bytes of JSON answers the HTTP gateway holds now (all requests together)",
            http_json.clone(),
        );
        let http_json_peak = Gauge::default();
        registry.register(
            "http_json_peak_bytes",
            "Most bytes of JSON answers the HTTP gateway held at once since start",
            http_json_peak.clone(),
        );
        Metrics {
            registry,
            queries_running,
            queries_queued,
            http_json,
            http_json_peak,
            requests,
            latency,
            rows,
            bytes,
            ingest_rows,
            applied_lsn,
            lag_lsn,
            lag_seconds,
            memory_bytes,
            size_bytes,
            healthy,
            verified_lsn,
            verify_mismatches,
            apply_failures,
            sessions,
            transactions,
            recent: Mutex::new(Window::default()),
        }
    }

    /// One finished request.
    pub fn request(&self, protocol: &'static str, endpoint: &str, status: &str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                protocol,
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
        self.recent.lock().add(protocol, Instant::now());
    }

    pub fn streamed(&self, protocol: &'static str, rows: u64, bytes: u64) {
        let l = ProtocolLabels { protocol };
        if rows > 0 {
            self.rows.get_or_create(&l).inc_by(rows);
        }
        if bytes > 0 {
            self.bytes.get_or_create(&l).inc_by(bytes);
        }
    }

    /// The HTTP gateway's JSON budget in use now and at its peak.
    pub fn http_json(&self, held: usize, peak: usize) {
        self.http_json.set(held as i64);
        self.http_json_peak.set(peak as i64);
    }

    pub fn ingested(&self, rows: u64) {
        self.ingest_rows.inc_by(rows);
    }

    /// Requests per second over the last `secs` seconds, per protocol.
    pub fn recent_rates(&self, secs: u64) -> Vec<(&'static str, f64)> {
        self.recent.lock().rates(Instant::now(), secs)
    }

    /// The text exposition, after refreshing the gauges read from the
    /// engine: the node status of every month and the open sessions.
    pub fn render(
        &self,
        months: &[MonthStatus],
        sessions: (usize, usize),
        queries: (usize, usize),
    ) -> String {
        for f in [
            &self.applied_lsn,
            &self.lag_lsn,
            &self.memory_bytes,
            &self.size_bytes,
            &self.healthy,
            &self.verified_lsn,
            &self.verify_mismatches,
            &self.apply_failures,
        ] {
            f.clear();
        }
        self.lag_seconds.clear();
        for m in months {
            for n in &m.nodes {
                let l = NodeLabels {
                    month: m.month.clone(),
                    node: format!("node_{}", n.id),
                };
                self.size_bytes.get_or_create(&l).set(n.size_bytes as i64);
                if !m.open {
                    continue;
                }
                if let Some(v) = n.applied_lsn {
                    self.applied_lsn.get_or_create(&l).set(v as i64);
                }
                if let Some(v) = n.lag_lsn {
                    self.lag_lsn.get_or_create(&l).set(v as i64);
                }
                if let Some(v) = n.lag_ms {
                    self.lag_seconds.get_or_create(&l).set(v as f64 / 1000.0);
                }
                if let Some(v) = n.memory_usage_bytes {
                    self.memory_bytes.get_or_create(&l).set(v as i64);
                }
                self.healthy.get_or_create(&l).set(n.healthy as i64);
                if n.role == "replica" {
                    if let Some(v) = &n.verified {
                        self.verified_lsn.get_or_create(&l).set(v.lsn as i64);
                    }
                    self.verify_mismatches
                        .get_or_create(&l)
                        .set(n.mismatches as i64);
                    self.apply_failures
                        .get_or_create(&l)
                        .set(n.apply_failures as i64);
                }
            }
        }
        self.sessions.set(sessions.0 as i64);
        self.transactions.set(sessions.1 as i64);
        self.queries_running.set(queries.0 as i64);
        self.queries_queued.set(queries.1 as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Request counts per second for the last few minutes.
#[derive(Default)]
struct Window {
    /// (second since `start`, protocol, count), oldest first.
    slots: VecDeque<(u64, &'static str, u64)>,
    start: Option<Instant>,
}

const WINDOW_SECS: u64 = 300;

impl Window {
    fn second(&mut self, now: Instant) -> u64 {
        let start = *self.start.get_or_insert(now);
        now.saturating_duration_since(start).as_secs()
    }

    fn add(&mut self, protocol: &'static str, now: Instant) {
        let s = self.second(now);
        while self
            .slots
            .front()
            .is_some_and(|(t, _, _)| t + WINDOW_SECS < s)
        {
            self.slots.pop_front();
        }
        match self
            .slots
            .iter_mut()
            .rev()
            .take_while(|(t, _, _)| *t == s)
            .find(|(_, p, _)| *p == protocol)
        {
            Some(slot) => slot.2 += 1,
            None => self.slots.push_back((s, protocol, 1)),
        }
    }

    fn rates(&mut self, now: Instant, secs: u64) -> Vec<(&'static str, f64)> {
        let s = self.second(now);
        let mut out: Vec<(&'static str, f64)> = vec![("flight", 0.0), ("http", 0.0)];
        for (t, p, n) in &self.slots {
            if t + secs > s {
                match out.iter_mut().find(|(q, _)| q == p) {
                    Some(o) => o.1 += *n as f64,
                    None => out.push((p, *n as f64)),
                }
            }
        }
        let span = secs.max(1) as f64;
        for o in &mut out {
            o.1 /= span;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_recent_requests_per_protocol() {
        let mut w = Window::default();
        let t0 = Instant::now();
        for _ in 0..30 {
            w.add("http", t0);
        }
        w.add("flight", t0 + Duration::from_secs(5));
        let r = w.rates(t0 + Duration::from_secs(5), 10);
        assert_eq!(r.iter().find(|x| x.0 == "http").map(|x| x.1), Some(3.0));
        assert_eq!(r.iter().find(|x| x.0 == "flight").map(|x| x.1), Some(0.1));
        // Older than the window: gone.
        let r = w.rates(t0 + Duration::from_secs(100), 10);
        assert!(r.iter().all(|x| x.1 == 0.0));
    }
}
