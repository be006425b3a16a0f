//! The line in real time: the actuator thread on the monotonic clock, and the whole pipeline (replay
//! -> real model -> decision -> reject scheduler -> simulated outputs) with delays in ms and encoder
//! ticks, a photo-eye trigger, overruns and the fail-safe policy. The scheduler's logic itself is
//! tested with simulated time in tests/schedule.rs.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::gpio::{GpioError, Level, OutputPin};
use partguard::gpio::{InputEdge, SimulatedInput, SimulatedLine};
use partguard::pipeline::{run, LineIo, TriggerSettings};
use partguard::reject::{
    spawn_actuator, ActuatorSettings, ActuatorShared, LinkQueue, Msg, Outputs, SafeOutput,
};
use partguard::schedule::{Delay, PartStamp, Policy, Verdict};

/// The real-time tests run one at a time: they share two cores with the model.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asserts `onset` lies within [due, due + slack]: a scheduling correctness check with a wide slack
/// (the benchmark measures the precision).
fn assert_on_time(onset: Duration, due: Duration, what: &str) {
    // 2 ms early: the encoder test's tick quantization.
    assert!(
        onset + sms(2) >= due && onset <= due + sms(25),
        "{what}: onset {onset:?} for due {due:?}"
    );
}

#[test]
fn the_actuator_thread_fires_registered_rejects_at_their_due_time() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let mut q = LinkQueue::new();
    let shared = ActuatorShared::default();
    let t0 = clock.now();
    std::thread::scope(|scope| {
        let ([mut link], join) = spawn_actuator(
            scope,
            [&mut q],
            line.io().outputs,
            clock.clone(),
            ActuatorSettings {
                schedule: time_schedule(100, 10, 20, Policy::Reject),
                fifo_priority: 0,
                cpu: None,
            },
            None,
            &shared,
        )
        .unwrap();
        for seq in 0..4u64 {
            link.send(Msg::Register(PartStamp {
                seq,
                time: t0 + sms(50 * seq),
                count: 0,
            }));
        }
        for (seq, j) in [Verdict::Reject, Verdict::Pass, Verdict::Reject]
            .into_iter()
            .enumerate()
        {
            link.send(Msg::Decide {
                seq: seq as u64,
                verdict: j,
                at: clock.now(),
                count: 0,
            });
        }
        // Part 3 gets no decision: it is rejected at its due time by the policy.
        shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        join.thread().unpark();
        join.join().unwrap();
    });
    let pulses = line.reject.pulses();
    assert_eq!(pulses.len(), 3, "{pulses:?}");
    for ((start, width), due) in pulses.iter().zip([100, 200, 250]) {
        assert_on_time(*start, t0 + sms(due), "pulse");
        assert!(*width >= sms(20), "pulse width {width:?}");
    }
    let rep = shared.report.lock().unwrap();
    assert_eq!((rep.counts.ng, rep.counts.ok, rep.counts.late), (2, 1, 1));
    assert_eq!(line.reject.level(), Some(Level::Inactive));
    // The fail-safe reject raised the alarm; at the end everything is in its safe state.
    assert!(line.alarm.edges().iter().any(|e| e.level == Level::Active));
    assert_eq!(line.alarm.level(), Some(Level::Inactive));
    assert_eq!(line.ready.level(), Some(Level::Inactive));
}

/// An output that remembers its level and refuses nothing.
struct Recorder(Arc<std::sync::Mutex<Vec<Level>>>);
impl OutputPin for Recorder {
    fn set(&mut self, level: Level) -> Result<(), GpioError> {
        self.0.lock().unwrap().push(level);
        Ok(())
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
}

#[test]
fn an_active_safe_state_is_restored_when_the_actuator_ends() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let levels = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut q = LinkQueue::new();
    let shared = ActuatorShared::default();
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Release);
    std::thread::scope(|scope| {
        let (_, join) = spawn_actuator(
            scope,
            [&mut q],
            Outputs {
                reject: SafeOutput {
                    pin: Box::new(Recorder(levels.clone())),
                    safe: Level::Active,
                },
                alarm: None,
                ready: None,
                heartbeat: None,
            },
            clock.clone(),
            ActuatorSettings {
                schedule: time_schedule(100, 10, 20, Policy::Reject),
                fifo_priority: 0,
                cpu: None,
            },
            None,
            &shared,
        )
        .unwrap();
        join.join().unwrap();
    });
    let levels = levels.lock().unwrap();
    assert_eq!(
        levels.first(),
        Some(&Level::Inactive),
        "rests inactive while running"
    );
    assert_eq!(
        levels.last(),
        Some(&Level::Active),
        "ends in its safe state"
    );
}

/// A reject output whose driver refuses every write to its active level (a vanished GPIO chip, an
/// I/O expander answering EIO).
struct RefusesActive;
impl OutputPin for RefusesActive {
    fn set(&mut self, level: Level) -> Result<(), GpioError> {
        match level {
            Level::Inactive => Ok(()),
            Level::Active => Err(GpioError::Io {
                role: "reject",
                chip: "gpiochip9".into(),
                line: "4".into(),
                source: std::io::Error::from_raw_os_error(libc::EIO).into(),
            }),
        }
    }
    fn describe(&self) -> String {
        "reject line 4 on gpiochip9".into()
    }
}

/// Runs the actuator on `line`'s alarm and ready outputs, with `outputs.reject` replaced by `reject`,
/// calls `act` with the link, then keeps the pipeline alive until `until` holds for the outputs
/// (at most 20 s: a hung condition fails the test, a slow machine does not) and 300 ms more, and
/// stops. Returns the line, the shared state, and the alarm and ready levels just before the stop.
fn actuator_until(
    reject: Box<dyn OutputPin>,
    act: impl FnOnce(&mut partguard::reject::ActuatorLink<'_>, &ActuatorShared, Duration),
    until: impl Fn(&SimLine) -> bool,
) -> (SimLine, ActuatorShared, Option<Level>, Option<Level>) {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let mut outputs = line.io().outputs;
    outputs.reject.pin = reject;
    let mut q = LinkQueue::new();
    let shared = ActuatorShared::default();
    shared.mark_alive(clock.now());
    let mut levels = (None, None);
    std::thread::scope(|scope| {
        let ([mut link], join) = spawn_actuator(
            scope,
            [&mut q],
            outputs,
            clock.clone(),
            ActuatorSettings {
                schedule: time_schedule(50, 10, 20, Policy::Reject),
                fifo_priority: 0,
                cpu: None,
            },
            None,
            &shared,
        )
        .unwrap();
        act(&mut link, &shared, clock.now());
        let t0 = std::time::Instant::now();
        let mut held_since = None;
        while held_since
            .is_none_or(|t: std::time::Instant| t.elapsed() < Duration::from_millis(300))
            && t0.elapsed() < Duration::from_secs(20)
        {
            if held_since.is_none() && until(&line) {
                held_since = Some(std::time::Instant::now());
            }
            shared.mark_alive(clock.now());
            join.thread().unpark();
            std::thread::sleep(Duration::from_millis(5));
        }
        levels = (line.alarm.level(), line.ready.level());
        shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        join.thread().unpark();
        join.join().unwrap();
    });
    (line, shared, levels.0, levels.1)
}

#[test]
fn a_reject_output_that_refuses_a_write_raises_the_alarm_and_holds_ready_inactive() {
    let _serial = serial();
    let (line, shared, alarm, ready) = actuator_until(
        Box::new(RefusesActive),
        |link, _, t0| {
            link.send(Msg::Register(PartStamp {
                seq: 0,
                time: t0,
                count: 0,
            }));
            link.send(Msg::Decide {
                seq: 0,
                verdict: Verdict::Reject,
                at: t0,
                count: 0,
            });
        },
        |line| line.ready.level() == Some(Level::Inactive),
    );
    // ready went inactive while the pipeline kept showing life (the refused write, not the exit),
    // and both stay so: ready inactive and the alarm on, 300 ms later and past the alarm's hold
    let edges = line.ready.edges();
    assert_eq!(
        edges.first().map(|e| e.level),
        Some(Level::Active),
        "{edges:?}"
    );
    assert_eq!(ready, Some(Level::Inactive), "{edges:?}");
    assert_eq!(alarm, Some(Level::Active), "{:?}", line.alarm.edges());
    assert_eq!(shared.report.lock().unwrap().output_errors, 1);
}

#[test]
fn a_message_lost_on_a_full_link_raises_the_alarm() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let (line, _, _, ready) = actuator_until(
        Box::new(SimulatedLine::new(clock, 16)),
        |_, shared, _| {
            // what `ActuatorLink::send` does when a message still finds the link full after 20 ms
            shared
                .lost
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
        |line| line.alarm.level() == Some(Level::Active),
    );
    assert!(
        line.alarm.edges().iter().any(|e| e.level == Level::Active),
        "the alarm was raised"
    );
    // the ready output stays healthy: the station itself works
    assert_eq!(ready, Some(Level::Active), "{:?}", line.ready.edges());
}

#[test]
fn a_paced_run_rejects_each_defective_part_at_capture_plus_delay() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let (mut insp, t0) = paced_inspector(5.0, sms(200));
    let stop = AtomicBool::new(false);
    // 800 ms to the ejector: a decision has 750 ms, several inferences' worth, so a loaded
    // 2-core CI machine does not turn a part late (it did once at 400 ms).
    let opts = options(time_schedule(800, 50, 15, Policy::Reject));
    let (s, lat) = run(&mut insp, line.io(), opts, &stop, None).unwrap();
    assert_eq!(
        (s.frames, s.counts.parts, s.counts.ok, s.counts.ng),
        (8, 8, 4, 4),
        "{s:?}"
    );
    assert_eq!(
        (
            s.counts.late,
            s.counts.faults,
            s.counts.missed,
            s.counts.overflows
        ),
        (0, 0, 0, 0)
    );
    // Samples in path order: broken_large/000, broken_small/000, contamination/000,
    // contamination/001, good x4; frames every 200 ms.
    let pulses = line.reject.pulses();
    assert_eq!(pulses.len(), 4, "{pulses:?}");
    for ((start, width), frame) in pulses.iter().zip([0, 1, 2, 3]) {
        assert_on_time(*start, t0 + sms(200 * frame + 800), "reject");
        assert!(*width >= sms(15));
    }
    assert_eq!(lat.onset.count, 4);
    assert_eq!(line.reject.level(), Some(Level::Inactive));
    assert!(line
        .alarm
        .edges()
        .iter()
        .all(|e| e.level == Level::Inactive));
    // Ready was on while inspecting and is off (its safe state) at the end.
    assert!(line.ready.edges().iter().any(|e| e.level == Level::Active));
    assert_eq!(line.ready.level(), Some(Level::Inactive));
}

/// The samples at 100 parts/s (scaled) against ~100 ms inferences: most frames find no free buffer.
fn overrun_run(policy: Policy) -> (partguard::pipeline::RunSummary, SimLine) {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let source = ReplaySource::open(&samples(), false, 100.0 / scale() as f64, 64).unwrap();
    let mut insp = inspector(source);
    let stop = AtomicBool::new(false);
    let opts = options(time_schedule(600, 50, 5, policy));
    let (s, _) = run(&mut insp, line.io(), opts, &stop, None).unwrap();
    assert_eq!(s.counts.parts, 8);
    assert!(s.counts.faults >= 3, "overruns expected: {s:?}");
    assert_eq!(
        s.counts.ok
            + s.counts.ng
            + s.counts.late
            + s.counts.faults
            + s.counts.missed
            + s.counts.overflows,
        8
    );
    assert!(line.alarm.edges().iter().any(|e| e.level == Level::Active));
    (s, line)
}

#[test]
fn a_line_faster_than_inference_overruns_into_fail_safe_rejects() {
    let _serial = serial();
    let (s, line) = overrun_run(Policy::Reject);
    assert_eq!(s.counts.failsafe_rejected, s.counts.faults + s.counts.late);
    assert!(
        s.counts.pulses >= 1
            && s.counts.pulses + s.counts.merged >= s.counts.ng + s.counts.failsafe_rejected
    );
    assert_eq!(line.alarm.level(), Some(Level::Inactive));
}

#[test]
fn the_pass_policy_lets_overruns_through_with_the_alarm() {
    let _serial = serial();
    let (s, _) = overrun_run(Policy::Pass);
    assert_eq!(s.counts.failsafe_passed, s.counts.faults + s.counts.late);
    assert_eq!(s.counts.failsafe_rejected, 0);
    assert_eq!(
        s.counts.pulses + s.counts.merged,
        s.counts.ng,
        "only real NG parts are rejected"
    );
}

fn rising(at: Duration) -> InputEdge {
    InputEdge {
        at,
        rising: true,
        lost: 0,
    }
}

#[test]
fn triggered_parts_get_their_frames_and_a_trigger_without_one_is_a_missed_frame() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let (mut insp, t0) = paced_inspector(5.0, sms(300));
    // Frames at t0 + k*200 ms. Photo-eye edges 20 ms before frames 0-4, 6 and 7 (early enough that
    // the simulated input thread, woken late on a loaded machine, still precedes the frame), with
    // contact bounce after the third; none before frame 5 (an untriggered frame), and one at 847 ms with no
    // frame in its 100 ms window (a missed frame; the next frame comes 153 ms later). The window is
    // wide so that a loaded CI machine delaying a frame by tens of ms does not fail the test.
    let mut edges = Vec::new();
    for k in [0u64, 1, 2, 3, 4] {
        edges.push(rising(t0 + sms(200 * k) - sms(20)));
        if k == 2 {
            edges.push(rising(t0 + sms(200 * k) - sms(19)));
        }
    }
    edges.push(rising(t0 + sms(847)));
    for k in [6u64, 7] {
        edges.push(rising(t0 + sms(200 * k) - sms(20)));
    }
    let mut io: LineIo = line.io();
    io.trigger = Some(Box::new(SimulatedInput::new(clock.clone(), edges)));
    let stop = AtomicBool::new(false);
    let mut opts = options(time_schedule(800, 50, 15, Policy::Reject));
    opts.trigger = Some(TriggerSettings {
        debounce: sms(5),
        window: sms(100),
    });
    let (s, _) = run(&mut insp, io, opts, &stop, None).unwrap();
    assert_eq!(
        (s.counts.parts, s.frames, s.untriggered, s.counts.missed),
        (8, 7, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        (s.counts.ng, s.counts.ok, s.counts.late),
        (4, 3, 0),
        "{s:?}"
    );
    // Rejects at trigger + 800 ms: broken_large (k=0), broken_small (k=1), contamination x2
    // (k=2, 3), the missed part.
    let pulses = line.reject.pulses();
    assert_eq!(pulses.len(), 5, "{pulses:?}");
    for ((start, _), trig) in pulses.iter().zip([-20i64, 180, 380, 580, 847]) {
        let due = Duration::from_nanos(
            (t0.as_nanos() as i64 + (trig + 800) * 1_000_000 * scale() as i64) as u64,
        );
        assert_on_time(*start, due, "triggered reject");
    }
}

#[test]
fn parts_passing_the_photo_eye_while_the_encoder_does_not_count_raise_the_alarm() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let (mut insp, t0) = paced_inspector(5.0, sms(300));
    let edges = (0..4u64)
        .map(|k| rising(t0 + sms(200 * k) - sms(20)))
        .collect();
    let mut io: LineIo = line.io();
    io.trigger = Some(Box::new(SimulatedInput::new(clock.clone(), edges)));
    // a dead encoder: not one tick
    io.encoder = Some(Box::new(SimulatedInput::new(clock.clone(), Vec::new())));
    let stop = AtomicBool::new(false);
    let mut sched = time_schedule(0, 0, 15, Policy::Reject);
    sched.delay = Delay::Ticks {
        ticks: 700,
        margin: 30,
    };
    let mut opts = options(sched);
    opts.trigger = Some(TriggerSettings {
        debounce: sms(5),
        window: sms(100),
    });
    let (s, _) = run(&mut insp, io, opts, &stop, None).unwrap();
    assert_eq!(s.counts.parts, 4, "{s:?}");
    assert!(
        line.alarm.edges().iter().any(|e| e.level == Level::Active),
        "the alarm was not raised: {s:?}"
    );
}

/// The paced line with one encoder tick per millisecond from t0 - 100 ms on (the edges `keep`
/// passes reach partguard, each carrying the count of those dropped before it) and the ejector 700
/// ticks downstream: every reject fires when its part has travelled the 700 ticks.
fn encoder_run(keep: impl Fn(u64) -> bool) {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let (mut insp, t0) = paced_inspector(5.0, sms(300));
    let mut dropped = 0;
    let ticks: Vec<InputEdge> = (0..2600u64)
        .filter_map(|i| {
            if !keep(i) {
                dropped += 1;
                return None;
            }
            let edge = InputEdge {
                lost: dropped,
                ..rising(t0 - sms(100) + sms(i))
            };
            dropped = 0;
            Some(edge)
        })
        .collect();
    let mut io = line.io();
    io.encoder = Some(Box::new(SimulatedInput::new(clock.clone(), ticks)));
    let stop = AtomicBool::new(false);
    let mut sched = time_schedule(0, 0, 15, Policy::Reject);
    sched.delay = Delay::Ticks {
        ticks: 700,
        margin: 30,
    };
    let (s, lat) = run(&mut insp, io, options(sched), &stop, None).unwrap();
    assert_eq!(
        (s.counts.parts, s.counts.ng, s.counts.ok, s.counts.late),
        (8, 4, 4, 0),
        "{s:?}"
    );
    assert_eq!(lat.onset.count, 0, "onset errors are a time-mode figure");
    let pulses = line.reject.pulses();
    assert_eq!(pulses.len(), 4, "{pulses:?}");
    for ((start, _), frame) in pulses.iter().zip([0u64, 1, 2, 3]) {
        assert_on_time(*start, t0 + sms(200 * frame + 700), "encoder reject");
    }
}

#[test]
fn encoder_delays_fire_when_the_part_has_travelled_its_ticks() {
    let _serial = serial();
    encoder_run(|_| true);
}

#[test]
fn encoder_edges_the_kernel_dropped_still_count() {
    let _serial = serial();
    // the kernel's buffer overflowing: only every 2nd tick reaches partguard (1 ms apart: the
    // onsets stay within the check's 2 ms of quantization); without the dropped ones counted,
    // every reject would fire 700 ticks late, a part too far
    encoder_run(|i| i % 2 == 1);
}

/// The real engine until its third run, then a panic (a bug in a stage).
struct PanicsOnThirdRun(partguard::infer::TractEngine, u32);

impl partguard::infer::Engine for PanicsOnThirdRun {
    fn info(&self) -> &partguard::infer::ModelInfo {
        self.0.info()
    }
    fn input_mut(&mut self) -> &mut [f32] {
        self.0.input_mut()
    }
    fn run(&mut self) -> Result<partguard::infer::Inference<'_>, partguard::infer::ModelError> {
        self.1 += 1;
        if self.1 == 3 {
            panic!("injected panic in the inference stage");
        }
        self.0.run()
    }
}

#[test]
fn a_panic_in_the_inference_thread_puts_the_outputs_in_their_safe_state_at_once() {
    let _serial = serial();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let source = ReplaySource::open(&samples(), true, 5.0 / scale() as f64, 64).unwrap();
    let engine = partguard::infer::TractEngine::load(&f32_model()).unwrap();
    let mut insp = partguard::pipeline::Inspector::new(
        Box::new(source),
        Box::new(PanicsOnThirdRun(engine, 0)),
        threshold(),
        clock.clone(),
    );
    // An encoder thread too: it must not keep the run alive after the panic.
    let ticks: Vec<InputEdge> = (0..100_000u64)
        .map(|i| rising(clock.now() + sms(i)))
        .collect();
    let mut io = line.io();
    io.encoder = Some(Box::new(SimulatedInput::new(clock.clone(), ticks)));
    let mut sched = time_schedule(0, 0, 15, Policy::Reject);
    sched.delay = Delay::Ticks {
        ticks: 5000,
        margin: 100,
    };
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("stats.json");
    let mut opts = options(sched);
    opts.stats_json = Some(json.clone());
    let result = run(&mut insp, io, opts, &stop, None);
    // The panic ends the run as a fault that names the stage and the panic's message.
    match result {
        Err(
            e @ partguard::pipeline::StageError::Panicked {
                stage: "inference", ..
            },
        ) => {
            assert!(
                e.to_string()
                    .contains("injected panic in the inference stage"),
                "{e}"
            );
        }
        other => panic!("expected the inference thread's panic as an error, got {other:?}"),
    }
    // The final statistics were still written: two parts judged before the panic.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["counts"]["frames"], 2, "{doc}");
    assert!(doc["counts"]["parts"].as_u64().unwrap() >= 2, "{doc}");
    assert!(
        started.elapsed() < sms(4000),
        "the run did not wait for the 5 s of pending parts: {:?}",
        started.elapsed()
    );
    assert_eq!(line.reject.level(), Some(Level::Inactive));
    assert_eq!(line.ready.level(), Some(Level::Inactive));
}
