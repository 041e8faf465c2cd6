//! What every binary's `/metrics` has besides its own families: the
//! process (`process_*`, the names Prometheus's client libraries use), the
//! build (`dwp_build_info`), and the one encoding with its content type.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s body: OpenMetrics text 1.0 (it ends in
/// `# EOF` and names counters `_total`), not Prometheus's text 0.0.4.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process and build families, unprefixed, for `service` at `version`.
pub fn process_registry(service: &'static str, version: &'static str) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "dwp_build",
        "The service and version of this binary",
        Info::new(vec![("service", service), ("version", version)]),
    );
    registry.register_collector(Box::new(Process));
    registry
}

/// The registries' families, one after the other, in one OpenMetrics body.
pub fn render(registries: &[&Registry]) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    for registry in registries {
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// Reads `/proc/self` at each scrape (nothing where there is no `/proc`).
#[derive(Debug)]
struct Process;

/// Linux's USER_HZ, the unit of `/proc/self/stat`'s times, on every
/// architecture Linux runs these binaries on.
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stat) = ProcStat::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stat.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stat.resident_bytes,
            ),
            ("process_open_fds", "Open file descriptors", stat.open_fds),
            (
                "process_max_fds",
                "The limit of open file descriptors",
                stat.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time since the Unix epoch, in seconds",
                stat.start_time,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The figures of one scrape.
struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time: f64,
}

impl ProcStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and
        // may hold spaces: state is field 3, utime 14, stime 15, starttime 22.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::INFINITY);
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            resident_bytes: rss_kib * 1024.0,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
            start_time: boot + field(22)? / TICKS_PER_SECOND,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_and_build_families_with_help_and_an_eof() {
        let body = render(&[&process_registry("gateway", "1.2.3")]);
        for family in [
            "dwp_build",
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                body.contains(&format!("# HELP {family} ")),
                "no HELP for {family}: {body}"
            );
        }
        assert!(
            body.contains(r#"dwp_build_info{service="gateway",version="1.2.3"} 1"#),
            "{body}"
        );
        let rss: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rss > 1024.0 * 1024.0,
            "a running test has more than 1 MiB resident: {rss}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1);
    }
}
