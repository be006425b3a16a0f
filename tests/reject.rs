//! The reject actuator on a simulated line: deterministic edges with a simulated clock, and the whole
//! loop in real time with the real model.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock, SimClock};
use partguard::infer::TractEngine;
use partguard::output::{Edge, Level, OutputPin, SimulatedLine};
use partguard::pipeline::{run, Inspector, RunOptions};
use partguard::reject::{spawn_actuator, PulseQueue, PulseSettings};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Fires pulses at `starts` on a simulated clock and returns the recorded edges.
fn actuate(starts: &[u64], width: u64, safe: Level) -> (Vec<Edge>, SimulatedLine) {
    let clock = SimClock::new();
    let line = SimulatedLine::new(Arc::new(clock.clone()), 64);
    let mut queue = PulseQueue::new();
    let stop = AtomicBool::new(false);
    let settings = PulseSettings {
        width: ms(width),
        safe,
    };
    std::thread::scope(|s| {
        let (mut handle, join) = spawn_actuator(
            s,
            &mut queue,
            Box::new(line.clone()),
            Arc::new(clock.clone()),
            settings,
            &stop,
        )
        .unwrap();
        for &t in starts {
            assert!(handle.fire_at(ms(t)));
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        join.thread().unpark();
        join.join().unwrap();
    });
    (line.edges(), line)
}

#[test]
fn pulses_start_on_time_with_the_configured_width() {
    let (edges, line) = actuate(&[100, 300, 1000], 50, Level::Inactive);
    let expected = [
        (0, Level::Inactive),
        (100, Level::Active),
        (150, Level::Inactive),
        (300, Level::Active),
        (350, Level::Inactive),
        (1000, Level::Active),
        (1050, Level::Inactive),
    ];
    let got: Vec<(u64, Level)> = edges
        .iter()
        .map(|e| (e.at.as_millis() as u64, e.level))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        line.pulses(),
        vec![(ms(100), ms(50)), (ms(300), ms(50)), (ms(1000), ms(50))]
    );
    assert_eq!(line.level(), Some(Level::Inactive));
}

#[test]
fn an_active_safe_state_is_restored_on_exit() {
    let (edges, line) = actuate(&[10], 5, Level::Active);
    // idle inactive while running, active again once stopped
    let levels: Vec<Level> = edges.iter().map(|e| e.level).collect();
    assert_eq!(
        levels,
        vec![
            Level::Inactive,
            Level::Active,
            Level::Inactive,
            Level::Active
        ]
    );
    assert_eq!(line.level(), Some(Level::Active));
}

/// A pin whose first `set(Active)` blocks until the test releases it, so the queue can be filled
/// while the actuator is provably busy.
struct BlockingPin {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    blocked_once: bool,
}

impl OutputPin for BlockingPin {
    fn set(&mut self, level: Level) -> Result<(), partguard::output::OutputError> {
        if level == Level::Active && !self.blocked_once {
            self.blocked_once = true;
            self.entered.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "blocking test pin".into()
    }
}

#[test]
fn a_full_queue_refuses_the_pulse_and_counts_it() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let pin = BlockingPin {
        entered: entered_tx,
        release: std::sync::Mutex::new(release_rx),
        blocked_once: false,
    };
    let clock = SimClock::new();
    let mut queue = PulseQueue::new();
    let stop = AtomicBool::new(false);
    let settings = PulseSettings {
        width: ms(1),
        safe: Level::Inactive,
    };
    std::thread::scope(|s| {
        let (mut handle, join) = spawn_actuator(
            s,
            &mut queue,
            Box::new(pin),
            Arc::new(clock.clone()),
            settings,
            &stop,
        )
        .unwrap();
        assert!(handle.fire_at(ms(1)));
        entered_rx.recv().unwrap(); // the actuator is now inside the first pulse
                                    // heapless' spsc queue holds capacity - 1 items
        for i in 0..partguard::reject::QUEUE_CAPACITY as u64 - 1 {
            assert!(
                handle.fire_at(ms(10 + i)),
                "pulse {i} refused before the queue was full"
            );
        }
        assert!(!handle.fire_at(ms(5000)), "a full queue accepted a pulse");
        assert_eq!(
            handle
                .counters
                .overflows
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        release_tx.send(()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Release);
        join.thread().unpark();
        join.join().unwrap();
        assert_eq!(
            handle
                .counters
                .pulses
                .load(std::sync::atomic::Ordering::Relaxed),
            partguard::reject::QUEUE_CAPACITY as u64
        );
    });
}

/// The whole loop in real time: replay -> real model -> decision -> actuator thread -> simulated line.
#[test]
fn real_time_run_fires_one_pulse_per_rejected_part_and_ends_safe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimulatedLine::new(clock.clone(), 256);
    let source =
        ReplaySource::open(&root.join("examples/samples/bottle"), false, 20.0, 64).unwrap();
    let engine = TractEngine::load(&root.join("models/bottle_sspcab_f32.onnx")).unwrap();
    let cfg = partguard::config::Config::builtin().unwrap();
    let mut inspector = Inspector::new(
        Box::new(source),
        Box::new(engine),
        cfg.decision.threshold.unwrap(),
        clock.clone(),
    );
    let opts = RunOptions {
        pulse: PulseSettings {
            width: ms(15),
            safe: Level::Inactive,
        },
        print_decisions: false,
        status_interval: None,
        max_frames: None,
    };
    let stop = AtomicBool::new(false);
    let (summary, _) = run(&mut inspector, Box::new(line.clone()), opts, &stop, None).unwrap();
    assert_eq!(summary.frames, 8);
    assert_eq!(summary.faults, 0);
    assert_eq!(
        summary.ng, 3,
        "3 of the 4 defective samples are rejected (broken_small/000 is missed, see tests/model.rs), the good ones pass"
    );
    assert_eq!(summary.pulses, summary.ng);
    let pulses = line.pulses();
    assert_eq!(pulses.len() as u64, summary.ng);
    for (_, width) in &pulses {
        assert!(*width >= ms(15), "pulse shorter than configured: {width:?}");
    }
    assert_eq!(line.level(), Some(Level::Inactive));
}

#[test]
fn simulated_line_reports_each_change_once() {
    let clock = SimClock::new();
    let mut line = SimulatedLine::new(Arc::new(clock.clone()), 8);
    line.set(Level::Inactive).unwrap();
    line.set(Level::Inactive).unwrap();
    clock.advance(ms(5));
    line.set(Level::Active).unwrap();
    assert_eq!(
        line.edges(),
        vec![
            Edge {
                at: ms(0),
                level: Level::Inactive
            },
            Edge {
                at: ms(5),
                level: Level::Active
            }
        ]
    );
}
