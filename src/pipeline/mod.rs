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
mod inference;
mod inspect;
mod report;

use capture::{
    encoder_thread, trigger_thread, CaptureEnd, CaptureLoop, RunFlags, Slot, Ticket,
    PENDING_TRIGGERS,
};
pub use capture::{TriggerMatcher, FRAME_BUFFERS};
use inference::{InferenceLoop, PartSinks};
pub use inspect::{Inspector, Outcome};
use report::{latency_of, live_counts, summarize, write_json, LiveSources};
pub use report::{RunLatency, RunSummary};

use crate::archive::Archive;
use crate::capture::CaptureError;
use crate::drift::DriftMonitor;
use crate::gpio::GpioError;
use crate::gpio::{EdgeInput, EncoderPosition};
use crate::infer::ModelError;
use crate::reject::{spawn_actuator, ActuatorSettings, ActuatorShared, LinkQueue, Outputs};
use crate::schedule::PartStamp;
use crate::stats::{LatencyWindow, LogThrottle, Stage, Stats};
use crate::telemetry::Telemetry;

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
///
/// The steps: spawn the reject actuator, the input threads (encoder, trigger) and the capture
/// thread; run the `InferenceLoop` on this thread; then wind down (`wind_down`): join every
/// thread, keep the first failure, and report the counts.
pub fn run(
    inspector: &mut Inspector,
    io: LineIo,
    opts: RunOptions,
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
    let RunOptions {
        actuator: actuator_settings,
        trigger: trigger_settings,
        inference_cpu,
        print_decisions,
        status_interval,
        max_frames,
        stats_json,
        archive,
        archive_faults,
        telemetry,
    } = opts;
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
    let fifo_priority = actuator_settings.fifo_priority;
    std::thread::scope(|scope| {
        let ([capture_link, infer_link, trigger_link], actuator) = spawn_actuator(
            scope,
            [&mut capture_q, &mut infer_q, &mut trigger_q],
            outputs,
            clock.clone(),
            actuator_settings,
            position.as_ref(),
            &shared,
        )
        .map_err(|source| StageError::Spawn {
            thread: "reject actuator",
            source,
        })?;
        // On every way out of this block, a panic included.
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
                let telemetry = telemetry.as_ref();
                input_threads.push(
                    std::thread::Builder::new()
                        .name("trigger".into())
                        .spawn_scoped(scope, move || {
                            trigger_thread(
                                input,
                                ts,
                                trig_producer,
                                trigger_link,
                                pos,
                                flags,
                                telemetry,
                            )
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

        let (ticket_tx, ticket_rx) = tickets.split();
        let (free_tx, free_rx) = free.split();
        let inference_thread = std::thread::current();
        let capture = {
            let clock = clock.clone();
            let slots = &slots;
            let flags = &flags;
            let shared = &shared;
            let position = position.as_ref();
            let window = trigger_settings.map(|t| t.window);
            let telemetry = telemetry.as_ref();
            std::thread::Builder::new()
                .name("capture".into())
                .spawn_scoped(scope, move || {
                    // Also on a panic: inference must learn that no more frames come.
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
                        max_frames,
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
        let actuator_finished = || actuator.is_finished();
        let mut inference = InferenceLoop {
            pre: &mut *pre,
            engine: &mut **engine,
            threshold: &mut *threshold,
            drift: &mut *drift,
            stats: &mut *stats,
            clock: &*clock,
            sinks: PartSinks {
                telemetry: telemetry.as_ref(),
                archive: archive.as_ref(),
                archive_faults,
                print_decisions,
                status_interval,
                stats_json: stats_json.as_deref(),
                max_frames,
            },
            stop,
            reload,
            shared: &shared,
            flags: &flags,
            slots: &slots,
            tickets: ticket_rx,
            free: free_tx,
            link: infer_link,
            position: position.as_ref(),
            capture: capture.thread().clone(),
            actuator_finished: &actuator_finished,
            frames: 0,
        };
        let looped = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::realtime::apply("inference", 0, inference_cpu);
            inference.run()
        }));
        let frames = inference.frames;
        drop(inference);
        let failure = match looped {
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
        wind_down(
            Ended {
                failure,
                capture: end,
                actuator: outputs_back.map(|_| ()),
                frames,
            },
            WindDown {
                stats,
                drift: drift.as_ref(),
                threshold: *threshold,
                shared: &shared,
                flags: &flags,
                archive,
                telemetry: telemetry.as_ref(),
                stats_json: stats_json.as_deref(),
            },
        )
    })
}

/// Stops the actuator (safe state) and the capture and input threads when dropped, on every way
/// out of the run. On the normal way out (`completed`) the actuator lets pending parts reach the
/// ejector; on an error or while unwinding from a panic it does not wait: the outputs go to their
/// safe state at once and the input threads stop.
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

/// Tells the inference thread, when the capture thread ends (a panic included), that no more
/// frames come.
struct DoneOnDrop<'a>(&'a RunFlags, std::thread::Thread);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.capture_done.store(true, Ordering::Release);
        self.1.unpark();
    }
}

/// How the run's threads ended.
struct Ended {
    /// The inference loop's failure, if any.
    failure: Option<StageError>,
    capture: std::thread::Result<CaptureEnd>,
    actuator: std::thread::Result<()>,
    frames: u64,
}

/// What the wind-down reports to.
struct WindDown<'a> {
    stats: &'a mut Stats,
    drift: Option<&'a DriftMonitor>,
    threshold: f32,
    shared: &'a ActuatorShared,
    flags: &'a RunFlags,
    archive: Option<Archive>,
    telemetry: Option<&'a Telemetry>,
    stats_json: Option<&'a std::path::Path>,
}

/// After every thread has ended: the first failure (inference, capture, actuator, inputs) is the
/// run's; the final counts are summarized, published, written and, after a failure, logged.
fn wind_down(ended: Ended, w: WindDown<'_>) -> Result<(RunSummary, RunLatency), StageError> {
    let Ended {
        mut failure,
        capture,
        actuator,
        frames,
    } = ended;
    let mut counts_of_capture = (0, 0);
    match capture {
        Ok(CaptureEnd {
            error,
            skipped,
            convert,
            untriggered,
            stalls,
        }) => {
            w.stats.set_window(Stage::Convert, convert);
            w.stats.skipped = skipped;
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
    if let Err(payload) = actuator {
        failure.get_or_insert(StageError::Panicked {
            stage: "reject actuator",
            message: panic_message(payload.as_ref()),
        });
    }
    if let Some(e) = w.flags.input_error.lock().ok().and_then(|mut e| e.take()) {
        failure.get_or_insert(StageError::Input(e));
    }
    let mut summary = summarize(w.stats, w.shared, frames, counts_of_capture);
    if let Some(a) = w.archive {
        let c = a.finish();
        (
            summary.archived,
            summary.archive_dropped,
            summary.archive_failed,
        ) = (c.archived, c.dropped, c.failed);
    }
    let latency = latency_of(w.stats, w.shared);
    // The final stats file is in place before the page and MQTT say the run has ended.
    if let Some(p) = w.stats_json {
        write_json(p, &summary, w.stats, w.shared);
    }
    if let Some(t) = w.telemetry {
        let final_counts = live_counts(LiveSources {
            stats: w.stats,
            shared: w.shared,
            frames,
            stalls: summary.stalls,
            archive: None,
            drift: w.drift,
            threshold: w.threshold,
            ended: true,
        });
        if let Some(mut live) = final_counts {
            live.summary = summary;
            t.publish(&live);
        }
    }
    if let Some(e) = failure {
        let c = &summary.counts;
        log::error!(
            "run ended by a fault ({e}); final counts: frames {} parts {} OK {} NG {} late {} missed {} faults {} overflows {} pulses {}",
            summary.frames,
            c.parts,
            c.ok,
            c.ng,
            c.late,
            c.missed,
            c.faults,
            c.overflows,
            c.pulses
        );
        return Err(e);
    }
    Ok((summary, latency))
}
