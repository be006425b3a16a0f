//! The inference thread of [`run`](super::run): it takes each converted frame from the capture
//! thread, judges it (the inspect step), sends the verdict to the reject actuator, and hands the
//! part to the archive, the telemetry and the decision log. Between frames it serves the stop flag,
//! threshold reloads, the live counts and the periodic status line. Nothing here allocates per
//! frame.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use heapless::spsc::{Consumer, Producer};

use super::capture::{RunFlags, Slot, Ticket};
use super::inspect::{InspectStep, Outcome, Rgb};
use super::report::{print_outcome, publish_live, status_line, summarize, write_json, LiveSources};
use super::{Reloader, StageError, FRAME_BUFFERS, LIVE_PERIOD};
use crate::archive::{Archive, ArchiveReason, ArchivedPart};
use crate::capture::Label;
use crate::clock::Clock;
use crate::decide::Verdict;
use crate::drift::DriftMonitor;
use crate::gpio::EncoderPosition;
use crate::infer::Engine;
use crate::preprocess::Preprocessor;
use crate::reject::{ActuatorLink, ActuatorShared, Msg};
use crate::stats::Stats;
use crate::telemetry::{FrameOffer, PartRecord, Telemetry};

/// Where each judged part goes besides the actuator, and the loop's periodic duties.
pub(super) struct PartSinks<'a> {
    pub(super) telemetry: Option<&'a Telemetry>,
    pub(super) archive: Option<&'a Archive>,
    /// Archive parts that could not be judged, too.
    pub(super) archive_faults: bool,
    pub(super) print_decisions: bool,
    pub(super) status_interval: Option<Duration>,
    pub(super) stats_json: Option<&'a Path>,
    pub(super) max_frames: Option<u64>,
}

/// The inference loop's stages, queues and state.
pub(super) struct InferenceLoop<'a> {
    pub(super) pre: &'a mut Preprocessor,
    pub(super) engine: &'a mut dyn Engine,
    pub(super) threshold: &'a mut f32,
    pub(super) drift: &'a mut Option<DriftMonitor>,
    pub(super) stats: &'a mut Stats,
    pub(super) clock: &'a dyn Clock,
    pub(super) sinks: PartSinks<'a>,
    pub(super) stop: &'a AtomicBool,
    pub(super) reload: Option<&'a Reloader<'a>>,
    pub(super) shared: &'a ActuatorShared,
    pub(super) flags: &'a RunFlags,
    pub(super) slots: &'a [Mutex<Slot>; FRAME_BUFFERS],
    pub(super) tickets: Consumer<'a, Ticket, { FRAME_BUFFERS + 1 }>,
    pub(super) free: Producer<'a, usize, { FRAME_BUFFERS + 1 }>,
    pub(super) link: ActuatorLink<'a>,
    pub(super) position: Option<&'a EncoderPosition>,
    /// The capture thread, woken when a frame buffer is free again.
    pub(super) capture: std::thread::Thread,
    /// Whether the reject actuator thread has ended (it never does before the loop ends).
    pub(super) actuator_finished: &'a dyn Fn() -> bool,
    /// Frames judged so far.
    pub(super) frames: u64,
}

/// When the loop's periodic duties are next due.
struct Due {
    status: Option<Duration>,
    live: Duration,
    stopping: bool,
}

impl InferenceLoop<'_> {
    /// Runs until the capture thread is done and every frame it handed over is judged.
    pub(super) fn run(&mut self) -> Result<(), StageError> {
        let now = self.clock.now();
        let mut due = Due {
            status: self.sinks.status_interval.map(|i| now + i),
            // The telemetry's counts also move while no frame comes (parts reaching the ejector).
            live: now,
            stopping: false,
        };
        crate::service::ready();
        loop {
            // A sign of life for systemd's watchdog: this loop turns at least every 20 ms, or
            // once per inference.
            crate::service::watchdog(crate::clock::monotonic_now());
            self.between_frames(&mut due);
            if (self.actuator_finished)() {
                return Err(StageError::ActuatorStopped);
            }
            let Some(ticket) = self.tickets.dequeue() else {
                if self.flags.capture_done.load(Ordering::Acquire) && !self.tickets.ready() {
                    return Ok(());
                }
                std::thread::park_timeout(Duration::from_millis(20));
                continue;
            };
            self.judge(ticket)?;
            if self.sinks.telemetry.is_some() {
                // The counts go out at the top of the next turn, right after this part.
                due.live = Duration::ZERO;
            }
        }
    }

    /// Stop, threshold reload, live counts and the status line.
    fn between_frames(&mut self, due: &mut Due) {
        if self.stop.load(Ordering::Relaxed)
            || self.sinks.max_frames.is_some_and(|m| self.frames >= m)
        {
            self.flags.capture_stop.store(true, Ordering::Release);
            if !due.stopping {
                due.stopping = true;
                crate::service::stopping();
            }
        }
        self.reload_if_asked();
        if let Some(t) = self.sinks.telemetry {
            let now = self.clock.now();
            if now >= due.live {
                publish_live(t, self.live_sources());
                due.live = now + LIVE_PERIOD;
            }
        }
        if let (Some(at), Some(interval)) = (due.status, self.sinks.status_interval) {
            let now = self.clock.now();
            if now >= at {
                status_line(self.stats, self.shared, self.frames);
                if let Some(p) = self.sinks.stats_json {
                    let summary = summarize(self.stats, self.shared, self.frames, (0, 0));
                    write_json(p, &summary, self.stats, self.shared);
                }
                due.status = Some(now + interval);
            }
        }
    }

    fn live_sources(&self) -> LiveSources<'_> {
        LiveSources {
            stats: self.stats,
            shared: self.shared,
            frames: self.frames,
            stalls: self.flags.stalls.load(Ordering::Relaxed),
            archive: self.sinks.archive,
            drift: self.drift.as_ref(),
            threshold: *self.threshold,
            ended: false,
        }
    }

    /// A new threshold between two frames on SIGHUP or an HTTP request; a failed load keeps the
    /// current one.
    fn reload_if_asked(&mut self) {
        let asked_over_http = self
            .sinks
            .telemetry
            .is_some_and(Telemetry::take_reload_request);
        let Some(r) = self
            .reload
            .filter(|r| r.flag.swap(false, Ordering::AcqRel) || asked_over_http)
        else {
            return;
        };
        match (r.load)() {
            Ok((t, p99, origin)) => {
                log::info!(
                    "reloaded: threshold {} -> {t} from {origin}",
                    *self.threshold
                );
                *self.threshold = t;
                *self.drift = p99.map(|p| DriftMonitor::new(p, 0.01));
                if let Some(tm) = self.sinks.telemetry {
                    tm.set_threshold_origin(&origin);
                }
            }
            Err(e) => log::error!("reload failed, threshold stays {}: {e}", *self.threshold),
        }
    }

    /// One part: inspect step, verdict to the actuator, then archive, telemetry and log; the
    /// frame buffer goes back to the capture thread.
    fn judge(&mut self, ticket: Ticket) -> Result<(), StageError> {
        let Ok(slot) = self.slots[ticket.slot].lock() else {
            return Err(StageError::FrameBufferPoisoned);
        };
        let seq = ticket.stamp.seq;
        let roi = self.pre.roi();
        let threshold = *self.threshold;
        let judged = InspectStep {
            pre: &mut *self.pre,
            engine: &mut *self.engine,
            threshold,
            clock: self.clock,
            stats: &mut *self.stats,
            drift: &mut *self.drift,
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
        self.link.send(Msg::Decide {
            seq,
            verdict,
            at: decided,
            count: self.position.map_or(0, |p| p.count_at(decided)),
        });
        // The anomaly map, for the archive's heatmap and the page's.
        let map = judged
            .inference
            .as_ref()
            .map(|i| (i.map, i.width, i.height));
        // What they show under it: the frame's region of interest, or for a model that aligns the
        // part, the turned crop the model saw (the map lies on it; the frame is kept when the
        // model did not run).
        let spec = self.pre.spec();
        let (view, view_w, view_h, roi) = match (spec.align, &map) {
            (Some(_), Some(_)) => (
                self.pre.resized_rgb(),
                spec.width as u32,
                spec.height as u32,
                None,
            ),
            _ => (&slot.rgb[..], slot.width, slot.height, roi),
        };
        // The archive never waits: a busy writer drops the part (counted).
        let reason = match verdict {
            Verdict::Pass => None,
            Verdict::Reject => Some(ArchiveReason::Reject),
            Verdict::Fault(_) => self.sinks.archive_faults.then_some(ArchiveReason::Fault),
        };
        let mut archived = false;
        if let (Some(a), Some(reason)) = (self.sinks.archive, reason) {
            archived = a.submit(&ArchivedPart {
                seq,
                reason,
                score,
                frame: view,
                width: view_w,
                height: view_h,
                roi,
                map,
            });
        }
        self.frames += 1;
        if let Some(t) = self.sinks.telemetry {
            t.record(PartRecord::judged(
                seq,
                (score, threshold, verdict),
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
                    threshold,
                    verdict,
                    rgb: view,
                    width: view_w,
                    height: view_h,
                    roi,
                    map,
                });
            }
        }
        if self.sinks.print_decisions {
            let origin = (!slot.origin.as_os_str().is_empty()).then_some(slot.origin.as_path());
            print_outcome(&Outcome {
                sequence: seq,
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
        let _ = self.free.enqueue(ticket.slot);
        // An unpaced replay's capture thread waits for a free buffer.
        self.capture.unpark();
        self.shared.mark_alive(decided);
        Ok(())
    }
}
