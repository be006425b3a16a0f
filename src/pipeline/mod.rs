//! The inspection loop: capture -> preprocess -> infer -> decide -> actuate.
//!
//! [`Inspector`] does one part at a time on the calling thread and owns every buffer it needs
//! (`bench`, `calibrate` and the allocation test use it). [`run`] is the line: a capture thread
//! (frames, format conversion into a small pool of frame buffers, part registration or trigger
//! matching), the inference thread (the caller), the reject actuator thread (deadlines, outputs), and
//! optional trigger and encoder input threads. Stages talk over bounded `heapless` queues; nothing
//! allocates per frame. It stops at the end of the input or on the stop flag (SIGINT/SIGTERM), after
//! every tracked part has passed the ejector, and leaves every output in its safe state.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heapless::spsc::Queue;

mod capture;

use capture::{
    encoder_thread, trigger_thread, CaptureEnd, CaptureLoop, RunFlags, Slot, Ticket,
    PENDING_TRIGGERS,
};
pub use capture::{TriggerMatcher, FRAME_BUFFERS};

use crate::archive::{Archive, ArchiveReason, ArchivedPart};
use crate::capture::{CaptureError, FrameSource, Label};
use crate::clock::Clock;
use crate::decide::{decide, Verdict};
use crate::drift::DriftMonitor;
use crate::infer::{Engine, ModelError};
use crate::input::{EdgeInput, EncoderPosition};
use crate::output::OutputError;
use crate::preprocess::Preprocessor;
use crate::reject::{spawn_actuator, ActuatorSettings, ActuatorShared, LinkQueue, Msg, Outputs};
use crate::schedule::{Fault, Judgement, PartStamp, ScheduleCounts};
use crate::stats::{LatencyWindow, LogThrottle, Stage, Stats, Summary};

/// Why a part could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("reject actuator thread: {0}")]
    Actuator(String),
    #[error(transparent)]
    Input(#[from] OutputError),
    #[error("the {stage} thread panicked ({message}); the outputs were put in their safe state")]
    Panicked {
        stage: &'static str,
        message: String,
    },
}

/// The message of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
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
            Ok(()) => match pre.fill_tensor(frame.width, frame.height, engine.input_mut()) {
                Err(e) => {
                    log::warn!("frame {}: {e}", frame.sequence);
                    (f32::NAN, Verdict::Fault)
                }
                Ok(()) => {
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
            },
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

/// Settings of the photo-eye trigger.
#[derive(Debug, Clone, Copy)]
pub struct TriggerSettings {
    pub debounce: Duration,
    /// A frame captured within this long after the trigger is that part's frame.
    pub window: Duration,
}

/// The line's hardware: outputs, and the optional trigger and encoder inputs.
pub struct LineIo {
    pub outputs: Outputs,
    pub trigger: Option<Box<dyn EdgeInput>>,
    pub encoder: Option<Box<dyn EdgeInput>>,
}

/// Options of [`run`].
pub struct RunOptions {
    pub actuator: ActuatorSettings,
    pub trigger: Option<TriggerSettings>,
    pub inference_cpu: Option<usize>,
    pub print_decisions: bool,
    pub status_interval: Option<Duration>,
    /// Stop after this many inspected frames (None: until the source ends or `stop` is set).
    pub max_frames: Option<u64>,
    /// Write the statistics as JSON to this file at each status interval and at the end.
    pub stats_json: Option<PathBuf>,
    /// Keep images of rejected parts (and, with `archive_faults`, of parts that could not be
    /// judged) with their heatmaps; the run waits for the queued writes at its end.
    pub archive: Option<Archive>,
    pub archive_faults: bool,
}

/// What a run did. Every part ends in exactly one of ok / ng / late / missed / faults / overflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    /// Frames inspected by the model.
    pub frames: u64,
    pub parts: u64,
    pub ok: u64,
    pub ng: u64,
    pub late: u64,
    pub missed: u64,
    pub faults: u64,
    pub overflows: u64,
    pub failsafe_rejected: u64,
    pub failsafe_passed: u64,
    /// Unreadable replay images, frames with no trigger, camera stalls.
    pub skipped: u64,
    pub untriggered: u64,
    pub stalls: u64,
    pub pulses: u64,
    pub merged: u64,
    pub gap_delayed: u64,
    pub output_errors: u64,
    /// Messages to the actuator that found its queue full.
    pub lost_messages: u64,
    /// Reject archive: images written, parts not archived because the writer was behind, writes
    /// that failed (disk full, ...).
    pub archived: u64,
    pub archive_dropped: u64,
    pub archive_failed: u64,
}

/// Latency statistics of a run, per stage and for reject onsets.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunLatency {
    pub stages: Vec<(&'static str, Summary)>,
    /// Reject pulse onset minus the part's due time (time mode).
    pub onset: Summary,
}

/// Runs the line until the source ends, `max_frames` frames are inspected or `stop` is set. Parts
/// still between camera and ejector are tracked to the end; every output is left in its safe state.
pub fn run(
    inspector: &mut Inspector,
    io: LineIo,
    mut opts: RunOptions,
    stop: &AtomicBool,
    reload: Option<&Reloader<'_>>,
) -> Result<(RunSummary, RunLatency), StageError> {
    let Inspector {
        source,
        pre,
        engine,
        threshold,
        clock,
        stats,
        drift,
    } = inspector;
    let clock = clock.clone();
    let LineIo {
        outputs,
        trigger,
        encoder,
    } = io;
    let mut capture_q = LinkQueue::new();
    let mut infer_q = LinkQueue::new();
    let mut trigger_q = LinkQueue::new();
    let mut tickets: Queue<Ticket, { FRAME_BUFFERS + 1 }> = Queue::new();
    let mut free: Queue<usize, { FRAME_BUFFERS + 1 }> = Queue::new();
    let mut triggers: Queue<PartStamp, PENDING_TRIGGERS> = Queue::new();
    let slots: [Mutex<Slot>; FRAME_BUFFERS] = Default::default();
    let shared = ActuatorShared::default();
    shared.mark_alive(clock.now());
    let position = encoder.as_ref().map(|_| EncoderPosition::new());
    let flags = RunFlags {
        capture_stop: AtomicBool::new(false),
        capture_done: AtomicBool::new(false),
        inputs_stop: AtomicBool::new(false),
        input_error: Mutex::new(None),
    };
    let trigger_settings = opts.trigger;
    let fifo_priority = opts.actuator.fifo_priority;
    std::thread::scope(|scope| {
        let ([capture_link, mut infer_link, trigger_link], actuator) = spawn_actuator(
            scope,
            [&mut capture_q, &mut infer_q, &mut trigger_q],
            outputs,
            clock.clone(),
            opts.actuator,
            position.as_ref(),
            &shared,
        )
        .map_err(|e| StageError::Actuator(format!("cannot start: {e}")))?;
        // On every way out of this block (a panic included): stop the actuator (safe state) and
        // the capture and input threads.
        // On the normal way out the actuator lets pending parts reach the ejector; on an error or
        // while unwinding from a panic it does not wait: the outputs go to their safe state at
        // once and the input threads stop.
        struct StopOnDrop<'a> {
            shared: &'a ActuatorShared,
            flags: &'a RunFlags,
            actuator: std::thread::Thread,
            completed: bool,
        }
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.flags.capture_stop.store(true, Ordering::Release);
                if !self.completed {
                    self.shared.abort.store(true, Ordering::Release);
                    self.flags.inputs_stop.store(true, Ordering::Release);
                }
                self.shared.stop.store(true, Ordering::Release);
                self.actuator.unpark();
            }
        }
        let mut stopper = StopOnDrop {
            shared: &shared,
            flags: &flags,
            actuator: actuator.thread().clone(),
            completed: false,
        };

        let (trig_producer, trig_consumer) = triggers.split();
        let mut input_threads = Vec::new();
        if let Some(enc) = encoder {
            let pos = position.as_ref();
            let flags = &flags;
            input_threads.push(
                std::thread::Builder::new()
                    .name("encoder".into())
                    .spawn_scoped(scope, move || {
                        encoder_thread(enc, pos, flags, fifo_priority)
                    })
                    .map_err(|e| {
                        StageError::Actuator(format!("cannot start encoder thread: {e}"))
                    })?,
            );
        }
        let trig_consumer = match (trigger, trigger_settings) {
            (Some(input), Some(ts)) => {
                let pos = position.as_ref();
                let flags = &flags;
                input_threads.push(
                    std::thread::Builder::new()
                        .name("trigger".into())
                        .spawn_scoped(scope, move || {
                            trigger_thread(input, ts, trig_producer, trigger_link, pos, flags)
                        })
                        .map_err(|e| {
                            StageError::Actuator(format!("cannot start trigger thread: {e}"))
                        })?,
                );
                Some(trig_consumer)
            }
            _ => None,
        };

        let (ticket_tx, mut ticket_rx) = tickets.split();
        let (mut free_tx, free_rx) = free.split();
        let inference_thread = std::thread::current();
        let capture = {
            let clock = clock.clone();
            let slots = &slots;
            let flags = &flags;
            let shared = &shared;
            let position = position.as_ref();
            let window = trigger_settings.map(|t| t.window);
            std::thread::Builder::new()
                .name("capture".into())
                .spawn_scoped(scope, move || {
                    // Also on a panic: inference must learn that no more frames come.
                    struct DoneOnDrop<'a>(&'a RunFlags, std::thread::Thread);
                    impl Drop for DoneOnDrop<'_> {
                        fn drop(&mut self) {
                            self.0.capture_done.store(true, Ordering::Release);
                            self.1.unpark();
                        }
                    }
                    let _done = DoneOnDrop(flags, inference_thread.clone());
                    let mut c = CaptureLoop {
                        source: &mut **source,
                        clock: &*clock,
                        slots,
                        link: capture_link,
                        tickets: ticket_tx,
                        free: free_rx,
                        triggers: trig_consumer,
                        matcher: window.map(TriggerMatcher::new),
                        position,
                        flags,
                        shared,
                        inference: inference_thread,
                        max_frames: opts.max_frames,
                        overrun_log: LogThrottle::new(Duration::from_secs(1)),
                        end: CaptureEnd {
                            error: None,
                            skipped: 0,
                            convert: LatencyWindow::default(),
                            untriggered: 0,
                            stalls: 0,
                        },
                    };
                    c.run();
                    c.end.skipped = c.source.skipped();
                    c.end
                })
                .map_err(|e| StageError::Actuator(format!("cannot start capture thread: {e}")))?
        };

        // The inference loop, on this thread. A panic in it (a bug in a stage) ends the run like a
        // fault: the outputs go to their safe state at once, and the final counts are still
        // written and logged.
        let mut frames = 0u64;
        let looped = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), StageError> {
            crate::realtime::apply("inference", 0, opts.inference_cpu);
            let mut next_status = opts.status_interval.map(|i| clock.now() + i);
            let mut stopping = false;
            crate::service::ready();
            loop {
                // A sign of life for systemd's watchdog: this loop turns at least every 20 ms, or
                // once per inference.
                crate::service::watchdog(crate::clock::monotonic_now());
                if stop.load(Ordering::Relaxed) || opts.max_frames.is_some_and(|m| frames >= m) {
                    flags.capture_stop.store(true, Ordering::Release);
                    if !stopping {
                        stopping = true;
                        crate::service::stopping();
                    }
                }
                if let Some(r) = reload.filter(|r| r.flag.swap(false, Ordering::AcqRel)) {
                    match (r.load)() {
                        Ok((t, p99)) => {
                            log::info!("reloaded: threshold {} -> {t}", *threshold);
                            *threshold = t;
                            *drift = p99.map(|p| DriftMonitor::new(p, 0.01));
                        }
                        Err(e) => log::error!("reload failed, threshold stays {}: {e}", *threshold),
                    }
                }
                if let (Some(due), Some(interval)) = (next_status, opts.status_interval) {
                    let now = clock.now();
                    if now >= due {
                        status_line(stats, &shared, frames);
                        if let Some(p) = &opts.stats_json {
                            write_json(
                                p,
                                &summarize(stats, &shared, frames, (0, 0)),
                                stats,
                                &shared,
                            );
                        }
                        next_status = Some(now + interval);
                    }
                }
                if actuator.is_finished() {
                    return Err(StageError::Actuator(
                        "stopped unexpectedly; the outputs were put in their safe state".into(),
                    ));
                }
                let Some(ticket) = ticket_rx.dequeue() else {
                    if flags.capture_done.load(Ordering::Acquire) && !ticket_rx.ready() {
                        break;
                    }
                    std::thread::park_timeout(Duration::from_millis(20));
                    continue;
                };
                let Ok(slot) = slots[ticket.slot].lock() else {
                    return Err(StageError::Actuator("frame buffer poisoned".into()));
                };
                let t1 = clock.now();
                let filled =
                    pre.fill_tensor_from(&slot.rgb, slot.width, slot.height, engine.input_mut());
                let t2 = clock.now();
                stats.record(Stage::Preprocess, t2.saturating_sub(t1));
                // A region of interest that does not fit the frame is a bad frame; an inference error
                // or a non-finite score an inference fault. Both are fail-safe, never a pass.
                // What the archive gets of this part (never waits: a busy writer drops it, counted).
                let archive_part = |reason, score, map| {
                    if let Some(a) = &opts.archive {
                        if reason == ArchiveReason::Reject || opts.archive_faults {
                            a.submit(&ArchivedPart {
                                seq: ticket.stamp.seq,
                                reason,
                                score,
                                frame: &slot.rgb,
                                width: slot.width,
                                height: slot.height,
                                roi: pre.roi(),
                                map,
                            });
                        }
                    }
                };
                let (score, verdict, fault, t3) = match filled {
                    Err(e) => {
                        log::warn!("part {}: {e}", ticket.stamp.seq);
                        archive_part(ArchiveReason::Fault, f32::NAN, None);
                        (f32::NAN, Verdict::Fault, Fault::BadFrame, t2)
                    }
                    Ok(()) => {
                        let result = engine.run();
                        let t3 = clock.now();
                        stats.record(Stage::Inference, t3.saturating_sub(t2));
                        match result {
                            Ok(inf) => {
                                let verdict = decide(inf.score, *threshold);
                                let reason = match verdict {
                                    Verdict::Pass => None,
                                    Verdict::Reject => Some(ArchiveReason::Reject),
                                    Verdict::Fault => Some(ArchiveReason::Fault),
                                };
                                if let Some(reason) = reason {
                                    archive_part(
                                        reason,
                                        inf.score,
                                        Some((inf.map, inf.width, inf.height)),
                                    );
                                }
                                (inf.score, verdict, Fault::Inference, t3)
                            }
                            Err(e) => {
                                log::warn!("part {}: {e}", ticket.stamp.seq);
                                archive_part(ArchiveReason::Fault, f32::NAN, None);
                                (f32::NAN, Verdict::Fault, Fault::Inference, t3)
                            }
                        }
                    }
                };
                let judgement = match verdict {
                    Verdict::Pass => Judgement::Pass,
                    Verdict::Reject => Judgement::Reject,
                    Verdict::Fault => Judgement::Fault(fault),
                };
                let decided = clock.now();
                infer_link.send(Msg::Decide {
                    seq: ticket.stamp.seq,
                    judgement,
                    at: decided,
                    count: position.as_ref().map_or(0, |p| p.count_at(decided)),
                });
                stats.record(Stage::Decision, decided.saturating_sub(t3));
                stats.record(Stage::Total, decided.saturating_sub(ticket.frame_time));
                frames += 1;
                match verdict {
                    Verdict::Pass => {
                        stats.ok += 1;
                        if let Some(d) = drift.as_mut() {
                            d.observe(score);
                        }
                    }
                    Verdict::Reject => stats.ng += 1,
                    Verdict::Fault => stats.faults += 1,
                }
                stats.frames = frames;
                if opts.print_decisions {
                    let origin =
                        (!slot.origin.as_os_str().is_empty()).then_some(slot.origin.as_path());
                    print_outcome(&Outcome {
                        sequence: ticket.stamp.seq,
                        captured: ticket.frame_time,
                        decided,
                        score,
                        verdict,
                        label: origin.and_then(Label::from_path),
                        origin,
                    });
                }
                drop(slot);
                // Cannot fail: there are as many places as frame buffers.
                let _ = free_tx.enqueue(ticket.slot);
                // An unpaced replay's capture thread waits for a free buffer.
                capture.thread().unpark();
                shared.mark_alive(decided);
            }
            Ok(())
        }));
        let mut failure = match looped {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(payload) => Some(StageError::Panicked {
                stage: "inference",
                message: panic_message(payload.as_ref()),
            }),
        };
        flags.capture_stop.store(true, Ordering::Release);
        let end = capture.join();
        // After a normal end the tracked parts reach the ejector first; after a failure the
        // outputs go to their safe state at once.
        stopper.completed = failure.is_none() && end.is_ok();
        drop(stopper);
        let outputs_back = actuator.join();
        flags.inputs_stop.store(true, Ordering::Release);
        for t in input_threads {
            let _ = t.join();
        }
        let mut counts_of_capture = (0, 0);
        match end {
            Ok(CaptureEnd {
                error,
                skipped,
                convert,
                untriggered,
                stalls,
            }) => {
                stats.set_window(Stage::Convert, convert);
                stats.skipped = skipped;
                counts_of_capture = (untriggered, stalls);
                if let Some(e) = error {
                    failure.get_or_insert(StageError::Capture(e));
                }
            }
            Err(payload) => {
                failure.get_or_insert(StageError::Panicked {
                    stage: "capture",
                    message: panic_message(payload.as_ref()),
                });
            }
        }
        if outputs_back.is_err() {
            failure.get_or_insert(StageError::Actuator(
                "panicked; the outputs were put in their safe state".into(),
            ));
        }
        if let Some(e) = flags.input_error.lock().ok().and_then(|mut e| e.take()) {
            failure.get_or_insert(StageError::Input(e));
        }
        let mut summary = summarize(stats, &shared, frames, counts_of_capture);
        if let Some(a) = opts.archive.take() {
            let c = a.finish();
            (
                summary.archived,
                summary.archive_dropped,
                summary.archive_failed,
            ) = (c.archived, c.dropped, c.failed);
        }
        let latency = latency_of(stats, &shared);
        if let Some(p) = &opts.stats_json {
            write_json(p, &summary, stats, &shared);
        }
        if let Some(e) = failure {
            log::error!(
                "run ended by a fault ({e}); final counts: frames {} parts {} OK {} NG {} late {} missed {} faults {} overflows {} pulses {}",
                summary.frames,
                summary.parts,
                summary.ok,
                summary.ng,
                summary.late,
                summary.missed,
                summary.faults,
                summary.overflows,
                summary.pulses
            );
            return Err(e);
        }
        Ok((summary, latency))
    })
}

fn summarize(
    stats: &Stats,
    shared: &ActuatorShared,
    frames: u64,
    (untriggered, stalls): (u64, u64),
) -> RunSummary {
    let (c, output_errors) = shared
        .report
        .lock()
        .map(|r| (r.counts, r.output_errors))
        .unwrap_or((ScheduleCounts::default(), 0));
    RunSummary {
        frames,
        parts: c.parts,
        ok: c.ok,
        ng: c.ng,
        late: c.late,
        missed: c.missed,
        faults: c.faults,
        overflows: c.overflows,
        failsafe_rejected: c.failsafe_rejected,
        failsafe_passed: c.failsafe_passed,
        skipped: stats.skipped,
        untriggered,
        stalls,
        pulses: c.pulses,
        merged: c.merged,
        gap_delayed: c.gap_delayed,
        output_errors,
        lost_messages: shared.lost.load(Ordering::Relaxed),
        ..RunSummary::default()
    }
}

fn latency_of(stats: &mut Stats, shared: &ActuatorShared) -> RunLatency {
    RunLatency {
        stages: Stage::ALL
            .iter()
            .map(|&s| (s.name(), stats.summary(s)))
            .collect(),
        onset: shared
            .report
            .lock()
            .map(|mut r| r.onset_summary())
            .unwrap_or_default(),
    }
}

fn status_line(stats: &mut Stats, shared: &ActuatorShared, frames: u64) {
    let lat = stats.summary(Stage::Total);
    let (c, pending, onset) = match shared.report.lock() {
        Ok(mut r) => (r.counts, r.pending, r.onset_summary()),
        Err(_) => return,
    };
    crate::service::status(&format!(
        "parts {} inspected {} OK {} NG {} fail-safe {} pending {}",
        c.parts,
        frames,
        c.ok,
        c.ng,
        c.late + c.missed + c.faults + c.overflows,
        pending
    ));
    log::info!(
        "status: parts {} inspected {} OK {} NG {} late {} missed {} faults {} overflows {} pending {} | capture-to-decision median {:.1} ms | reject onset p99 {:.3} ms",
        c.parts,
        frames,
        c.ok,
        c.ng,
        c.late,
        c.missed,
        c.faults,
        c.overflows,
        pending,
        lat.median_us as f64 / 1000.0,
        onset.p99_us as f64 / 1000.0
    );
}

/// Writes the statistics as JSON (atomically: a temporary file renamed over the target).
fn write_json(path: &Path, summary: &RunSummary, stats: &mut Stats, shared: &ActuatorShared) {
    let latency = latency_of(stats, shared);
    let stages: serde_json::Map<String, serde_json::Value> = latency
        .stages
        .iter()
        .map(|(n, s)| (n.to_string(), serde_json::to_value(s).unwrap_or_default()))
        .collect();
    let doc = serde_json::json!({
        "counts": summary,
        "latency_us": stages,
        "reject_onset_error": latency.onset,
    });
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec_pretty(&doc)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        log::warn!("cannot write statistics to {}: {e}", path.display());
    }
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
