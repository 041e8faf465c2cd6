//! Prometheus metrics on `GET /metrics`: decisions by outcome and request
//! latency by route.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label of the decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `approved`, `rejected`, `repeated`, `conflict`, `not_found`, `forbidden`, `unavailable`, `error`.
    pub outcome: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// The matched route pattern (`unmatched` for 404s).
    pub route: String,
    /// The response status.
    pub status: u16,
}

/// Labels of the consumer counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamResult {
    /// The Redis Stream consumed.
    pub stream: &'static str,
    /// `applied` or `dead_lettered`.
    pub result: &'static str,
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `process_*` and `dwp_build_info` ([`dwp_core::metrics`]), unprefixed.
    process: Registry,
    decisions: Family<Outcome, Counter>,
    latency: Family<RouteStatus, Histogram>,
    consumed: Family<StreamResult, Counter>,
    deliveries: Family<Delivery, Counter>,
    pool: Family<PoolState, Gauge>,
    backlog: Family<Backlog, Gauge>,
    pending: Gauge,
    feeds: Gauge,
}

/// Label of the database pool gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolState {
    /// `idle` or `in_use`.
    pub state: &'static str,
}

/// Labels of the consumer-group backlog gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Backlog {
    /// The stream.
    pub stream: &'static str,
    /// `pending` (read, not yet acknowledged) or `lag` (not read yet).
    pub kind: &'static str,
}

/// Label of the delivery counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Delivery {
    /// `at_once` (someone listened when it was decided), `queued` (nobody
    /// did), `late` (delivered once the agent subscribed), `expired` (never
    /// delivered), `superseded` (the session moved on to another request).
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("main");
        let decisions = Family::<Outcome, Counter>::default();
        let latency = Family::<RouteStatus, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "hitl_decisions",
            "HITL decisions by outcome",
            decisions.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency by route and status",
            latency.clone(),
        );
        let consumed = Family::<StreamResult, Counter>::default();
        registry.register(
            "stream_entries",
            "Redis Stream entries consumed, by stream and result",
            consumed.clone(),
        );
        let deliveries = Family::<Delivery, Counter>::default();
        registry.register(
            "hitl_signal_deliveries",
            "HITL signals by how they reached a subscriber",
            deliveries.clone(),
        );
        let pool = Family::<PoolState, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "PostgreSQL pool connections by state, at the scrape",
            pool.clone(),
        );
        let backlog = Family::<Backlog, Gauge>::default();
        registry.register(
            "stream_entries",
            "Entries of this service's consumer group not yet applied, at the scrape: pending (read, not acknowledged) and lag (not read yet)",
            backlog.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "hitl_pending_requests",
            "HITL requests waiting for a decision (status pending in hitl:request:*), counted at the scrape",
            pending.clone(),
        );
        let feeds = Gauge::default();
        registry.register(
            "hitl_feeds_open",
            "Live HITL feeds (GET /aura/hitl/events) this replica holds open, at the scrape",
            feeds.clone(),
        );
        Self {
            registry,
            process: dwp_core::metrics::process_registry("main-service", env!("CARGO_PKG_VERSION")),
            decisions,
            latency,
            consumed,
            deliveries,
            pool,
            backlog,
            pending,
            feeds,
        }
    }
}

impl Metrics {
    /// Counts entries a consumer applied and dead-lettered.
    pub fn consumed(&self, stream: &'static str, applied: usize, dead: usize) {
        for (result, n) in [("applied", applied), ("dead_lettered", dead)] {
            self.consumed
                .get_or_create(&StreamResult { stream, result })
                .inc_by(n as u64);
        }
    }

    /// Counts one decision attempt.
    pub fn decision(&self, outcome: &'static str) {
        self.decisions.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one signal delivery step.
    pub fn delivery(&self, result: &'static str) {
        self.deliveries.get_or_create(&Delivery { result }).inc();
    }

    /// Records one request's latency under its route and status.
    pub fn observe(&self, route: String, status: u16, seconds: f64) {
        self.latency
            .get_or_create(&RouteStatus { route, status })
            .observe(seconds);
    }

    /// Sets the database pool gauge.
    pub fn pool(&self, in_use: u32, idle: u32) {
        for (state, n) in [("in_use", in_use), ("idle", idle)] {
            self.pool
                .get_or_create(&PoolState { state })
                .set(i64::from(n));
        }
    }

    /// Sets a stream's backlog gauge.
    pub fn backlog(&self, stream: &'static str, pending: i64, lag: i64) {
        for (kind, n) in [("pending", pending), ("lag", lag)] {
            self.backlog.get_or_create(&Backlog { stream, kind }).set(n);
        }
    }

    /// Sets the pending HITL requests gauge.
    pub fn pending_requests(&self, n: i64) {
        self.pending.set(n);
    }

    /// Sets the open feeds gauge.
    pub fn feeds_open(&self, n: usize) {
        self.feeds.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        dwp_core::metrics::render(&[&self.registry, &self.process])
    }
}
