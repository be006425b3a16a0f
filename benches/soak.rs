//! Soak: the whole threaded line (replay capture thread, conversion, ROI resize, tract, decision,
//! reject actuator on simulated outputs, optionally the reject archive) for a million frames, with
//! RSS and allocations sampled while it runs.
//!
//! ```text
//! cargo bench --bench soak -- [--frames N] [--model M.onnx] [--rate HZ] [--archive DIR] [--every S]
//! ```
//!
//! The default model is the 4x4 contract model of the fuzz seeds (`tiny_contract.onnx`: the map is
//! the mean of the colour channels, the score its maximum): it keeps inference out of the way, so a
//! million frames take minutes and the figures are those of partguard's own loop. The shipped model
//! (`--model models/bottle_sspcab_f32.onnx`, ~8 frames/s here) soaks the same loop at its real pace.
//! The threshold is the median score of the 8 samples, so half the parts are rejected.
//!
//! Allocations are counted by a global allocator; those made inside the engine's `run` (tract's
//! intermediate tensors) are counted apart. Reported: partguard's own allocations per frame after
//! warm-up (must be 0), tract's per inference, RSS at the first sample after warm-up and at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use partguard::archive::{Archive, ArchiveSettings};
use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::gpio::{Level, SimulatedLine};
use partguard::infer::{Engine, Inference, ModelError, ModelInfo, TractEngine};
use partguard::pipeline::{run, Inspector, LineIo, RunOptions};
use partguard::reject::{ActuatorSettings, Outputs, SafeOutput};
use partguard::schedule::{Delay, Policy, SchedulerSettings};

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocs, exempt_this_thread, thread_allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The engine, with its runs and the allocations made inside them counted.
struct Counted {
    inner: TractEngine,
    runs: Arc<AtomicU64>,
    inside: Arc<AtomicU64>,
}

impl Engine for Counted {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn input_mut(&mut self) -> &mut [f32] {
        self.inner.input_mut()
    }
    fn run(&mut self) -> Result<Inference<'_>, ModelError> {
        let before = thread_allocs();
        let r = self.inner.run();
        self.inside
            .fetch_add(thread_allocs() - before, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        r
    }
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    frames: u64,
    rss_kib: u64,
    allocs: u64,
    engine_allocs: u64,
}

struct Args {
    frames: u64,
    model: PathBuf,
    rate: f64,
    archive: Option<PathBuf>,
    every: f64,
}

fn args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        frames: 1_000_000,
        model: root.join("tests/fuzz/seeds/model_metadata/tiny_contract.onnx"),
        rate: 0.0,
        archive: None,
        every: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--frames" => a.frames = v().parse().unwrap_or(a.frames),
            "--model" => a.model = PathBuf::from(v()),
            "--rate" => a.rate = v().parse().unwrap_or(0.0),
            "--archive" => a.archive = Some(PathBuf::from(v())),
            "--every" => a.every = v().parse().unwrap_or(10.0),
            _ => {} // `cargo bench` adds --bench
        }
    }
    a
}

fn main() {
    let a = args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let samples = root.join("examples/samples/bottle");
    let source = ReplaySource::open(&samples, true, a.rate, 64).expect("sample images");
    let runs = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicU64::new(0));
    let engine = Counted {
        inner: TractEngine::load(&a.model).expect("model"),
        runs: runs.clone(),
        inside: inside.clone(),
    };
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let mut insp = Inspector::new(Box::new(source), Box::new(engine), 0.0, clock.clone());
    // Threshold: the median score of the samples (half the parts are rejected).
    let mut scores: Vec<f32> = (0..8)
        .map(|_| insp.inspect_next().expect("frame").expect("looping").score)
        .collect();
    scores.sort_by(f32::total_cmp);
    insp.threshold = (scores[3] + scores[4]) / 2.0;

    // The simulated outputs keep only their first edges (the rest are counted): their records are
    // preallocated, and a long record's pages, touched one by one as edges come, would read as
    // RSS growth that is the test fixture's, not partguard's.
    let line = SimulatedLine::new(clock.clone(), 64);
    let alarm = SimulatedLine::new(clock.clone(), 64);
    let out = |l: &SimulatedLine| SafeOutput {
        pin: Box::new(l.clone()),
        safe: Level::Inactive,
    };
    let io = LineIo {
        outputs: Outputs {
            reject: out(&line),
            alarm: Some(out(&alarm)),
            ready: None,
            heartbeat: None,
        },
        trigger: None,
        encoder: None,
    };
    // A short conveyor: a few dozen parts in flight at tens of thousands of frames per second.
    let opts = RunOptions {
        actuator: ActuatorSettings {
            schedule: SchedulerSettings {
                delay: Delay::Time {
                    delay: Duration::from_millis(30),
                    margin: Duration::from_millis(5),
                },
                pulse: Duration::from_millis(1),
                min_gap: Duration::from_millis(1),
                queue_size: 256,
                policy: Policy::Reject,
                alarm_hold: Duration::from_millis(200),
            },
            fifo_priority: 0,
            cpu: None,
        },
        trigger: None,
        inference_cpu: None,
        print_decisions: false,
        status_interval: None,
        max_frames: Some(a.frames),
        stats_json: None,
        archive: a.archive.as_ref().map(|dir| {
            Archive::open(ArchiveSettings {
                dir: dir.clone(),
                max_images: 200,
                max_bytes: 100 << 20,
            })
            .expect("archive folder")
        }),
        archive_faults: true,
        telemetry: None,
    };
    println!(
        "soak: {} frames, model {}, threshold {:.4}, rate {}",
        a.frames,
        a.model.display(),
        insp.threshold,
        if a.rate > 0.0 {
            format!("{} Hz", a.rate)
        } else {
            "unpaced".into()
        }
    );

    let done = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let every = Duration::from_secs_f64(a.every);
    let (result, samples) = std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            exempt_this_thread();
            let mut samples = Vec::new();
            let mut next = Duration::ZERO;
            while !done.load(Ordering::Acquire) {
                let at = started.elapsed();
                if at >= next {
                    let smp = Sample {
                        at,
                        frames: runs.load(Ordering::Relaxed),
                        rss_kib: rss_kib(),
                        allocs: allocs(),
                        engine_allocs: inside.load(Ordering::Relaxed),
                    };
                    println!(
                        "{:>7.1} s  frames {:>9}  RSS {:>7} KiB  allocations: partguard {:>9} tract {:>11}",
                        smp.at.as_secs_f64(),
                        smp.frames,
                        smp.rss_kib,
                        smp.allocs - smp.engine_allocs,
                        smp.engine_allocs
                    );
                    samples.push(smp);
                    next = at + every;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        let r = run(&mut insp, io, opts, &stop, None);
        done.store(true, Ordering::Release);
        (r, monitor.join().unwrap_or_default())
    });
    let wall = started.elapsed();
    let (summary, latency) = result.expect("run");
    println!("summary: {summary:?}");
    for (name, lat) in &latency.stages {
        println!("latency {name}: {lat}");
    }
    println!("reject onset error: {}", latency.onset);
    // Steady state: from the first sample with 1% of the frames done to the last sample taken
    // while the loop ran.
    let warm = a.frames / 100;
    let first = samples.iter().find(|s| s.frames >= warm.max(1000)).copied();
    let last = samples.last().copied();
    if let (Some(f), Some(l)) = (first, last) {
        let frames = l.frames.saturating_sub(f.frames).max(1);
        let own = (l.allocs - l.engine_allocs) - (f.allocs - f.engine_allocs);
        let engine = l.engine_allocs - f.engine_allocs;
        let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        println!(
            "steady state: frames {} -> {} over {:.1} s | RSS {} KiB -> {} KiB (max {} KiB) | partguard allocations {} ({:.4} per frame) | tract allocations {:.1} per inference",
            f.frames,
            l.frames,
            (l.at - f.at).as_secs_f64(),
            f.rss_kib,
            l.rss_kib,
            max_rss,
            own,
            own as f64 / frames as f64,
            engine as f64 / frames as f64
        );
    }
    println!(
        "soak: {} frames in {:.1} s = {:.0} frames/s; RSS at end {} KiB; simulated reject edges kept {} (dropped beyond the record: {})",
        summary.frames,
        wall.as_secs_f64(),
        summary.frames as f64 / wall.as_secs_f64(),
        rss_kib(),
        line.edges().len(),
        line.dropped()
    );
}
