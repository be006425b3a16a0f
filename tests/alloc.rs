//! A counting global allocator measures what the steady-state frame loop allocates after warm-up.
//!
//! partguard's own stages (capture from a preloaded replay, conversion, resize, tensor fill, decision,
//! statistics, the reject queue) must allocate nothing. tract allocates its intermediate tensors on
//! every run (it has no arena for CPU plans); that count is measured, must be the same on every frame
//! (no growth), and the whole loop must add nothing on top of it.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use partguard::archive::{Archive, ArchiveSettings};
use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::decide::decide;
use partguard::infer::TractEngine;
use partguard::pipeline::{run, Inspector};
use partguard::schedule::Policy;
use partguard::stats::Stage;

mod common;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocs, thread_allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn inspector() -> Inspector {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = ReplaySource::open(&root.join("examples/samples/bottle"), true, 0.0, 64).unwrap();
    let engine = TractEngine::load(&root.join("models/bottle_sspcab_f32.onnx")).unwrap();
    Inspector::new(
        Box::new(source),
        Box::new(engine),
        common::threshold(),
        Arc::new(MonotonicClock),
    )
}

/// Runs the whole threaded line (capture thread, inference, reject actuator, simulated outputs) for
/// `frames` frames and returns the allocations it made.
fn run_frames(frames: u64) -> u64 {
    run_frames_archiving(frames, None).0
}

/// The same with the reject archive on when `archive` names a folder; also returns the allocations
/// of the inference loop's thread alone (the archive's writer thread allocates as it encodes PNGs).
fn run_frames_archiving(frames: u64, archive: Option<&Path>) -> (u64, u64) {
    let mut insp = inspector();
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = common::SimLine::new(clock);
    let opts = common::options(common::time_schedule(1000, 20, 1, Policy::Reject));
    let mut opts = opts;
    opts.max_frames = Some(frames);
    opts.archive = archive.map(|dir| {
        Archive::open(ArchiveSettings {
            dir: dir.to_owned(),
            max_images: 8,
            max_bytes: 64 << 20,
        })
        .unwrap()
    });
    let io = line.io();
    let stop = AtomicBool::new(false);
    let before = allocs();
    let before_here = thread_allocs();
    let (summary, _) = run(&mut insp, io, opts, &stop, None).unwrap();
    let used = allocs() - before;
    let used_here = thread_allocs() - before_here;
    assert_eq!(summary.frames, frames);
    if archive.is_some() {
        // Half the samples are defective: they reach the archive.
        assert!(summary.archived + summary.archive_dropped >= frames / 2 - 1);
    }
    (used, used_here)
}

#[test]
fn steady_state_frame_loop_allocates_only_what_tract_allocates() {
    // Under emulation (one inference takes seconds) the same checks run on fewer frames.
    let (warm, tract_runs, short_run, long_run) = if common::emulated() {
        (8, 3, 4, 12)
    } else {
        (16, 10, 16, 48)
    };
    let mut insp = inspector();
    // Warm-up: every sample once through every stage (buffers sized, tract state primed).
    for _ in 0..warm {
        insp.inspect_next().unwrap().unwrap();
    }

    // 1. partguard's own stages: zero allocations over 40 frames.
    let before = allocs();
    for _ in 0..40 {
        let Inspector {
            source,
            pre,
            engine,
            stats,
            ..
        } = &mut insp;
        let frame = source.next_frame().unwrap().unwrap();
        pre.convert(&frame).unwrap();
        pre.fill_tensor(frame.width, frame.height, engine.input_mut())
            .unwrap();
        let v = decide(0.3, 0.5);
        stats.record(Stage::Decision, std::time::Duration::from_micros(3));
        std::hint::black_box(v);
    }
    let _ = insp.stats.summary(Stage::Decision);
    let own = allocs() - before;
    assert_eq!(
        own, 0,
        "capture/convert/preprocess/decide/stats allocated {own} times in 40 frames"
    );

    // 2. tract: the same number of allocations on every run, no growth.
    let mut per_run = Vec::new();
    for _ in 0..tract_runs {
        let before = allocs();
        let inf = insp.engine.run().unwrap();
        std::hint::black_box(inf.score);
        per_run.push(allocs() - before);
    }
    assert!(
        per_run.windows(2).all(|w| w[0] == w[1]),
        "tract allocations vary per run: {per_run:?}"
    );
    let tract = per_run[0];
    eprintln!("tract allocations per inference: {tract}");

    // 3. The whole loop (actuator thread and reject queue included) adds nothing per frame on top of
    //    tract: N more frames cost exactly N more inferences' worth.
    let short = run_frames(short_run);
    let long = run_frames(long_run);
    let extra = long_run - short_run;
    assert_eq!(
        long - short,
        extra * tract,
        "the loop allocated {} times per frame beyond tract's {tract}",
        (long - short) as f64 / extra as f64 - tract as f64
    );

    // 4. With the reject archive on, handing rejected parts to its writer adds nothing to the
    //    inference loop's thread (each of its slots is sized by its first part, in both runs).
    let dir = tempfile::tempdir().unwrap();
    let (_, short_here) = run_frames_archiving(short_run, Some(&dir.path().join("a")));
    let (_, long_here) = run_frames_archiving(long_run, Some(&dir.path().join("b")));
    assert_eq!(
        long_here - short_here,
        extra * tract,
        "with the archive, the inference thread allocated {} times per frame beyond tract's {tract}",
        (long_here - short_here) as f64 / extra as f64 - tract as f64
    );
}
