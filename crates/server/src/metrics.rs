//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! A small registry owned by each server instance (no global recorder), so several servers in
//! one test process keep separate counts.

use std::collections::BTreeMap;
use std::fmt::Write;

use parking_lot::Mutex;

#[derive(Default)]
struct Counts {
    /// (route, method, status) → requests and total seconds.
    requests: BTreeMap<(String, String, u16), (u64, f64)>,
    /// Named counters with one label set each.
    counters: BTreeMap<(&'static str, String), u64>,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut counts = self.counts.lock();
        let entry = counts
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// Adds `n` to counter `name` with the label string `labels` (e.g. `reason="x"`).
    pub fn add(&self, name: &'static str, labels: &str, n: u64) {
        *self
            .counts
            .lock()
            .counters
            .entry((name, labels.to_owned()))
            .or_default() += n;
    }

    /// Renders every metric, plus `gauges` supplied by the caller (name, help, value).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let counts = self.counts.lock();
        let mut out = String::new();
        out.push_str("# HELP segmart_http_requests_total HTTP requests answered\n");
        out.push_str("# TYPE segmart_http_requests_total counter\n");
        for ((route, method, status), (n, _)) in &counts.requests {
            let _ = writeln!(
                out,
                "segmart_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP segmart_http_request_seconds_sum Time spent answering HTTP requests\n",
        );
        out.push_str("# TYPE segmart_http_request_seconds_sum counter\n");
        for ((route, method, status), (_, secs)) in &counts.requests {
            let _ = writeln!(
                out,
                "segmart_http_request_seconds_sum{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {secs}"
            );
        }
        let mut last = "";
        for ((name, labels), n) in &counts.counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {n}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
