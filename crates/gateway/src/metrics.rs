//! Prometheus metrics, served as text on `GET /metrics`.

use std::cell::RefCell;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// The route name (`aura`, `aura-hitl`, `main`, `auth`, `gateway`, `none`).
    pub route: &'static str,
    /// The HTTP status sent to the client.
    pub status: u16,
}

/// Labels of per-route metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route name.
    pub route: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `process_*` and `dwp_build_info` ([`dwp_core::metrics`]), unprefixed.
    process: Registry,
    /// Requests by route and status.
    pub requests: Family<RouteStatus, Counter>,
    /// SSE streams being relayed right now.
    pub open_streams: Gauge,
    /// Time from sending upstream to the upstream's response headers.
    pub upstream_seconds: Family<RouteLabel, Histogram>,
    /// `: keep-alive` comments injected.
    pub heartbeats: Counter,
    /// Clients that went away before their response was complete.
    pub client_disconnects: Counter,
    /// Agent events written to the recorder's Redis Stream.
    pub recorder_events: Counter,
    /// Agent events the recorder dropped (queue full or Redis unreachable).
    pub recorder_dropped: Counter,
    /// Agent events not recorded because they were over the size cap.
    pub recorder_oversized: Counter,
    /// Requests refused because their client or user had too many open (429).
    pub limited: Counter,
    /// Resumable runs this gateway reads from the agent.
    pub resumable_runs: Gauge,
    /// Of those, the runs no client of this gateway follows.
    pub detached_runs: Gauge,
    /// Blocks of resumable streams not journaled (Redis down past the cap).
    pub journal_lost: Counter,
}

impl Metrics {
    /// Counts one request of `route` answered with `status`. The family's
    /// lookup (a lock shared by every worker and a SipHash of the labels)
    /// is made once per label pair and thread: the counter it returns is
    /// kept in a small list of the thread's own, each entry with the
    /// metrics it belongs to (a gateway per process in production, several
    /// in tests).
    pub fn count_request(self: &Arc<Self>, route: &'static str, status: u16) {
        type Entry = (Arc<Metrics>, &'static str, u16, Counter);
        /// Label pairs kept per thread: routes times the statuses they see.
        const KEPT: usize = 64;
        thread_local! {
            static COUNTERS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
        }
        COUNTERS.with_borrow_mut(|kept| {
            let found = kept.iter().find(|(metrics, r, s, _)| {
                *s == status && *r == route && Arc::ptr_eq(metrics, self)
            });
            if let Some((.., counter)) = found {
                counter.inc();
                return;
            }
            let counter = self
                .requests
                .get_or_create(&RouteStatus { route, status })
                .clone();
            counter.inc();
            if kept.len() >= KEPT {
                kept.clear();
            }
            kept.push((self.clone(), route, status, counter));
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let requests = Family::<RouteStatus, Counter>::default();
        let open_streams = Gauge::default();
        let upstream_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ])
        });
        let heartbeats = Counter::default();
        let client_disconnects = Counter::default();
        let recorder_events = Counter::default();
        let recorder_dropped = Counter::default();
        let recorder_oversized = Counter::default();
        let limited = Counter::default();
        let (resumable_runs, detached_runs, journal_lost) = register_streams(&mut registry);
        registry.register("requests", "Requests by route and status", requests.clone());
        registry.register(
            "open_streams",
            "SSE streams being relayed",
            open_streams.clone(),
        );
        registry.register(
            "upstream_response_seconds",
            "Time to the upstream's response headers",
            upstream_seconds.clone(),
        );
        registry.register(
            "sse_heartbeats",
            "Keep-alive comments injected",
            heartbeats.clone(),
        );
        registry.register(
            "client_disconnects",
            "Clients gone before their response was complete",
            client_disconnects.clone(),
        );
        registry.register(
            "recorder_events",
            "Agent events written to the task event stream",
            recorder_events.clone(),
        );
        registry.register(
            "recorder_dropped",
            "Agent events dropped by the recorder (queue full or Redis down)",
            recorder_dropped.clone(),
        );
        registry.register(
            "recorder_oversized",
            "Agent events not recorded: larger than GATEWAY_RECORDER_MAX_EVENT_BYTES",
            recorder_oversized.clone(),
        );
        registry.register(
            "limited",
            "Requests refused with 429: too many open for one client address or user",
            limited.clone(),
        );
        Self {
            registry,
            process: dwp_core::metrics::process_registry("gateway", env!("CARGO_PKG_VERSION")),
            requests,
            open_streams,
            upstream_seconds,
            heartbeats,
            client_disconnects,
            recorder_events,
            recorder_dropped,
            recorder_oversized,
            limited,
            resumable_runs,
            detached_runs,
            journal_lost,
        }
    }
}

/// The resumable streams' gauges and counter, registered.
fn register_streams(registry: &mut Registry) -> (Gauge, Gauge, Counter) {
    let (resumable_runs, detached_runs) = (Gauge::default(), Gauge::default());
    let journal_lost = Counter::default();
    registry.register(
        "resumable_runs",
        "Resumable agent runs this gateway reads",
        resumable_runs.clone(),
    );
    registry.register(
        "detached_runs",
        "Resumable runs no client of this gateway follows",
        detached_runs.clone(),
    );
    registry.register(
        "stream_journal_lost",
        "Blocks of resumable streams not journaled (Redis unreachable past the queue cap)",
        journal_lost.clone(),
    );
    (resumable_runs, detached_runs, journal_lost)
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        dwp_core::metrics::render(&[&self.registry, &self.process])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_in_their_own_metrics_under_their_labels() {
        let (a, b) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
        // More label pairs than a thread keeps, twice each.
        for n in 0..200u16 {
            a.count_request("main", 200 + n % 100);
        }
        // The same route name at another address is the same label.
        let main: &'static str = String::from("main").leak();
        b.count_request("main", 200);
        b.count_request(main, 200);
        b.count_request("aura", 200);
        let count = |m: &Metrics, route, status| {
            m.requests
                .get_or_create(&RouteStatus { route, status })
                .get()
        };
        assert_eq!(count(&a, "main", 200), 2);
        assert_eq!(count(&a, "main", 299), 2);
        assert_eq!(count(&a, "aura", 200), 0);
        assert_eq!(count(&b, "main", 200), 2);
        assert_eq!(count(&b, "aura", 200), 1);
        assert_eq!(count(&b, "main", 201), 0);
    }
}
