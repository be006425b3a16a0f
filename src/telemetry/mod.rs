//! The station's view for the people and systems beside the line: the page on the device, its
//! JSON API and Prometheus `/metrics` ([`http`]), and results to the plant's MQTT broker
//! ([`mqtt`]).
//!
//! The line never waits for any of it. The inference thread (and the capture thread, for parts it
//! hands to the fail-safe policy itself) give each part's result to [`Telemetry::record`], a push
//! into a bounded lock-free queue that drops (and counts) when full; counts are copied with
//! `try_lock` (skipped when a reader holds the lock); the latest frame is copied into a
//! preallocated buffer only while a page is showing it, a few times a second. Everything else
//! (JSON, JPEG, metrics text, MQTT) happens on the `telemetry` thread ([`TelemetryService`]), at
//! low priority, on a small single-threaded tokio runtime of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::capture::Roi;
use crate::decide::Verdict;
use crate::stats::{LatencyHistogram, RunSummary};

pub mod http;
mod metrics;
pub mod mqtt;
mod service;
mod view;

pub use service::{TelemetryError, TelemetryService};

/// Part results that can wait for the telemetry thread; one more is dropped (and counted).
pub const RECORD_QUEUE: usize = 1024;

/// The longest side of the frame copy the page shows, in pixels.
pub const FRAME_VIEW_SIDE: usize = 384;
/// The longest side of the anomaly-map copy behind the page's heatmap.
const MAP_VIEW_SIDE: usize = 128;
/// The frame is copied at most this often, and only while a page asked for it in the last
/// [`FRAME_INTEREST`].
const FRAME_PERIOD: Duration = Duration::from_millis(150);
const FRAME_INTEREST: Duration = Duration::from_secs(3);

/// One part's result, as the line decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartRecord {
    pub seq: u64,
    /// Wall-clock time of the capture (or trigger), microseconds since the Unix epoch.
    pub captured_unix_us: u64,
    /// NaN when the model did not run.
    pub score: f32,
    pub threshold: f32,
    pub verdict: Verdict,
    pub convert_us: u32,
    pub preprocess_us: u32,
    pub inference_us: u32,
    /// Capture (or trigger) to decision.
    pub total_us: u32,
    /// Handed to the reject archive.
    pub archived: bool,
}

impl PartRecord {
    /// A part the model judged: its score, threshold and verdict, and how long convert,
    /// preprocess, inference and capture-to-decision took.
    pub fn judged(
        seq: u64,
        (score, threshold, verdict): (f32, f32, Verdict),
        [convert, preprocess, inference, total]: [Duration; 4],
        archived: bool,
    ) -> PartRecord {
        let us = |d: Duration| d.as_micros().min(u128::from(u32::MAX)) as u32;
        PartRecord {
            seq,
            captured_unix_us: crate::clock::unix_now_us().saturating_sub(u64::from(us(total))),
            score,
            threshold,
            verdict,
            convert_us: us(convert),
            preprocess_us: us(preprocess),
            inference_us: us(inference),
            total_us: us(total),
            archived,
        }
    }

    /// A part the capture thread sent to the fail-safe policy before the model saw it (overrun,
    /// bad frame, missed frame), `since_part` after its capture or trigger.
    pub fn fail_safe(seq: u64, fault: crate::decide::Fault, since_part: Duration) -> PartRecord {
        let since = since_part.as_micros().min(u128::from(u32::MAX)) as u32;
        PartRecord {
            seq,
            captured_unix_us: crate::clock::unix_now_us().saturating_sub(u64::from(since)),
            score: f32::NAN,
            threshold: f32::NAN,
            verdict: Verdict::Fault(fault),
            convert_us: 0,
            preprocess_us: 0,
            inference_us: 0,
            total_us: since,
            archived: false,
        }
    }
}

/// What the station runs: the model, engine and source (fixed for a run).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StationInfo {
    pub version: &'static str,
    pub model_name: String,
    pub model_version: String,
    pub precision: String,
    pub model_sha256: String,
    pub engine: String,
    pub threads: usize,
    pub source: String,
    #[serde(skip)]
    pub archive_dir: Option<PathBuf>,
}

/// The live counts and health, as the inference thread last copied them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveCounts {
    pub summary: RunSummary,
    pub threshold: f32,
    pub alarm: bool,
    pub reject_pending: usize,
    pub drift_warnings: u64,
    pub onset_histogram: LatencyHistogram,
    /// The run has ended (the source ended or the station is stopping): these are final.
    pub ended: bool,
}

/// The frame the page shows: the region the model saw, shrunk to [`FRAME_VIEW_SIDE`], with its
/// anomaly map.
#[derive(Debug, Default)]
pub(crate) struct FrameView {
    pub seq: u64,
    pub score: f32,
    pub threshold: f32,
    pub verdict: Option<Verdict>,
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub map: Vec<f32>,
    pub map_width: usize,
    pub map_height: usize,
    /// Bumped at every copy (the page's JPEG is encoded once per version).
    pub version: u64,
}

/// A frame and its anomaly map, as the inference thread offers them.
pub struct FrameOffer<'a> {
    pub seq: u64,
    pub score: f32,
    pub threshold: f32,
    pub verdict: Verdict,
    /// RGB24, `width` x `height`.
    pub rgb: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub roi: Option<Roi>,
    /// Row-major, with its width and height.
    pub map: Option<(&'a [f32], usize, usize)>,
}

pub(crate) struct Hub {
    pub info: StationInfo,
    /// Where the threshold comes from ("decision.threshold" or the calibration file).
    pub threshold_origin: Mutex<String>,
    records: ArrayQueue<PartRecord>,
    pub records_dropped: AtomicU64,
    pub live: Mutex<LiveCounts>,
    pub frame: Mutex<FrameView>,
    /// Monotonic milliseconds until which a page wants frames.
    frame_wanted_until_ms: AtomicU64,
    frame_copied_ms: AtomicU64,
    /// Set by an authorised `POST /api/reload`; the line reloads between two frames.
    pub reload_requested: AtomicBool,
}

/// The line's handle on the telemetry: cheap to clone, every method returns at once.
#[derive(Clone)]
pub struct Telemetry {
    pub(crate) hub: Arc<Hub>,
}

impl Telemetry {
    pub fn new(info: StationInfo, threshold_origin: String) -> Telemetry {
        let frame = FrameView {
            rgb: Vec::with_capacity(FRAME_VIEW_SIDE * FRAME_VIEW_SIDE * 3),
            map: Vec::with_capacity(MAP_VIEW_SIDE * MAP_VIEW_SIDE),
            ..FrameView::default()
        };
        Telemetry {
            hub: Arc::new(Hub {
                info,
                threshold_origin: Mutex::new(threshold_origin),
                records: ArrayQueue::new(RECORD_QUEUE),
                records_dropped: AtomicU64::new(0),
                live: Mutex::new(LiveCounts::default()),
                frame: Mutex::new(frame),
                frame_wanted_until_ms: AtomicU64::new(0),
                frame_copied_ms: AtomicU64::new(0),
                reload_requested: AtomicBool::new(false),
            }),
        }
    }

    /// Hands one part's result over; never waits. A full queue drops it (counted).
    pub fn record(&self, r: PartRecord) {
        if self.hub.records.push(r).is_err() {
            self.hub.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next queued result (the telemetry thread).
    pub(crate) fn next_record(&self) -> Option<PartRecord> {
        self.hub.records.pop()
    }

    /// Copies the live counts unless a reader holds them right now (then the next part's copy
    /// will do). `ended` marks the final counts, which are always written.
    pub fn publish(&self, counts: &LiveCounts) {
        let guard = if counts.ended {
            self.hub.live.lock().ok()
        } else {
            self.hub.live.try_lock().ok()
        };
        if let Some(mut live) = guard {
            *live = *counts;
        }
    }

    /// The threshold was reloaded from `origin`.
    pub fn set_threshold_origin(&self, origin: &str) {
        if let Ok(mut o) = self.hub.threshold_origin.lock() {
            o.clear();
            o.push_str(origin);
        }
    }

    /// An authorised reload request is waiting (and is taken by this call).
    pub fn take_reload_request(&self) -> bool {
        self.hub.reload_requested.swap(false, Ordering::AcqRel)
    }

    /// A page is watching and the last copy is old enough: offer the frame.
    pub fn wants_frame(&self) -> bool {
        let now = ms(crate::clock::monotonic_now());
        now < self.hub.frame_wanted_until_ms.load(Ordering::Relaxed)
            && now.saturating_sub(self.hub.frame_copied_ms.load(Ordering::Relaxed))
                >= ms(FRAME_PERIOD)
    }

    /// A page asked for the frame (the telemetry thread).
    pub(crate) fn note_frame_interest(&self) {
        let until = ms(crate::clock::monotonic_now() + FRAME_INTEREST);
        self.hub
            .frame_wanted_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// Copies the frame's region of interest (shrunk) and its map, unless the page is reading the
    /// last copy right now. Allocation-free: the buffers hold the largest size from the start.
    pub fn offer_frame(&self, offer: &FrameOffer<'_>) {
        let Ok(mut view) = self.hub.frame.try_lock() else {
            return;
        };
        self.hub
            .frame_copied_ms
            .store(ms(crate::clock::monotonic_now()), Ordering::Relaxed);
        copy_frame(&mut view, offer);
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Nearest-neighbour shrink of the region of interest to at most `FRAME_VIEW_SIDE` (and of the map
/// to `MAP_VIEW_SIDE`), within the buffers' capacity.
fn copy_frame(view: &mut FrameView, o: &FrameOffer<'_>) {
    let roi = Roi::or_whole_frame(o.roi, o.width, o.height);
    view.map.clear();
    (view.width, view.height, view.map_width, view.map_height) = (0, 0, 0, 0);
    let (w, h) = fit(roi.width as usize, roi.height as usize, FRAME_VIEW_SIDE);
    if !roi.copy_rgb(o.rgb, (o.width, o.height), (w, h), &mut view.rgb) {
        return;
    }
    (view.width, view.height) = (w, h);
    if let Some((m, mw, mh)) = o
        .map
        .filter(|(m, mw, mh)| *mw > 0 && *mh > 0 && m.len() >= mw * mh)
    {
        let (w, h) = fit(mw, mh, MAP_VIEW_SIDE);
        for y in 0..h {
            let sy = y * mh / h;
            for x in 0..w {
                view.map.push(m[sy * mw + x * mw / w]);
            }
        }
        (view.map_width, view.map_height) = (w, h);
    }
    view.seq = o.seq;
    view.score = o.score;
    view.threshold = o.threshold;
    view.verdict = Some(o.verdict);
    view.version += 1;
}

/// `w` x `h` shrunk (never enlarged) to fit `side` on its longest side.
fn fit(w: usize, h: usize, side: usize) -> (usize, usize) {
    let long = w.max(h);
    if long <= side {
        return (w, h);
    }
    ((w * side / long).max(1), (h * side / long).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer<'a>(rgb: &'a [u8], w: u32, h: u32, map: &'a [f32]) -> FrameOffer<'a> {
        FrameOffer {
            seq: 7,
            score: 0.5,
            threshold: 0.2,
            verdict: Verdict::Reject,
            rgb,
            width: w,
            height: h,
            roi: Some(Roi {
                x: 100,
                y: 0,
                width: 800,
                height: 400,
            }),
            map: Some((map, 256, 256)),
        }
    }

    #[test]
    fn the_frame_copy_is_the_region_shrunk_and_allocates_nothing() {
        let (w, h) = (1000u32, 400u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        // Mark the region's first pixel.
        rgb[100 * 3] = 255;
        let map = vec![0.25f32; 256 * 256];
        let t = Telemetry::new(StationInfo::default(), "fixed".into());
        let before = t.hub.frame.lock().unwrap().rgb.as_ptr();
        t.offer_frame(&offer(&rgb, w, h, &map));
        let v = t.hub.frame.lock().unwrap();
        assert_eq!((v.width, v.height), (384, 192));
        assert_eq!((v.map_width, v.map_height), (128, 128));
        assert_eq!(v.rgb.len(), 384 * 192 * 3);
        assert_eq!(v.rgb[0], 255);
        assert_eq!(v.rgb.as_ptr(), before, "the buffer was reallocated");
        assert_eq!((v.seq, v.version), (7, 1));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let t = Telemetry::new(StationInfo::default(), "fixed".into());
        let r = PartRecord {
            seq: 0,
            captured_unix_us: 0,
            score: 0.1,
            threshold: 0.2,
            verdict: Verdict::Pass,
            convert_us: 0,
            preprocess_us: 0,
            inference_us: 0,
            total_us: 0,
            archived: false,
        };
        for _ in 0..RECORD_QUEUE + 5 {
            t.record(r);
        }
        assert_eq!(t.hub.records_dropped.load(Ordering::Relaxed), 5);
        let mut n = 0;
        while t.next_record().is_some() {
            n += 1;
        }
        assert_eq!(n, RECORD_QUEUE);
    }

    #[test]
    fn frames_are_wanted_only_while_a_page_watches() {
        let t = Telemetry::new(StationInfo::default(), "fixed".into());
        assert!(!t.wants_frame());
        t.note_frame_interest();
        assert!(t.wants_frame());
    }
}
