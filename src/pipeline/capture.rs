//! The capture side of the line: the capture thread (frames in, parts registered or matched to
//! their photo-eye trigger, frames converted into a small pool of buffers for inference), and the
//! trigger and encoder input threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use heapless::Deque;

use super::TriggerSettings;
use crate::capture::{to_rgb, CaptureError, FrameSource};
use crate::clock::Clock;
use crate::decide::Fault;
use crate::gpio::GpioError;
use crate::gpio::{watch_trigger, EdgeInput, EncoderPosition, TriggerEvent};
use crate::reject::{ActuatorLink, ActuatorShared, Msg};
use crate::schedule::PartStamp;
use crate::stats::{suppressed, LatencyWindow, LogThrottle};
use crate::telemetry::{PartRecord, Telemetry};

/// Frame buffers between capture and inference: one being inferred, the others waiting. A live
/// source whose frame finds none free is an overrun (the part goes to the fail-safe policy).
pub const FRAME_BUFFERS: usize = 3;

/// Triggers waiting for their frame.
pub(super) const PENDING_TRIGGERS: usize = 32;

/// A trigger whose window ended this long ago with no frame at all since is a missed frame (frames
/// normally expire triggers by their own timestamps).
pub(super) const TRIGGER_GRACE: Duration = Duration::from_secs(1);

/// One part's frame on its way from the capture thread to inference.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    pub(super) slot: usize,
    pub(super) stamp: PartStamp,
    pub(super) frame_time: Duration,
    /// How long converting the frame into its buffer took.
    pub(super) convert: Duration,
}

/// A frame buffer: the converted RGB image and where it came from.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) rgb: Vec<u8>,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) origin: PathBuf,
}

/// Sends part `seq` to the fail-safe policy for `fault` and reports it (`part_time`: its capture or
/// trigger).
fn fail_part(
    link: &mut ActuatorLink<'_>,
    telemetry: Option<&Telemetry>,
    now: Duration,
    (seq, fault, part_time, count): (u64, Fault, Duration, u64),
) {
    link.fail_safe(seq, fault, now, count);
    if let Some(t) = telemetry {
        t.record(PartRecord::fail_safe(
            seq,
            fault,
            now.saturating_sub(part_time),
        ));
    }
}

/// Matches frames to photo-eye triggers: the first frame within `window` after a trigger is that
/// part's frame; a trigger whose window passes without a frame is a missed frame.
pub struct TriggerMatcher {
    window: Duration,
    pending: Deque<PartStamp, PENDING_TRIGGERS>,
}

impl TriggerMatcher {
    pub fn new(window: Duration) -> Self {
        TriggerMatcher {
            window,
            pending: Deque::new(),
        }
    }

    /// A new trigger. Returns the oldest one when too many wait (it is then a missed frame).
    pub fn push(&mut self, t: PartStamp) -> Option<PartStamp> {
        let evicted = if self.pending.is_full() {
            self.pending.pop_front()
        } else {
            None
        };
        let _ = self.pending.push_back(t);
        evicted
    }

    /// One trigger whose window ended before `now`, if any (call until `None`).
    pub fn expire(&mut self, now: Duration) -> Option<PartStamp> {
        match self.pending.front() {
            Some(t) if t.time + self.window < now => self.pending.pop_front(),
            _ => None,
        }
    }

    /// The part a frame captured at `frame_time` belongs to (`None`: no trigger, not a part).
    /// Call [`TriggerMatcher::expire`] with the frame's time first.
    pub fn take(&mut self, frame_time: Duration) -> Option<PartStamp> {
        match self.pending.front() {
            Some(t) if t.time <= frame_time && frame_time <= t.time + self.window => {
                self.pending.pop_front()
            }
            _ => None,
        }
    }
}

/// What the capture thread hands back at the end.
pub(super) struct CaptureEnd {
    pub(super) error: Option<CaptureError>,
    pub(super) skipped: u64,
    pub(super) convert: LatencyWindow,
    pub(super) untriggered: u64,
    pub(super) stalls: u64,
}

/// Flags and counters shared by the run's threads.
pub(super) struct RunFlags {
    /// Capture must stop (stop, max frames, a fatal input error).
    pub(super) capture_stop: AtomicBool,
    pub(super) capture_done: AtomicBool,
    /// Trigger and encoder threads stop (after the actuator is done).
    pub(super) inputs_stop: AtomicBool,
    pub(super) input_error: Mutex<Option<GpioError>>,
    /// Camera stalls and outages so far (the live copy of [`CaptureEnd::stalls`]).
    pub(super) stalls: AtomicU64,
}

/// The capture thread: frames in, parts registered, frames converted into free buffers.
pub(super) struct CaptureLoop<'a> {
    pub(super) source: &'a mut dyn FrameSource,
    pub(super) clock: &'a dyn Clock,
    pub(super) slots: &'a [Mutex<Slot>; FRAME_BUFFERS],
    pub(super) link: ActuatorLink<'a>,
    pub(super) tickets: heapless::spsc::Producer<'a, Ticket, { FRAME_BUFFERS + 1 }>,
    pub(super) free: heapless::spsc::Consumer<'a, usize, { FRAME_BUFFERS + 1 }>,
    pub(super) triggers: Option<heapless::spsc::Consumer<'a, PartStamp, PENDING_TRIGGERS>>,
    pub(super) matcher: Option<TriggerMatcher>,
    pub(super) position: Option<&'a EncoderPosition>,
    pub(super) flags: &'a RunFlags,
    pub(super) shared: &'a ActuatorShared,
    pub(super) inference: std::thread::Thread,
    /// Stop after handing this many frames to inference.
    pub(super) max_frames: Option<u64>,
    pub(super) overrun_log: LogThrottle,
    pub(super) end: CaptureEnd,
    /// Where parts this thread sends to the fail-safe policy are reported (page, MQTT).
    pub(super) telemetry: Option<&'a Telemetry>,
}

impl CaptureLoop<'_> {
    fn count(&self) -> u64 {
        self.position.map_or(0, |p| p.count())
    }

    /// A part the model will not see goes to the fail-safe policy, and is reported.
    fn fail_part(&mut self, seq: u64, fault: Fault, part_time: Duration, count: u64) {
        let now = self.clock.now();
        fail_part(
            &mut self.link,
            self.telemetry,
            now,
            (seq, fault, part_time, count),
        );
    }

    /// Takes new triggers and declares missed the ones whose window ended before `now`.
    fn service_triggers(&mut self, now: Duration) {
        let mut missed: heapless::Vec<PartStamp, PENDING_TRIGGERS> = heapless::Vec::new();
        if let (Some(rx), Some(m)) = (self.triggers.as_mut(), self.matcher.as_mut()) {
            while let Some(t) = rx.dequeue() {
                if let Some(old) = m.push(t) {
                    let _ = missed.push(old);
                }
            }
            while missed.len() < missed.capacity() {
                let Some(t) = m.expire(now) else { break };
                let _ = missed.push(t);
            }
        }
        let count = self.count();
        for p in missed {
            log::warn!(
                "part {}: trigger without a frame in time (missed frame)",
                p.seq
            );
            self.fail_part(p.seq, Fault::MissedFrame, p.time, count);
        }
    }

    pub(super) fn run(&mut self) {
        let mut free: heapless::Vec<usize, FRAME_BUFFERS> = (0..FRAME_BUFFERS).collect();
        let live = self.source.is_live();
        let mut handed = 0u64;
        let mut reopen_log = crate::stats::LogThrottle::new(Duration::from_secs(5));
        while !self.flags.capture_stop.load(Ordering::Acquire) {
            if self.max_frames.is_some_and(|m| handed >= m) {
                break;
            }
            while let Some(i) = self.free.dequeue() {
                let _ = free.push(i);
            }
            if !live && free.is_empty() {
                // An unpaced replay waits for inference instead of overrunning.
                std::thread::park_timeout(Duration::from_millis(5));
                continue;
            }
            if self.matcher.is_some() {
                // Frames expire triggers by their own timestamps; this only catches triggers
                // whose frame never comes while no frame arrives at all.
                let horizon = self.clock.now().saturating_sub(TRIGGER_GRACE);
                self.service_triggers(horizon);
            }
            let frame = match self.source.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e @ CaptureError::Stalled { .. }) => {
                    self.end.stalls += 1;
                    self.flags.stalls.fetch_add(1, Ordering::Relaxed);
                    log::error!("{e}; still waiting for frames");
                    let at = self.clock.now();
                    self.link.send(Msg::Alarm { at });
                    if self.matcher.is_some() {
                        self.service_triggers(at.saturating_sub(TRIGGER_GRACE));
                    }
                    continue;
                }
                // The camera failed and is being reopened (ReopeningSource): an outage, counted
                // once; the alarm stays on. No frame can come while it is down, so a trigger whose
                // window has passed is a missed part now (no grace for a late frame).
                Err(e @ CaptureError::Reopening { .. }) => {
                    let at = self.clock.now();
                    if matches!(e, CaptureError::Reopening { down_ms: 0, .. }) {
                        self.end.stalls += 1;
                        self.flags.stalls.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(more) = reopen_log.allow(at) {
                        log::error!("{e}{}", crate::stats::suppressed(more));
                    }
                    self.link.send(Msg::Alarm { at });
                    if self.matcher.is_some() {
                        self.service_triggers(at);
                    }
                    continue;
                }
                Err(e) => {
                    log::error!("{e}");
                    self.end.error = Some(e);
                    break;
                }
            };
            let frame_time = frame.timestamp;
            self.shared.mark_alive(self.clock.now());
            let count = self.position.map_or(0, |p| p.count_at(frame_time));
            let stamp = match self.matcher.as_mut() {
                Some(m) => {
                    let mut missed: heapless::Vec<PartStamp, PENDING_TRIGGERS> =
                        heapless::Vec::new();
                    // Triggers that came while this thread waited for the frame.
                    if let Some(rx) = self.triggers.as_mut() {
                        while let Some(t) = rx.dequeue() {
                            if let Some(old) = m.push(t) {
                                let _ = missed.push(old);
                            }
                        }
                    }
                    while missed.len() < missed.capacity() {
                        let Some(t) = m.expire(frame_time) else { break };
                        let _ = missed.push(t);
                    }
                    let part = m.take(frame_time);
                    for p in missed {
                        log::warn!(
                            "part {}: trigger without a frame in time (missed frame)",
                            p.seq
                        );
                        fail_part(
                            &mut self.link,
                            self.telemetry,
                            self.clock.now(),
                            (p.seq, Fault::MissedFrame, p.time, count),
                        );
                    }
                    match part {
                        Some(p) => p,
                        None => {
                            self.end.untriggered += 1;
                            continue;
                        }
                    }
                }
                None => {
                    let s = PartStamp {
                        seq: frame.sequence,
                        time: frame_time,
                        count,
                    };
                    self.link.send(Msg::Register(s));
                    s
                }
            };
            let Some(slot_index) = free.pop() else {
                if let Some(more) = self.overrun_log.allow(self.clock.now()) {
                    log::warn!(
                        "part {}: every frame buffer is busy (inference behind the line){}",
                        stamp.seq,
                        suppressed(more)
                    );
                }
                self.fail_part(stamp.seq, Fault::Overrun, stamp.time, count);
                continue;
            };
            let t0 = self.clock.now();
            let converted = match self.slots[slot_index].lock() {
                Ok(mut slot) => {
                    let n = frame.width as usize * frame.height as usize * 3;
                    if slot.rgb.len() != n {
                        slot.rgb.resize(n, 0);
                    }
                    slot.width = frame.width;
                    slot.height = frame.height;
                    let os = slot.origin.as_mut_os_string();
                    os.clear();
                    if let Some(p) = frame.origin {
                        os.push(p.as_os_str());
                    }
                    to_rgb(&frame, &mut slot.rgb)
                }
                Err(_) => Err(CaptureError::BadJpeg {
                    reason: "frame buffer poisoned".into(),
                }),
            };
            let convert = self.clock.now().saturating_sub(t0);
            self.end.convert.record(convert);
            if let Err(e) = converted {
                log::warn!("part {}: {e} ({})", stamp.seq, self.source.describe());
                let _ = free.push(slot_index);
                self.fail_part(stamp.seq, Fault::BadFrame, stamp.time, count);
                continue;
            }
            // Cannot fail: a ticket exists only with one of the FRAME_BUFFERS slots.
            let _ = self.tickets.enqueue(Ticket {
                slot: slot_index,
                stamp,
                frame_time,
                convert,
            });
            handed += 1;
            self.inference.unpark();
        }
        if self.matcher.is_some() {
            // Triggers still waiting when capture ends get no frame.
            let now = self.clock.now() + Duration::from_secs(3600);
            self.service_triggers(now);
        }
    }
}

pub(super) fn trigger_thread(
    mut input: Box<dyn EdgeInput>,
    settings: TriggerSettings,
    mut to_capture: heapless::spsc::Producer<'_, PartStamp, PENDING_TRIGGERS>,
    mut link: ActuatorLink<'_>,
    position: Option<&EncoderPosition>,
    flags: &RunFlags,
    telemetry: Option<&Telemetry>,
) {
    let mut seq = 0u64;
    let mut last_counts = None;
    let mut stall_log = crate::stats::LogThrottle::new(Duration::from_secs(1));
    let watched = watch_trigger(
        &mut *input,
        settings.debounce,
        || !flags.capture_stop.load(Ordering::Acquire),
        |event| {
            let at = match event {
                TriggerEvent::Part(at) => at,
                TriggerEvent::Dropped { at, edges } => {
                    // Parts passed the photo-eye that no stage will ever see: the line is told.
                    log::error!(
                        "trigger: the kernel dropped {edges} edges (the reading thread fell behind): parts passed untracked; alarm raised"
                    );
                    link.send(Msg::Alarm { at });
                    return;
                }
            };
            // The count at the edge, and the count read now (the counting thread may lag the
            // edges; the live count also moves past the history `count_at` looks back through).
            let counts = position.map(|p| (p.count_at(at), p.count()));
            let count = counts.map(|(c, _)| c);
            if counts.is_some() && counts == last_counts {
                // Two parts passed the photo-eye and the conveyor did not move one tick: the
                // encoder is not counting, and the rejects, due at counts, would never fire.
                if let Some(more) = stall_log.allow(at) {
                    log::error!(
                        "part {seq}: no encoder tick counted since the last part passed the photo-eye: the encoder is not counting (check its wiring and [encoder]) or its thread is not keeping up; alarm raised{}",
                        crate::stats::suppressed(more)
                    );
                }
                link.send(Msg::Alarm { at });
            }
            last_counts = counts;
            let stamp = PartStamp {
                seq,
                time: at,
                count: count.unwrap_or(0),
            };
            seq += 1;
            link.send(Msg::Register(stamp));
            if to_capture.enqueue(stamp).is_err() {
                log::warn!("part {}: too many triggers waiting for frames", stamp.seq);
                fail_part(
                    &mut link,
                    telemetry,
                    at,
                    (stamp.seq, Fault::MissedFrame, at, stamp.count),
                );
            }
        },
    );
    if let Err(e) = watched {
        log::error!("trigger input failed: {e}; stopping");
        if let Ok(mut slot) = flags.input_error.lock() {
            *slot = Some(e);
        }
        flags.capture_stop.store(true, Ordering::Release);
    }
}

pub(super) fn encoder_thread(
    mut input: Box<dyn EdgeInput>,
    position: Option<&EncoderPosition>,
    flags: &RunFlags,
    fifo_priority: u8,
) {
    let Some(position) = position else { return };
    // Ticks must not be lost to a busy CPU: the same real-time class as the actuator, one below.
    crate::realtime::apply("encoder", fifo_priority.saturating_sub(1), None);
    let mut dropped_log = crate::stats::LogThrottle::new(Duration::from_secs(1));
    while !flags.inputs_stop.load(Ordering::Acquire) {
        match input.wait_edge(Duration::from_millis(50)) {
            Ok(Some(e)) => {
                if e.lost > 0 {
                    if let Some(more) = dropped_log.allow(e.at) {
                        log::warn!(
                            "encoder {}: the kernel dropped {} edges (the reading thread fell behind); counted at the next edge's time{}",
                            input.describe(),
                            e.lost,
                            crate::stats::suppressed(more)
                        );
                    }
                }
                position.ticks_at(u64::from(e.lost) + 1, e.at);
            }
            Ok(None) => {}
            Err(e) => {
                log::error!("encoder input failed: {e}; stopping");
                if let Ok(mut slot) = flags.input_error.lock() {
                    *slot = Some(e);
                }
                flags.capture_stop.store(true, Ordering::Release);
                break;
            }
        }
    }
}
