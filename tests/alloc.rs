//! A counting global allocator measures what the steady-state frame loop allocates after warm-up.
//!
//! partguard's own stages (capture from a preloaded replay, conversion, resize, tensor fill, decision,
//! statistics, the reject queue) must allocate nothing. tract allocates its intermediate tensors on
//! every run (it has no arena for CPU plans); that count is measured, must be the same on every frame
//! (no growth), and the whole loop must add nothing on top of it.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use partguard::archive::{Archive, ArchiveSettings};
use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::config::{HttpConfig, MqttConfig};
use partguard::decide::decide;
use partguard::infer::TractEngine;
use partguard::pipeline::{run, Inspector};
use partguard::schedule::Policy;
use partguard::stats::Stage;
use partguard::telemetry::{StationInfo, Telemetry, TelemetryService};

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
    run_frames_with(frames, archive, None)
}

/// The same, optionally with the telemetry (page, metrics, MQTT) fed by the line.
fn run_frames_with(
    frames: u64,
    archive: Option<&Path>,
    telemetry: Option<&Telemetry>,
) -> (u64, u64) {
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
    opts.telemetry = telemetry.cloned();
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

    // 5. With the page, /metrics and MQTT on (a client polling the frame and the metrics all the
    //    time, so frames are copied for the page; a broker that is not there, so results pile up
    //    and are dropped on the telemetry thread), the inference thread still adds nothing.
    let t = Telemetry::new(StationInfo::default(), "decision.threshold".into());
    let http = HttpConfig {
        listen: "127.0.0.1:0".into(),
        token: None,
    };
    let mqtt = MqttConfig {
        broker: format!("mqtt://127.0.0.1:{}", closed_port()),
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        client_id: Some("alloc-test".into()),
        topic_prefix: None,
        qos: 1,
        username: None,
        password_file: None,
        status_interval_s: 0.5,
        buffer: 4,
    };
    let service = TelemetryService::start(&t, Some(&http), Some(&mqtt)).unwrap();
    let addr = service.local_addr().unwrap();
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let polling = polling.clone();
        std::thread::spawn(move || {
            let mut fetched = 0u64;
            while polling.load(Ordering::Relaxed) {
                for path in ["/api/frame.jpg", "/metrics", "/api/status"] {
                    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                        let _ = write!(
                            s,
                            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        );
                        let mut body = Vec::new();
                        let _ = s.read_to_end(&mut body);
                        let frame = path.ends_with(".jpg") && body.starts_with(b"HTTP/1.1 200");
                        fetched += u64::from(frame);
                    }
                }
            }
            fetched
        })
    };
    let (_, short_here) = run_frames_with(short_run, None, Some(&t));
    let (_, long_here) = run_frames_with(long_run, None, Some(&t));
    polling.store(false, Ordering::Relaxed);
    let fetched = poller.join().unwrap();
    service.stop();
    assert!(fetched > 0, "no frame was ever copied for the page");
    assert_eq!(
        long_here - short_here,
        extra * tract,
        "with the telemetry, the inference thread allocated {} times per frame beyond tract's {tract}",
        (long_here - short_here) as f64 / extra as f64 - tract as f64
    );
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Aligning the part (found, turned and cropped in every frame, for a model trained on aligned
/// parts) runs on buffers kept from the first frame of a size: nothing per frame after it.
#[test]
fn part_alignment_allocates_nothing_per_frame() {
    use partguard::preprocess::{Alignment, InputSpec, Preprocessor};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let frames: Vec<Vec<u8>> = ["good", "defect"]
        .iter()
        .map(|k| {
            image::open(root.join(format!("examples/samples/screw/{k}/000.png")))
                .unwrap()
                .into_rgb8()
                .into_raw()
        })
        .collect();
    let mut pre = Preprocessor::new(InputSpec {
        width: 240,
        height: 64,
        scale: 1.0 / 255.0,
        offset: 0.0,
        align: Some(Alignment {
            rotate: true,
            box_h: 69,
            box_w: 246,
        }),
    });
    let mut input = vec![0f32; 3 * 240 * 64];
    for rgb in &frames {
        pre.fill_tensor_from(rgb, 256, 256, &mut input).unwrap();
    }
    let before = thread_allocs();
    for i in 0..20 {
        pre.fill_tensor_from(&frames[i % 2], 256, 256, &mut input)
            .unwrap();
        assert!(pre.pose().is_some());
    }
    assert_eq!(
        thread_allocs() - before,
        0,
        "allocations in 20 aligned frames"
    );
}
