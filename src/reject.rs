//! The reject actuator: the thread that owns the outputs and runs the [`RejectScheduler`].
//!
//! The other threads talk to it over bounded, allocation-free `heapless` queues, one per producer:
//! the capture (or trigger) thread registers each part when it is seen, the inference thread sends
//! the decision. The actuator sleeps until the scheduler's next deadline (an absolute
//! `clock_nanosleep` for the last 2 ms, so onsets do not depend on futex wake-up latency), sets the
//! reject output, drives the alarm and ready outputs, and publishes counts and onset errors.
//! A message lost on a full link raises the alarm; a reject output that refuses a write holds the
//! alarm on and the ready output inactive until restart (the PLC stops the line).
//! Every output goes to its safe state when the actuator ends: normal exit, signal, or a panic
//! unwinding through it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heapless::spsc::{Consumer, Producer, Queue};

use crate::clock::Clock;
use crate::decide::{Fault, Verdict};
use crate::gpio::EncoderPosition;
use crate::gpio::{Level, OutputPin};
use crate::schedule::{PartStamp, RejectScheduler, ScheduleCounts, SchedulerSettings};
use crate::stats::{LatencyHistogram, LatencyWindow, LogThrottle, Summary};

/// Messages one producer may have in flight; a queue this full means the actuator is stuck.
pub const LINK_CAPACITY: usize = 64;

/// What the pipeline tells the actuator.
#[derive(Debug, Clone, Copy)]
pub enum Msg {
    /// A part was seen.
    Register(PartStamp),
    /// A part's decision, made at `at` (encoder count `count`).
    Decide {
        seq: u64,
        verdict: Verdict,
        at: Duration,
        count: u64,
    },
    /// A fault that concerns no particular part (camera stall): raise the alarm.
    Alarm { at: Duration },
}

pub type LinkQueue = Queue<Msg, LINK_CAPACITY>;

/// A producer's end of the link to the actuator.
pub struct ActuatorLink<'q> {
    producer: Producer<'q, Msg, LINK_CAPACITY>,
    actuator: std::thread::Thread,
    lost: &'q AtomicU64,
}

impl ActuatorLink<'_> {
    /// Part `seq` could not be judged (`fault`), noticed at `at` (encoder count `count`): the
    /// fail-safe policy handles it. Every fail-safe message to the actuator goes through here.
    pub fn fail_safe(&mut self, seq: u64, fault: Fault, at: Duration, count: u64) {
        self.send(Msg::Decide {
            seq,
            verdict: Verdict::Fault(fault),
            at,
            count,
        });
    }

    /// Sends `msg`, waiting up to 20 ms for room. A message that still does not fit is counted as
    /// lost (and logged): the part it concerns is then handled by the policy at its commit point,
    /// or, for a lost registration, never tracked, which the count makes visible.
    pub fn send(&mut self, msg: Msg) {
        for attempt in 0..200 {
            if self.producer.enqueue(msg).is_ok() {
                self.actuator.unpark();
                return;
            }
            self.actuator.unpark();
            if attempt < 10 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        self.lost.fetch_add(1, Ordering::Relaxed);
        log::error!("reject actuator is not keeping up: message {msg:?} lost");
    }
}

/// An output with the level it must rest at on exit.
pub struct SafeOutput {
    pub pin: Box<dyn OutputPin>,
    pub safe: Level,
}

/// The outputs the actuator owns.
pub struct Outputs {
    pub reject: SafeOutput,
    pub alarm: Option<SafeOutput>,
    pub ready: Option<SafeOutput>,
    /// Toggle `ready` at this period while healthy (None: steady active).
    pub heartbeat: Option<Duration>,
}

/// What the actuator publishes for status lines and the summary.
#[derive(Default)]
pub struct ActuatorReport {
    pub counts: ScheduleCounts,
    /// Pulse onset minus the part's due time (time mode).
    pub onset: LatencyWindow,
    pub output_errors: u64,
    pub pending: usize,
    /// Every onset error of the run, for `/metrics`.
    pub onset_histogram: LatencyHistogram,
    /// The alarm output is (or would be, without one configured) active.
    pub alarm: bool,
}

impl ActuatorReport {
    pub fn onset_summary(&mut self) -> Summary {
        self.onset.summary()
    }
}

/// State shared between the actuator and the rest of the run.
pub struct ActuatorShared {
    pub report: Mutex<ActuatorReport>,
    /// `CLOCK_MONOTONIC` nanoseconds of the pipeline's last sign of life (for the ready output).
    pub alive: AtomicU64,
    /// Messages that found the link full.
    pub lost: AtomicU64,
    /// Set to end the actuator once no part is pending (safe state on the way out).
    pub stop: AtomicBool,
    /// Set to end the actuator at once, pending parts or not (a panic elsewhere).
    pub abort: AtomicBool,
}

impl Default for ActuatorShared {
    fn default() -> Self {
        ActuatorShared {
            report: Mutex::new(ActuatorReport::default()),
            alive: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
        }
    }
}

impl ActuatorShared {
    pub fn mark_alive(&self, now: Duration) {
        self.alive.store(now.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The pipeline is healthy while it showed life this recently.
const STALE_AFTER: Duration = Duration::from_secs(3);

/// Settings of [`spawn_actuator`].
pub struct ActuatorSettings {
    pub schedule: SchedulerSettings,
    /// SCHED_FIFO priority (0: none) and CPU for the actuator thread.
    pub fifo_priority: u8,
    pub cpu: Option<usize>,
}

/// Spawns the actuator in `scope` with one link per queue in `queues` (one per producing thread).
/// It stops, leaving every output in its safe state, once `shared.stop` is set and no part is
/// pending.
#[allow(clippy::type_complexity)]
pub fn spawn_actuator<'scope, 'env, const N: usize>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    queues: [&'env mut LinkQueue; N],
    outputs: Outputs,
    clock: Arc<dyn Clock>,
    settings: ActuatorSettings,
    encoder: Option<&'env EncoderPosition>,
    shared: &'env ActuatorShared,
) -> std::io::Result<(
    [ActuatorLink<'env>; N],
    std::thread::ScopedJoinHandle<'scope, Outputs>,
)> {
    let mut producers = Vec::with_capacity(N);
    let mut consumers: heapless::Vec<Consumer<'env, Msg, LINK_CAPACITY>, N> = heapless::Vec::new();
    for q in queues {
        let (p, c) = q.split();
        producers.push(p);
        if consumers.push(c).is_err() {
            unreachable!("N consumers fit a Vec of capacity N");
        }
    }
    let join = std::thread::Builder::new()
        .name("reject-actuator".into())
        .spawn_scoped(scope, move || {
            crate::realtime::apply("reject actuator", settings.fifo_priority, settings.cpu);
            let mut outputs = outputs;
            run_actuator(
                &mut consumers,
                &mut outputs,
                &*clock,
                RejectScheduler::new(settings.schedule),
                encoder,
                shared,
            );
            outputs
        })?;
    let thread = join.thread().clone();
    let links: Vec<ActuatorLink<'env>> = producers
        .into_iter()
        .map(|producer| ActuatorLink {
            producer,
            actuator: thread.clone(),
            lost: &shared.lost,
        })
        .collect();
    let links: [ActuatorLink<'env>; N] = match links.try_into() {
        Ok(l) => l,
        Err(_) => unreachable!("one link per queue"),
    };
    Ok((links, join))
}

/// Puts every output in its safe state when dropped, also while unwinding from a panic.
struct SafeOnDrop<'a>(&'a mut Outputs);

impl Drop for SafeOnDrop<'_> {
    fn drop(&mut self) {
        let o = &mut *self.0;
        for out in std::iter::once(&mut o.reject)
            .chain(o.alarm.as_mut())
            .chain(o.ready.as_mut())
        {
            if let Err(e) = out.pin.set(out.safe) {
                log::error!(
                    "could not put {} in its safe state: {e}",
                    out.pin.describe()
                );
            }
        }
    }
}

const REJECT_FAILED: &str =
    "the reject output refused a write: alarm on and ready held inactive until partguard is restarted";

/// Sets `out` to `level`; a failed write is counted, logged, and returned as `false`.
fn set(out: &mut SafeOutput, level: Level, errors: &mut u64) -> bool {
    match out.pin.set(level) {
        Ok(()) => true,
        Err(e) => {
            *errors += 1;
            log::error!("{}: {e}", out.pin.describe());
            false
        }
    }
}

/// Sleeps until `t` or until unparked: parks while far away, then an absolute `clock_nanosleep`
/// for the last stretch (precise onsets; a message arriving then waits at most 2 ms).
fn wait_until(clock: &dyn Clock, t: Duration) {
    const PRECISE: Duration = Duration::from_millis(2);
    let now = clock.now();
    if t <= now {
        return;
    }
    if t - now > PRECISE {
        std::thread::park_timeout(t - now - PRECISE / 2);
    } else {
        clock.sleep_until(t);
    }
}

/// In encoder mode a stopping actuator waits at most this long without a tick for pending parts to
/// reach the ejector (the conveyor may have stopped, or the encoder failed). In time mode parts
/// always reach their due time, so it waits for the last one.
const DRAIN_WITHOUT_TICKS: Duration = Duration::from_secs(10);

/// Copies the scheduler's counts and the onsets measured since the last report into `rep`.
fn publish(
    rep: &mut ActuatorReport,
    sched: &RejectScheduler,
    errors: u64,
    alarm: bool,
    onsets: &mut heapless::Vec<Duration, 16>,
) {
    rep.counts = sched.counts();
    rep.output_errors = errors;
    rep.pending = sched.pending();
    rep.alarm = alarm;
    for e in onsets.iter() {
        rep.onset.record(*e);
        rep.onset_histogram.record(*e);
    }
    onsets.clear();
}

fn run_actuator<const N: usize>(
    consumers: &mut heapless::Vec<Consumer<'_, Msg, LINK_CAPACITY>, N>,
    outputs: &mut Outputs,
    clock: &dyn Clock,
    mut sched: RejectScheduler,
    encoder: Option<&EncoderPosition>,
    shared: &ActuatorShared,
) {
    let heartbeat = outputs.heartbeat;
    let guard = SafeOnDrop(outputs);
    let mut errors = 0u64;
    let mut onsets: heapless::Vec<Duration, 16> = heapless::Vec::new();
    // The reject output refused a write: a part it should have rejected may have gone on. The
    // alarm stays on and the ready output shows the station unhealthy until it is restarted.
    let mut reject_failed = !set(&mut guard.0.reject, Level::Inactive, &mut errors);
    if reject_failed {
        log::error!("{REJECT_FAILED}");
    }
    let mut lost_seen = 0u64;
    let mut alarm_on = false;
    if let Some(a) = guard.0.alarm.as_mut() {
        set(a, Level::Inactive, &mut errors);
    }
    let mut ready_level = if reject_failed {
        Level::Inactive
    } else {
        Level::Active
    };
    if let Some(r) = guard.0.ready.as_mut() {
        set(r, ready_level, &mut errors);
    }
    let mut next_beat = heartbeat.map(|p| clock.now() + p);
    let mut failsafe_log = LogThrottle::new(Duration::from_secs(1));
    let mut stopping_since: Option<(u64, Duration)> = None;
    loop {
        for c in consumers.iter_mut() {
            while let Some(m) = c.dequeue() {
                match m {
                    Msg::Register(stamp) => {
                        sched.register(stamp);
                    }
                    Msg::Decide {
                        seq,
                        verdict,
                        at,
                        count,
                    } => sched.decide(seq, verdict, at, count),
                    Msg::Alarm { at } => sched.raise_alarm(at),
                }
            }
        }
        let now = clock.now();
        let lost = shared.lost.load(Ordering::Relaxed);
        if lost != lost_seen {
            // A lost registration is a part never tracked, a lost decision one the policy
            // handles: either way the line is told.
            lost_seen = lost;
            sched.raise_alarm(now);
        }
        let count = encoder.map_or(0, |e| e.count());
        while let Some(change) = sched.poll(now, count) {
            let written = set(&mut guard.0.reject, change.level, &mut errors);
            if !written && !reject_failed {
                log::error!("{REJECT_FAILED}");
                reject_failed = true;
            }
            if change.level == Level::Active {
                // The onset is when the output write returned, not when the poll decided; a
                // refused write still times the pulse (the scheduler ends it), but is no onset.
                let onset = clock.now();
                sched.confirm_onset(onset);
                if let (true, Some(e)) = (written, change.onset_error) {
                    let _ = onsets.push(e + onset.saturating_sub(now));
                }
            }
        }
        if reject_failed {
            sched.raise_alarm(now);
        }
        while let Some(ev) = sched.take_event() {
            let Some(more) = failsafe_log.allow(now) else {
                continue;
            };
            log::warn!(
                "part {}: {} -> {} (fail-safe policy){}",
                ev.seq,
                ev.fault.as_str(),
                match ev.policy {
                    crate::schedule::Policy::Reject => "rejected",
                    crate::schedule::Policy::Pass => "passed, alarm raised",
                },
                crate::stats::suppressed(more)
            );
        }
        let want_alarm = sched.alarm(now);
        if want_alarm != alarm_on {
            if let Some(a) = guard.0.alarm.as_mut() {
                let level = if want_alarm {
                    Level::Active
                } else {
                    Level::Inactive
                };
                set(a, level, &mut errors);
            }
            alarm_on = want_alarm;
        }
        if let Some(r) = guard.0.ready.as_mut() {
            let alive = Duration::from_nanos(shared.alive.load(Ordering::Relaxed));
            let healthy = now.saturating_sub(alive) < STALE_AFTER && !reject_failed;
            let want = match (healthy, next_beat, heartbeat) {
                (false, _, _) => {
                    next_beat = heartbeat.map(|p| now + p);
                    Level::Inactive
                }
                (true, Some(beat), Some(period)) if now >= beat => {
                    next_beat = Some(now + period);
                    match ready_level {
                        Level::Active => Level::Inactive,
                        Level::Inactive => Level::Active,
                    }
                }
                (true, Some(_), _) => ready_level,
                (true, None, _) => Level::Active,
            };
            if want != ready_level {
                set(r, want, &mut errors);
                ready_level = want;
            }
        }
        if let Ok(mut rep) = shared.report.try_lock() {
            publish(&mut rep, &sched, errors, alarm_on, &mut onsets);
        }
        if shared.abort.load(Ordering::Acquire) {
            log::error!(
                "reject actuator aborted with {} parts pending; outputs to their safe state",
                sched.pending()
            );
            break;
        }
        if shared.stop.load(Ordering::Acquire) {
            if sched.is_idle() {
                break;
            }
            // Parts still between camera and ejector pass it before the outputs go safe, unless
            // the line does not bring them there (a stopped conveyor, a failed encoder).
            if encoder.is_some() {
                let (last_count, since) = *stopping_since.get_or_insert((count, now));
                if count != last_count {
                    stopping_since = Some((count, now));
                } else if now.saturating_sub(since) > DRAIN_WITHOUT_TICKS {
                    log::error!(
                        "stopping: {} parts still pending and no encoder tick for {:.0} s (line stopped?); outputs to their safe state",
                        sched.pending(),
                        DRAIN_WITHOUT_TICKS.as_secs_f64()
                    );
                    break;
                }
            }
        }
        let wake = sched.next_wakeup(now);
        if let Some(e) = encoder {
            if !e.wake_me_at(wake.count) {
                continue;
            }
        }
        let mut t = now + Duration::from_millis(50);
        for cand in [wake.at, next_beat].into_iter().flatten() {
            t = t.min(cand);
        }
        if guard.0.ready.is_some() {
            t = t.min(now + Duration::from_millis(500));
        }
        wait_until(clock, t);
    }
    if let Ok(mut rep) = shared.report.lock() {
        publish(&mut rep, &sched, errors, alarm_on, &mut onsets);
    }
    drop(guard);
}
