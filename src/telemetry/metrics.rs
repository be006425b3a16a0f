//! `/metrics`: the Prometheus text exposition, through `prometheus-client` (the Prometheus
//! project's own Rust client). One collector reads the live counts and the telemetry thread's view
//! at scrape time, so nothing is counted twice and nothing is updated on the line's threads.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::view::{View, SCORE_BOUNDS};
use super::Hub;
use crate::stats::{LatencyHistogram, HISTOGRAM_BOUNDS_US};

/// The registry of `/metrics`.
pub fn registry(hub: Arc<Hub>, view: Arc<Mutex<View>>) -> Registry {
    let mut registry = Registry::with_prefix("partguard");
    registry.register_collector(Box::new(StationCollector { hub, view }));
    registry
}

/// Renders the exposition text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

struct StationCollector {
    hub: Arc<Hub>,
    view: Arc<Mutex<View>>,
}

impl std::fmt::Debug for StationCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StationCollector")
    }
}

/// A histogram already counted elsewhere, encoded as Prometheus expects (cumulative buckets).
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn latency(h: &LatencyHistogram) -> Histogram {
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = HISTOGRAM_BOUNDS_US
            .iter()
            .zip(h.buckets.iter())
            .map(|(&b, &n)| {
                cumulative += n;
                (f64::from(b) / 1e6, cumulative)
            })
            .collect();
        buckets.push((f64::INFINITY, h.count));
        Histogram {
            buckets,
            sum: h.sum_us as f64 / 1e6,
            count: h.count,
        }
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    e.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, f64>(&value, None)
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Collector for StationCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live = self.hub.live.lock().map(|l| *l).unwrap_or_default();
        let s = &live.summary;
        let info = &self.hub.info;
        {
            let mut m = e.encode_descriptor(
                "build",
                "What the station runs (always 1; the labels carry the facts).",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&[
                ("version", info.version),
                ("model", info.model_name.as_str()),
                ("model_version", info.model_version.as_str()),
                ("precision", info.precision.as_str()),
                ("model_sha256", info.model_sha256.as_str()),
                ("engine", info.engine.as_str()),
            ])?;
        }
        {
            let mut m = e.encode_descriptor(
                "parts",
                "Parts by final disposition: ok, ng (rejected), late, missed, fault, overflow.",
                None,
                MetricType::Counter,
            )?;
            for (verdict, n) in [
                ("ok", s.counts.ok),
                ("ng", s.counts.ng),
                ("late", s.counts.late),
                ("missed", s.counts.missed),
                ("fault", s.counts.faults),
                ("overflow", s.counts.overflows),
            ] {
                m.encode_family(&[("verdict", verdict)])?
                    .encode_counter::<NoLabelSet, u64, f64>(&n, None)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "failsafe_parts",
                "Parts the fail-safe policy handled, by action.",
                None,
                MetricType::Counter,
            )?;
            for (action, n) in [
                ("rejected", s.counts.failsafe_rejected),
                ("passed", s.counts.failsafe_passed),
            ] {
                m.encode_family(&[("action", action)])?
                    .encode_counter::<NoLabelSet, u64, f64>(&n, None)?;
            }
        }
        counter(
            &mut e,
            "frames_inspected",
            "Frames the model judged.",
            s.frames,
        )?;
        counter(
            &mut e,
            "frames_skipped",
            "Unreadable replay images and dropped camera frames.",
            s.skipped,
        )?;
        counter(
            &mut e,
            "camera_stalls",
            "Camera stalls and outages (each reopen counts once).",
            s.stalls,
        )?;
        counter(
            &mut e,
            "reject_pulses",
            "Reject pulses fired.",
            s.counts.pulses,
        )?;
        counter(
            &mut e,
            "reject_pulses_merged",
            "Rejects merged into a pulse already on.",
            s.counts.merged,
        )?;
        counter(
            &mut e,
            "output_errors",
            "GPIO output writes that failed.",
            s.output_errors,
        )?;
        counter(
            &mut e,
            "actuator_messages_lost",
            "Messages to the actuator that found its queue full.",
            s.lost_messages,
        )?;
        counter(
            &mut e,
            "archive_written",
            "Reject archive images written.",
            s.archived,
        )?;
        counter(
            &mut e,
            "archive_dropped",
            "Parts not archived because the writer was behind.",
            s.archive_dropped,
        )?;
        counter(
            &mut e,
            "archive_failed",
            "Archive writes that failed.",
            s.archive_failed,
        )?;
        counter(
            &mut e,
            "drift_warnings",
            "Drift warnings (passed parts' scores shifted from the calibration).",
            live.drift_warnings,
        )?;
        counter(
            &mut e,
            "telemetry_dropped",
            "Part results the telemetry queue had no room for.",
            self.hub
                .records_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "threshold",
            "The anomaly-score threshold in force.",
            f64::from(live.threshold),
        )?;
        gauge(
            &mut e,
            "alarm",
            "1 while the alarm is raised.",
            f64::from(u8::from(live.alarm)),
        )?;
        gauge(
            &mut e,
            "reject_pending",
            "Parts between camera and ejector.",
            live.reject_pending as f64,
        )?;
        e.encode_descriptor(
            "reject_onset_error_seconds",
            "Reject pulse onset minus the part's due time.",
            None,
            MetricType::Histogram,
        )
        .and_then(|m| Histogram::latency(&live.onset_histogram).encode(m))?;
        let Ok(view) = self.view.lock() else {
            return Ok(());
        };
        gauge(
            &mut e,
            "parts_per_second",
            "Parts per second over the last seconds.",
            view.rate,
        )?;
        for (name, h) in [
            ("convert", &view.convert),
            ("preprocess", &view.preprocess),
            ("inference", &view.inference),
            ("capture_to_decision", &view.total),
        ] {
            let (metric, help) = (
                format!("{name}_seconds"),
                format!("Latency of the {} stage per part.", name.replace('_', " ")),
            );
            let m = e.encode_descriptor(&metric, &help, None, MetricType::Histogram)?;
            Histogram::latency(h).encode(m)?;
        }
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = SCORE_BOUNDS
            .iter()
            .zip(view.score_buckets.iter())
            .map(|(&b, &n)| {
                cumulative += n;
                (b, cumulative)
            })
            .collect();
        buckets.push((f64::INFINITY, view.score_count));
        let m = e.encode_descriptor(
            "score",
            "Anomaly scores of judged parts.",
            None,
            MetricType::Histogram,
        )?;
        Histogram {
            buckets,
            sum: view.score_sum,
            count: view.score_count,
        }
        .encode(m)?;
        let q = &view.mqtt;
        gauge(
            &mut e,
            "mqtt_connected",
            "1 while connected to the broker.",
            f64::from(u8::from(q.connected)),
        )?;
        counter(
            &mut e,
            "mqtt_published",
            "Part results handed to the broker connection.",
            q.published,
        )?;
        counter(
            &mut e,
            "mqtt_dropped",
            "Part results dropped while the broker was away.",
            q.dropped,
        )?;
        counter(
            &mut e,
            "mqtt_reconnects",
            "Connections to the broker after the first.",
            q.reconnects,
        )?;
        Ok(())
    }
}
