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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use heapless::spsc::Queue;

mod capture;
mod inspect;
mod report;

use capture::{
    encoder_thread, trigger_thread, CaptureEnd, CaptureLoop, RunFlags, Slot, Ticket,
    PENDING_TRIGGERS,
};
pub use capture::{TriggerMatcher, FRAME_BUFFERS};
use inspect::{InspectStep, Rgb};
pub use inspect::{Inspector, Outcome};
use report::{
    latency_of, live_counts, print_outcome, publish_live, status_line, summarize, write_json,
    LiveSources,
};
pub use report::{RunLatency, RunSummary};

use crate::archive::{Archive, ArchiveReason, ArchivedPart};
use crate::capture::{CaptureError, Label};
use crate::decide::Verdict;
use crate::drift::DriftMonitor;
use crate::gpio::GpioError;
use crate::gpio::{EdgeInput, EncoderPosition};
use crate::infer::ModelError;
use crate::reject::{spawn_actuator, ActuatorSettings, ActuatorShared, LinkQueue, Msg, Outputs};
use crate::schedule::PartStamp;
use crate::stats::{LatencyWindow, LogThrottle, Stage};
use crate::telemetry::{FrameOffer, PartRecord, Telemetry};

/// The telemetry's counts are refreshed at least this often (and after every part).
const LIVE_PERIOD: Duration = Duration::from_millis(200);

/// Why a part could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot start the {thread} thread: {source}")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the reject actuator thread stopped unexpectedly; the outputs were put in their safe state"
    )]
    ActuatorStopped,
    #[error("a frame buffer's lock was poisoned by a panic in the capture thread")]
    FrameBufferPoisoned,
    #[error(transparent)]
    Input(#[from] GpioError),
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

/// Loads the threshold, with a calibration its p99 good score (for the drift monitor), and where
/// it came from.
pub type ThresholdLoader<'a> = Box<dyn Fn() -> Result<(f32, Option<f32>, String), String> + 'a>;

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
    /// Part results, live counts and frames for the page, `/metrics` and MQTT (never waits).
    pub telemetry: Option<Telemetry>,
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
        stalls: AtomicU64::new(0),
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
        .map_err(|source| StageError::Spawn {
            thread: "reject actuator",
            source,
        })?;
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
                    .map_err(|source| StageError::Spawn {
                        thread: "encoder",
                        source,
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
                        .map_err(|source| StageError::Spawn {
                            thread: "trigger",
                            source,
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
            let telemetry = opts.telemetry.as_ref();
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
                        telemetry,
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
                .map_err(|source| StageError::Spawn {
                    thread: "capture",
                    source,
                })?
        };

        // The inference loop, on this thread. A panic in it (a bug in a stage) ends the run like a
        // fault: the outputs go to their safe state at once, and the final counts are still
        // written and logged.
        let mut frames = 0u64;
        let looped = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), StageError> {
            crate::realtime::apply("inference", 0, opts.inference_cpu);
            let mut next_status = opts.status_interval.map(|i| clock.now() + i);
            // The telemetry's counts also move while no frame comes (parts reaching the ejector).
            let mut next_live = clock.now();
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
                let asked_over_http = opts
                    .telemetry
                    .as_ref()
                    .is_some_and(Telemetry::take_reload_request);
                if let Some(r) =
                    reload.filter(|r| r.flag.swap(false, Ordering::AcqRel) || asked_over_http)
                {
                    match (r.load)() {
                        Ok((t, p99, origin)) => {
                            log::info!("reloaded: threshold {} -> {t} from {origin}", *threshold);
                            *threshold = t;
                            *drift = p99.map(|p| DriftMonitor::new(p, 0.01));
                            if let Some(tm) = &opts.telemetry {
                                tm.set_threshold_origin(&origin);
                            }
                        }
                        Err(e) => log::error!("reload failed, threshold stays {}: {e}", *threshold),
                    }
                }
                if let Some(t) = &opts.telemetry {
                    let now = clock.now();
                    if now >= next_live {
                        publish_live(
                            t,
                            LiveSources {
                                stats,
                                shared: &shared,
                                frames,
                                stalls: flags.stalls.load(Ordering::Relaxed),
                                archive: opts.archive.as_ref(),
                                drift: drift.as_ref(),
                                threshold: *threshold,
                                ended: false,
                            },
                        );
                        next_live = now + LIVE_PERIOD;
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
                    return Err(StageError::ActuatorStopped);
                }
                let Some(ticket) = ticket_rx.dequeue() else {
                    if flags.capture_done.load(Ordering::Acquire) && !ticket_rx.ready() {
                        break;
                    }
                    std::thread::park_timeout(Duration::from_millis(20));
                    continue;
                };
                let Ok(slot) = slots[ticket.slot].lock() else {
                    return Err(StageError::FrameBufferPoisoned);
                };
                let seq = ticket.stamp.seq;
                let roi = pre.roi();
                let judged = InspectStep {
                    pre: &mut *pre,
                    engine: &mut **engine,
                    threshold: *threshold,
                    clock: &*clock,
                    stats: &mut *stats,
                    drift: &mut *drift,
                }
                .judge(
                    Rgb::Buffer {
                        rgb: &slot.rgb,
                        width: slot.width,
                        height: slot.height,
                    },
                    seq,
                    ticket.frame_time,
                );
                let (score, verdict, decided) = (judged.score, judged.verdict, judged.decided);
                infer_link.send(Msg::Decide {
                    seq,
                    verdict,
                    at: decided,
                    count: position.as_ref().map_or(0, |p| p.count_at(decided)),
                });
                // The archive never waits: a busy writer drops the part (counted).
                let reason = match verdict {
                    Verdict::Pass => None,
                    Verdict::Reject => Some(ArchiveReason::Reject),
                    Verdict::Fault(_) => opts.archive_faults.then_some(ArchiveReason::Fault),
                };
                // The anomaly map, for the archive's heatmap and the page's.
                let map = judged
                    .inference
                    .as_ref()
                    .map(|i| (i.map, i.width, i.height));
                let mut archived = false;
                if let (Some(a), Some(reason)) = (&opts.archive, reason) {
                    archived = a.submit(&ArchivedPart {
                        seq,
                        reason,
                        score,
                        frame: &slot.rgb,
                        width: slot.width,
                        height: slot.height,
                        roi,
                        map,
                    });
                }
                frames += 1;
                if let Some(t) = &opts.telemetry {
                    t.record(PartRecord::judged(
                        seq,
                        (score, *threshold, verdict),
                        [
                            ticket.convert,
                            judged.preprocess_time,
                            judged.inference_time,
                            decided.saturating_sub(ticket.frame_time),
                        ],
                        archived,
                    ));
                    if t.wants_frame() {
                        t.offer_frame(&FrameOffer {
                            seq,
                            score,
                            threshold: *threshold,
                            verdict,
                            rgb: &slot.rgb,
                            width: slot.width,
                            height: slot.height,
                            roi,
                            map,
                        });
                    }
                    // The counts go out at the top of the next turn, right after this part.
                    next_live = Duration::ZERO;
                }
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
        if let Err(payload) = outputs_back {
            failure.get_or_insert(StageError::Panicked {
                stage: "reject actuator",
                message: panic_message(payload.as_ref()),
            });
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
        if let Some(t) = &opts.telemetry {
            let final_counts = live_counts(LiveSources {
                stats,
                shared: &shared,
                frames,
                stalls: summary.stalls,
                archive: None,
                drift: drift.as_ref(),
                threshold: *threshold,
                ended: true,
            });
            if let Some(mut live) = final_counts {
                live.summary = summary;
                t.publish(&live);
            }
        }
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
