//! A run's live figures in the Prometheus text exposition format (0.0.4),
//! for `vitalmesh run --metrics ADDR` to serve at `/metrics`.
//!
//! Rendered from a [`Snapshot`], the same figures the dashboard shows, so
//! both drivers export the same series and a scrape agrees with the
//! report. Written by hand rather than through `prometheus-client`: that
//! crate's model is a registry of metric objects updated in place, which
//! would be a second copy of counters the observer already keeps; what is
//! left is a few lines of text whose grammar the tests check with a
//! parser crate.
//!
//! Names follow Prometheus' conventions: a `vitalmesh_` prefix, `_total`
//! on counters, base units (`_seconds`, `_bytes`), labels for the cause
//! or kind rather than one series per name.

use std::fmt::Write;

use crate::Snapshot;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, seconds, of the end-to-end latency histogram's buckets
/// (Prometheus' default ladder, widened to a minute for runs under
/// overload).
pub const LATENCY_BOUNDS_S: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value as the format wants it: backslash, quote and newline
/// escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every series, from `s`.
pub fn render(s: &Snapshot) -> String {
    let mut o = Out(String::with_capacity(4096));
    let run = [
        ("scenario", s.scenario.as_str()),
        (
            "mode",
            match s.mode {
                crate::RunMode::Real => "real",
                crate::RunMode::Virtual => "virtual",
            },
        ),
    ];
    o.family(
        "vitalmesh_run_info",
        "gauge",
        "The run: scenario and mode (always 1).",
    );
    o.sample("vitalmesh_run_info", &run, 1.0);
    o.one(
        "vitalmesh_run_elapsed_seconds",
        "gauge",
        "Seconds since the nodes started (simulated seconds in virtual time).",
        s.elapsed.as_secs_f64(),
    );
    o.one(
        "vitalmesh_nodes",
        "gauge",
        "Nodes in the population.",
        f64::from(s.nodes),
    );
    o.one(
        "vitalmesh_nodes_connected",
        "gauge",
        "Nodes connected to the broker now.",
        s.connected as f64,
    );
    o.one(
        "vitalmesh_samples_produced_total",
        "counter",
        "Samples the nodes took.",
        s.produced as f64,
    );
    o.one(
        "vitalmesh_samples_published_total",
        "counter",
        "Samples handed to MQTT, re-sends included.",
        s.published as f64,
    );
    o.one(
        "vitalmesh_samples_delivered_total",
        "counter",
        "Distinct samples delivered to an aggregator.",
        s.delivered as f64,
    );
    o.one(
        "vitalmesh_samples_redelivered_total",
        "counter",
        "Deliveries of samples already delivered (de-duplicated).",
        s.duplicates as f64,
    );
    o.one(
        "vitalmesh_samples_acked_total",
        "counter",
        "Samples acknowledged end to end and released by their node.",
        s.acked as f64,
    );
    o.family(
        "vitalmesh_samples_dropped_total",
        "counter",
        "Samples lost on purpose or by failure, by cause.",
    );
    o.sample(
        "vitalmesh_samples_dropped_total",
        &[("cause", "buffer_overflow")],
        s.dropped_overflow as f64,
    );
    o.sample(
        "vitalmesh_samples_dropped_total",
        &[("cause", "node_crash")],
        s.lost_on_crash as f64,
    );
    o.one(
        "vitalmesh_samples_buffered",
        "gauge",
        "Samples held in node buffers now.",
        s.buffered as f64,
    );
    o.family(
        "vitalmesh_messages_rejected_total",
        "counter",
        "Messages the aggregators refused, by reason (each message once).",
    );
    for (reason, n) in &s.rejected_by_reason {
        o.sample(
            "vitalmesh_messages_rejected_total",
            &[("reason", reason)],
            *n as f64,
        );
    }
    o.family(
        "vitalmesh_alerts_total",
        "counter",
        "Alerts raised, by kind.",
    );
    for (kind, n) in &s.alert_counts {
        o.sample("vitalmesh_alerts_total", &[("kind", kind)], *n as f64);
    }
    o.one(
        "vitalmesh_incidents_open",
        "gauge",
        "Incidents open now.",
        s.incidents_open as f64,
    );
    o.family(
        "vitalmesh_broker_restarts_total",
        "counter",
        "Broker restarts by the supervisor, by level.",
    );
    o.sample(
        "vitalmesh_broker_restarts_total",
        &[("level", "process")],
        s.broker.process_restarts as f64,
    );
    o.sample(
        "vitalmesh_broker_restarts_total",
        &[("level", "listener")],
        s.broker.listener_restarts as f64,
    );
    o.one(
        "vitalmesh_broker_logins_refused_total",
        "counter",
        "Logins the embedded broker refused.",
        s.broker.auth_refused as f64,
    );
    if s.rss_bytes > 0 {
        o.family(
            "vitalmesh_resident_memory_bytes",
            "gauge",
            "Resident memory, by process.",
        );
        o.sample(
            "vitalmesh_resident_memory_bytes",
            &[("process", "simulator")],
            s.rss_bytes as f64,
        );
        o.sample(
            "vitalmesh_resident_memory_bytes",
            &[("process", "broker")],
            s.broker_rss_bytes as f64,
        );
    }
    let h = "vitalmesh_end_to_end_latency_seconds";
    o.family(
        h,
        "histogram",
        "From a sample's time to its delivery at an aggregator.",
    );
    for (le, n) in &s.latency_le {
        o.sample(
            &format!("{h}_bucket"),
            &[("le", &le.to_string())],
            *n as f64,
        );
    }
    o.sample(
        &format!("{h}_bucket"),
        &[("le", "+Inf")],
        s.latency_total.count as f64,
    );
    o.sample(&format!("{h}_sum"), &[], s.latency_sum_s);
    o.sample(&format!("{h}_count"), &[], s.latency_total.count as f64);
    o.0
}
