//! Helpers shared by the integration tests: the sample folder, the shipped model, and a line of
//! simulated outputs.
#![allow(dead_code)]

pub mod config;
pub mod station;
pub mod values;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::gpio::{Level, SimulatedLine};
use partguard::infer::TractEngine;
use partguard::pipeline::{Inspector, LineIo, RunOptions};
use partguard::reject::{ActuatorSettings, Outputs, SafeOutput};
use partguard::schedule::{Delay, Policy, SchedulerSettings};

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// How much slower than real time the real-time tests run: 1 natively; under emulation
/// (`cross/test-aarch64.sh` runs the suite under qemu-user, where one inference takes seconds) the
/// script sets `PARTGUARD_TEST_TIME_SCALE`, which stretches part rates, delays, windows and slacks
/// alike, so the same scenarios keep their meaning.
pub fn scale() -> u64 {
    std::env::var("PARTGUARD_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v >= 1)
        .unwrap_or(1)
}

/// `v` milliseconds of line time, stretched by [`scale`].
pub fn sms(v: u64) -> Duration {
    ms(v * scale())
}

/// A command running the partguard binary `exe`. Cross-compiled tests run under qemu-user, which
/// does not follow a child's exec: `cross/test-aarch64.sh` names the emulator in
/// `PARTGUARD_TEST_RUNNER`, and the binary runs under it.
pub fn partguard_bin(exe: &str) -> std::process::Command {
    match std::env::var_os("PARTGUARD_TEST_RUNNER") {
        Some(runner) => {
            let mut c = std::process::Command::new(runner);
            c.arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}

/// The partguard binary of this build, logging at `level` (`RUST_LOG`).
pub fn partguard(level: &str) -> std::process::Command {
    let mut c = partguard_bin(env!("CARGO_BIN_EXE_partguard"));
    c.env("RUST_LOG", level);
    c
}

/// Runs the partguard binary `exe` with `--config config` and `args`, errors-only logging, to the end.
pub fn run_with_config(exe: &str, config: &Path, args: &[&str]) -> std::process::Output {
    partguard_bin(exe)
        .env("RUST_LOG", "error")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Whether the tests run emulated (scaled).
pub fn emulated() -> bool {
    scale() > 1
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn samples() -> PathBuf {
    root().join("examples/samples/bottle")
}

pub fn f32_model() -> PathBuf {
    root().join("models/bottle_sspcab_f32.onnx")
}

/// The shipped threshold of the built-in config.
pub fn threshold() -> f32 {
    partguard::config::Config::builtin()
        .unwrap()
        .decision
        .threshold
        .unwrap()
}

/// An inspector over the 8 samples with the f32 model, on the monotonic clock.
pub fn inspector(source: ReplaySource) -> Inspector {
    let engine = TractEngine::load(&f32_model()).unwrap();
    Inspector::new(
        Box::new(source),
        Box::new(engine),
        threshold(),
        Arc::new(MonotonicClock),
    )
}

/// An inspector over the samples replayed at `rate_hz` (divided by [`scale`]), whose first frame
/// comes at the returned time (`lead` from now, after the model is loaded), then one every period.
pub fn paced_inspector(rate_hz: f64, lead: Duration) -> (Inspector, Duration) {
    let engine = TractEngine::load(&f32_model()).unwrap();
    let clock = MonotonicClock;
    let rate_hz = rate_hz / scale() as f64;
    let mut source = ReplaySource::open(&samples(), false, rate_hz, 64).unwrap();
    let t0 = clock.now() + lead;
    source.start_at(t0);
    let insp = Inspector::new(
        Box::new(source),
        Box::new(engine),
        threshold(),
        Arc::new(MonotonicClock),
    );
    (insp, t0)
}

/// Simulated reject, alarm and ready outputs; the clones stay with the test.
pub struct SimLine {
    pub reject: SimulatedLine,
    pub alarm: SimulatedLine,
    pub ready: SimulatedLine,
}

impl SimLine {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        SimLine {
            reject: SimulatedLine::new(clock.clone(), 4096),
            alarm: SimulatedLine::new(clock.clone(), 4096),
            ready: SimulatedLine::new(clock, 4096),
        }
    }

    pub fn io(&self) -> LineIo {
        let out = |l: &SimulatedLine| SafeOutput {
            pin: Box::new(l.clone()),
            safe: Level::Inactive,
        };
        LineIo {
            outputs: Outputs {
                reject: out(&self.reject),
                alarm: Some(out(&self.alarm)),
                ready: Some(out(&self.ready)),
                heartbeat: None,
            },
            trigger: None,
            encoder: None,
        }
    }
}

/// Delay, margin and pulse in scaled milliseconds ([`sms`]).
pub fn time_schedule(delay: u64, margin: u64, pulse: u64, policy: Policy) -> SchedulerSettings {
    SchedulerSettings {
        delay: Delay::Time {
            delay: sms(delay),
            margin: sms(margin),
        },
        pulse: sms(pulse),
        min_gap: ms(0),
        queue_size: 64,
        policy,
        alarm_hold: sms(200),
    }
}

pub fn options(schedule: SchedulerSettings) -> RunOptions {
    RunOptions {
        actuator: ActuatorSettings {
            schedule,
            fifo_priority: 0,
            cpu: None,
        },
        trigger: None,
        inference_cpu: None,
        print_decisions: false,
        status_interval: None,
        max_frames: None,
        stats_json: None,
        archive: None,
        archive_faults: true,
        telemetry: None,
    }
}

/// One decision line that `partguard run` prints, e.g.
/// `part     0  NG     score 0.4640  broken_large/000.png`.
#[derive(Debug, Clone, Copy)]
pub struct PartLine<'a> {
    pub rejected: bool,
    pub score: f32,
    pub file: &'a str,
}

/// The decision lines of `partguard run`'s stdout, in order; panics on a malformed one.
pub fn part_lines(stdout: &str) -> Vec<PartLine<'_>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("part "))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            match fields[..] {
                ["part", _, verdict, "score", score, file] => PartLine {
                    rejected: verdict == "NG",
                    score: score
                        .parse()
                        .unwrap_or_else(|e| panic!("score in {l:?}: {e}")),
                    file,
                },
                _ => panic!("not a decision line: {l:?}"),
            }
        })
        .collect()
}
