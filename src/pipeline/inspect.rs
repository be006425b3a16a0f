//! One part at a time: [`Inspector`] (source -> inspect step, on the calling thread, for `bench`,
//! `calibrate` and the allocation test) and the inspect step itself ([`InspectStep`]), which the
//! threaded line shares.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{CaptureError, FrameSource, Label};
use crate::clock::Clock;
use crate::decide::{decide, Fault, Verdict};
use crate::drift::DriftMonitor;
use crate::infer::{Engine, Inference};
use crate::preprocess::Preprocessor;
use crate::stats::{Stage, Stats};

/// The result of inspecting one frame.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub sequence: u64,
    pub captured: Duration,
    pub decided: Duration,
    pub score: f32,
    pub verdict: Verdict,
    pub label: Option<Label>,
    pub origin: Option<&'a Path>,
}

/// One stage after another on one frame, with preallocated buffers.
pub struct Inspector {
    pub source: Box<dyn FrameSource>,
    pub pre: Preprocessor,
    pub engine: Box<dyn Engine>,
    pub threshold: f32,
    pub clock: Arc<dyn Clock>,
    pub stats: Stats,
    /// Watches passed parts' scores against the calibration (None without a calibration).
    pub drift: Option<DriftMonitor>,
}

impl Inspector {
    pub fn new(
        source: Box<dyn FrameSource>,
        engine: Box<dyn Engine>,
        threshold: f32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let pre = Preprocessor::new(engine.info().input);
        Inspector {
            source,
            pre,
            engine,
            threshold,
            clock,
            stats: Stats::default(),
            drift: None,
        }
    }

    /// Inspects the next frame. `Ok(None)`: the source has ended. A frame that cannot be converted or
    /// inferred is a [`Verdict::Fault`] outcome (fail-safe), not an error; only a source failure is.
    pub fn inspect_next(&mut self) -> Result<Option<Outcome<'_>>, CaptureError> {
        let Inspector {
            source,
            pre,
            engine,
            threshold,
            clock,
            stats,
            drift,
        } = self;
        stats.skipped = source.skipped();
        let Some(frame) = source.next_frame()? else {
            return Ok(None);
        };
        let t0 = clock.now();
        let converted = pre.convert(&frame);
        stats.record(Stage::Convert, clock.now().saturating_sub(t0));
        let rgb = match converted {
            Ok(()) => Rgb::Converted {
                width: frame.width,
                height: frame.height,
            },
            Err(e) => Rgb::Unreadable(e),
        };
        let judged = InspectStep {
            pre,
            engine: &mut **engine,
            threshold: *threshold,
            clock: &**clock,
            stats,
            drift,
        }
        .judge(rgb, frame.sequence, frame.timestamp);
        let (score, verdict, decided) = (judged.score, judged.verdict, judged.decided);
        Ok(Some(Outcome {
            sequence: frame.sequence,
            captured: frame.timestamp,
            decided,
            score,
            verdict,
            label: frame.label(),
            origin: frame.origin,
        }))
    }
}

/// Where the inspect step finds a frame's RGB pixels.
pub(super) enum Rgb<'f> {
    /// The preprocessor's own buffer, filled by [`Preprocessor::convert`].
    Converted { width: u32, height: u32 },
    /// A frame buffer the capture thread converted.
    Buffer {
        rgb: &'f [u8],
        width: u32,
        height: u32,
    },
    /// The frame could not be converted (truncated, corrupt).
    Unreadable(CaptureError),
}

/// The inspect step, the one way a frame becomes a verdict for both [`Inspector::inspect_next`]
/// and the threaded [`run`](super::run): preprocess -> infer -> decide, each stage timed into `stats`, the
/// verdict counted and a passed part's score given to the drift monitor. It borrows the stages for
/// one frame.
pub(super) struct InspectStep<'a, 'e> {
    pub(super) pre: &'a mut Preprocessor,
    /// Borrowed for as long as the verdict's anomaly map is read (`Judged<'e>`).
    pub(super) engine: &'e mut dyn Engine,
    pub(super) threshold: f32,
    pub(super) clock: &'a dyn Clock,
    pub(super) stats: &'a mut Stats,
    pub(super) drift: &'a mut Option<DriftMonitor>,
}

/// What the inspect step made of one frame.
pub(super) struct Judged<'e> {
    pub(super) score: f32,
    pub(super) verdict: Verdict,
    /// When the verdict was reached.
    pub(super) decided: Duration,
    /// The model's output (with the anomaly map, for the archive) when the model ran.
    pub(super) inference: Option<Inference<'e>>,
    /// How long preprocessing and the model took (zero when they did not run).
    pub(super) preprocess_time: Duration,
    pub(super) inference_time: Duration,
}

impl<'e> InspectStep<'_, 'e> {
    /// Judges part `seq`, captured (or triggered) at `captured`. An unreadable frame or a tensor
    /// that cannot be filled (a region of interest outside the frame) is a bad frame; an inference
    /// error or a non-finite score an inference fault. Both are fail-safe verdicts, never a pass.
    pub(super) fn judge(self, rgb: Rgb<'_>, seq: u64, captured: Duration) -> Judged<'e> {
        let InspectStep {
            pre,
            engine,
            threshold,
            clock,
            stats,
            drift,
        } = self;
        let t1 = clock.now();
        let input = engine.input_mut();
        let filled = match rgb {
            Rgb::Converted { width, height } => pre.fill_tensor(width, height, input),
            Rgb::Buffer { rgb, width, height } => pre.fill_tensor_from(rgb, width, height, input),
            Rgb::Unreadable(e) => Err(e),
        };
        let (mut preprocess_time, mut inference_time) = (Duration::ZERO, Duration::ZERO);
        let (score, verdict, inference, t3) = match filled {
            Err(e) => {
                log::warn!("part {seq}: {e}");
                (f32::NAN, Verdict::Fault(Fault::BadFrame), None, t1)
            }
            Ok(()) if pre.spec().align.is_some() && pre.pose().is_none() => {
                // nothing to inspect: the model was trained on the part found and turned
                log::warn!("part {seq}: no part found in the frame; the model needs the part in view against its background");
                (f32::NAN, Verdict::Fault(Fault::NoPart), None, clock.now())
            }
            Ok(()) => {
                let t2 = clock.now();
                preprocess_time = t2.saturating_sub(t1);
                stats.record(Stage::Preprocess, preprocess_time);
                let result = engine.run();
                let t3 = clock.now();
                inference_time = t3.saturating_sub(t2);
                stats.record(Stage::Inference, inference_time);
                match result {
                    Ok(inf) => (inf.score, decide(inf.score, threshold), Some(inf), t3),
                    Err(e) => {
                        log::warn!("part {seq}: {e}");
                        (f32::NAN, Verdict::Fault(Fault::Inference), None, t3)
                    }
                }
            }
        };
        let decided = clock.now();
        stats.record(Stage::Decision, decided.saturating_sub(t3));
        stats.record(Stage::Total, decided.saturating_sub(captured));
        stats.frames += 1;
        match verdict {
            Verdict::Pass => {
                stats.ok += 1;
                if let Some(d) = drift.as_mut() {
                    d.observe(score);
                }
            }
            Verdict::Reject => stats.ng += 1,
            Verdict::Fault(_) => stats.faults += 1,
        }
        Judged {
            score,
            verdict,
            decided,
            inference,
            preprocess_time,
            inference_time,
        }
    }
}
