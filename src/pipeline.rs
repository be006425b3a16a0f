//! The inspection loop: capture -> preprocess -> infer -> decide -> actuate.
//!
//! [`Inspector`] does one part at a time and owns every buffer it needs; [`run`] drives it with the
//! reject actuator in its own thread, prints decisions and status lines, and stops on end of input or
//! on the stop flag (set by SIGINT/SIGTERM).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::capture::{CaptureError, FrameSource, Label};
use crate::clock::Clock;
use crate::decide::{decide, Verdict};
use crate::drift::DriftMonitor;
use crate::infer::{Engine, ModelError};
use crate::output::OutputPin;
use crate::preprocess::Preprocessor;
use crate::reject::{spawn_actuator, PulseQueue, PulseSettings};
use crate::stats::{Stage, Stats};

/// Why a part could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("reject actuator thread: {0}")]
    Actuator(String),
}

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
        let t1 = clock.now();
        stats.record(Stage::Convert, t1.saturating_sub(t0));
        let (score, verdict) = match converted {
            Err(e) => {
                log::warn!("frame {}: {e}", frame.sequence);
                (f32::NAN, Verdict::Fault)
            }
            Ok(()) => {
                pre.fill_tensor(frame.width, frame.height, engine.input_mut());
                let t2 = clock.now();
                stats.record(Stage::Preprocess, t2.saturating_sub(t1));
                let result = engine.run();
                let t3 = clock.now();
                stats.record(Stage::Inference, t3.saturating_sub(t2));
                let r = match result {
                    Ok(inf) => (inf.score, decide(inf.score, *threshold)),
                    Err(e) => {
                        log::warn!("frame {}: {e}", frame.sequence);
                        (f32::NAN, Verdict::Fault)
                    }
                };
                stats.record(Stage::Decision, clock.now().saturating_sub(t3));
                r
            }
        };
        let decided = clock.now();
        stats.record(Stage::Total, decided.saturating_sub(frame.timestamp));
        stats.frames += 1;
        match verdict {
            Verdict::Pass => {
                stats.ok += 1;
                if let Some(d) = drift {
                    d.observe(score);
                }
            }
            Verdict::Reject => stats.ng += 1,
            Verdict::Fault => stats.faults += 1,
        }
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

/// Loads the threshold and, with a calibration, its p99 good score (for the drift monitor).
pub type ThresholdLoader<'a> = Box<dyn Fn() -> Result<(f32, Option<f32>), String> + 'a>;

/// Reloads the threshold between two frames when `flag` is set (SIGHUP): no frame is dropped, and
/// a calibration that fails to load leaves the current threshold in force.
pub struct Reloader<'a> {
    pub flag: &'a AtomicBool,
    pub load: ThresholdLoader<'a>,
}

/// Options of [`run`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub pulse: PulseSettings,
    pub print_decisions: bool,
    pub status_interval: Option<Duration>,
    /// Stop after this many frames (None: until the source ends or `stop` is set).
    pub max_frames: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub frames: u64,
    pub ok: u64,
    pub ng: u64,
    pub faults: u64,
    pub skipped: u64,
    pub pulses: u64,
    pub queue_overflows: u64,
    pub output_errors: u64,
}

/// Runs the inspection loop until the source ends, `max_frames` is reached or `stop` is set.
/// The reject line is driven by an actuator thread and is left in its safe state; it is returned so
/// the caller can inspect a simulated line.
pub fn run(
    inspector: &mut Inspector,
    line: Box<dyn OutputPin>,
    opts: RunOptions,
    stop: &AtomicBool,
    reload: Option<&Reloader<'_>>,
) -> Result<(RunSummary, Box<dyn OutputPin>), StageError> {
    let mut queue = PulseQueue::new();
    let actuator_stop = AtomicBool::new(false);
    let clock = inspector.clock.clone();
    std::thread::scope(|scope| {
        let (mut handle, join) = spawn_actuator(
            scope,
            &mut queue,
            line,
            clock.clone(),
            opts.pulse,
            &actuator_stop,
        )
        .map_err(|e| StageError::Actuator(format!("cannot start: {e}")))?;
        // Stops the actuator (safe state) on every way out of this block, a panic included.
        struct StopOnDrop<'a>(&'a AtomicBool, std::thread::Thread);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                self.1.unpark();
            }
        }
        let _stopper = StopOnDrop(&actuator_stop, join.thread().clone());
        let mut next_status = opts.status_interval.map(|i| clock.now() + i);
        let mut result = Ok(());
        while !stop.load(Ordering::Relaxed) {
            if opts.max_frames.is_some_and(|m| inspector.stats.frames >= m) {
                break;
            }
            if let Some(r) = reload.filter(|r| r.flag.swap(false, Ordering::AcqRel)) {
                match (r.load)() {
                    Ok((t, p99)) => {
                        log::info!("reloaded: threshold {} -> {t}", inspector.threshold);
                        inspector.threshold = t;
                        inspector.drift = p99.map(|p| DriftMonitor::new(p, 0.01));
                    }
                    Err(e) => log::error!(
                        "reload failed, threshold stays {}: {e}",
                        inspector.threshold
                    ),
                }
            }
            let outcome = match inspector.inspect_next() {
                Ok(Some(o)) => o,
                Ok(None) => break,
                Err(e) => {
                    result = Err(StageError::Capture(e));
                    break;
                }
            };
            if outcome.verdict.fires_reject() {
                handle.fire_at(outcome.decided);
            }
            if opts.print_decisions {
                print_outcome(&outcome);
            }
            if let (Some(due), Some(interval)) = (next_status, opts.status_interval) {
                let now = clock.now();
                if now >= due {
                    let s = &mut inspector.stats;
                    let lat = s.summary(Stage::Total);
                    log::info!(
                        "status: frames {} OK {} NG {} faults {} skipped {} median latency {:.1} ms",
                        s.frames,
                        s.ok,
                        s.ng,
                        s.faults,
                        s.skipped,
                        lat.median_us as f64 / 1000.0
                    );
                    next_status = Some(now + interval);
                }
            }
        }
        drop(_stopper);
        let line = join.join().map_err(|_| {
            StageError::Actuator("panicked; the reject line was put in its safe state".into())
        })?;
        result?;
        inspector.stats.skipped = inspector.source.skipped();
        let s = &inspector.stats;
        let c = &handle.counters;
        Ok((
            RunSummary {
                frames: s.frames,
                ok: s.ok,
                ng: s.ng,
                faults: s.faults,
                skipped: s.skipped,
                pulses: c.pulses.load(Ordering::Relaxed),
                queue_overflows: c.overflows.load(Ordering::Relaxed),
                output_errors: c.output_errors.load(Ordering::Relaxed),
            },
            line,
        ))
    })
}

fn print_outcome(o: &Outcome<'_>) {
    let name = o.origin.map(|p| {
        let file = p.file_name().unwrap_or_default().to_string_lossy();
        let dir = p
            .parent()
            .and_then(|d| d.file_name())
            .unwrap_or_default()
            .to_string_lossy();
        (dir, file)
    });
    match name {
        Some((dir, file)) => println!(
            "part {:>5}  {:<6} score {:.4}  {dir}/{file}",
            o.sequence,
            o.verdict.as_str(),
            o.score
        ),
        None => println!(
            "part {:>5}  {:<6} score {:.4}",
            o.sequence,
            o.verdict.as_str(),
            o.score
        ),
    }
}
