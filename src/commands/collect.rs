//! `partguard collect`: saves what the model will see (the `[roi]` crop of each frame, full
//! resolution, PNG) from the configured source into a training folder with a manifest. With a
//! `[trigger]`, one image per part; otherwise frames, thinned by `--every-ms` and `--min-change`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::capture::{to_rgb, CaptureError, PixelFormat, Roi};
use crate::collect::{
    crop_region, is_grey, keep_one_channel, ChangeGate, CollectSession, Collection, Crop,
};
use crate::commands::report::Progress;
use crate::config::{Config, ConfigError};
use crate::gpio::{watch_trigger, EdgeInput, TriggerEvent};
use crate::line::{Line, Pacing};
use crate::pipeline::TriggerMatcher;
use crate::Error;

/// Arguments of `partguard collect`.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectArgs {
    /// Folder for the images, created if needed; numbering continues after the images already
    /// there and nothing is overwritten. It is the `--data` of `models/train.py`.
    #[arg(long)]
    pub out: PathBuf,
    /// Images to save; then it stops (Ctrl-C stops earlier, keeping what was saved).
    #[arg(long)]
    pub frames: u64,
    /// At least this many ms between two saved images (by frame time).
    #[arg(long)]
    pub every_ms: Option<f64>,
    /// What the parts are: `good` (for training) or a defect class (for `calibrate --defects`).
    #[arg(long, default_value = "good")]
    pub label: String,
    /// Skip a frame whose mean grey-level change (0-255, on a 32x32 thumbnail) from the last
    /// saved image is below this: a line standing still.
    #[arg(long)]
    pub min_change: Option<f64>,
}

/// What a collect run did.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectSummary {
    pub saved: u64,
    pub frames_seen: u64,
    pub skipped_unchanged: u64,
    pub skipped_bad: u64,
    pub first: Option<PathBuf>,
    pub last: Option<PathBuf>,
}

fn check_args(args: &CollectArgs) -> Result<(), ConfigError> {
    let bad = |field, problem: &str| ConfigError::Field {
        path: "command line".into(),
        field,
        problem: problem.into(),
    };
    if args.frames == 0 {
        return Err(bad(
            "--frames",
            "is 0; give the number of images to save, e.g. 200",
        ));
    }
    if args.every_ms.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
        return Err(bad("--every-ms", "must be a number of ms >= 0"));
    }
    if args
        .min_change
        .is_some_and(|c| !(c.is_finite() && (0.0..=255.0).contains(&c)))
    {
        return Err(bad(
            "--min-change",
            "must be a grey-level difference from 0 to 255, e.g. 2",
        ));
    }
    let label_ok = !args.label.is_empty()
        && args
            .label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !label_ok {
        return Err(bad(
            "--label",
            "must be a plain name (letters, digits, _ and -), e.g. good or scratch",
        ));
    }
    Ok(())
}

/// The wall-clock time now, RFC 3339 UTC with milliseconds.
fn now_utc() -> String {
    crate::clock::utc_from_unix_us(crate::clock::unix_now_us())
}

/// Runs `collect`; stops after `args.frames` images, when the source ends, or on `stop`.
pub fn collect(
    cfg: &Config,
    args: &CollectArgs,
    stop: &AtomicBool,
) -> Result<CollectSummary, Error> {
    check_args(args)?;
    let line = Line::new(cfg);
    let mut source = line.source(Pacing::Configured)?;
    let trigger = line.trigger()?;
    let mut collection = Collection::open(&args.out, &args.label)?;
    let first_number = collection.next_number();
    let description = source.describe();
    let mode = if trigger.is_some() {
        "trigger"
    } else {
        "frames"
    };
    collection.begin(CollectSession {
        partguard_version: env!("CARGO_PKG_VERSION").into(),
        started: now_utc(),
        finished: None,
        source: description.clone(),
        camera_controls: source.controls_in_force(),
        roi: cfg.roi,
        mode: mode.into(),
        every_ms: args.every_ms,
        min_change: args.min_change,
        frames_seen: 0,
        skipped_unchanged: 0,
        images: Vec::new(),
    })?;
    println!(
        "collecting {} {} images from {description} into {} (from {:06}.png){}",
        args.frames,
        args.label,
        collection.dir().display(),
        first_number,
        if trigger.is_some() {
            ", one per trigger"
        } else {
            ""
        }
    );
    // The trigger's edges reach this loop through a channel; the matcher pairs them with frames.
    let inputs_stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<Duration>(64);
    let settings = line.trigger_settings();
    let window = settings.map(|t| t.window);
    let debounce = settings.map_or(Duration::ZERO, |t| t.debounce);
    let mut matcher = window.map(TriggerMatcher::new);
    let mut summary = CollectSummary {
        saved: 0,
        frames_seen: 0,
        skipped_unchanged: 0,
        skipped_bad: 0,
        first: None,
        last: None,
    };
    let result = std::thread::scope(|scope| {
        if let Some(input) = trigger {
            let inputs_stop = &inputs_stop;
            scope.spawn(move || trigger_edges(input, debounce, tx, inputs_stop, stop));
        }
        let r = collect_frames(
            &mut summary,
            &mut *source,
            &mut collection,
            matcher.as_mut().map(|m| (&rx, m)),
            cfg.roi,
            args,
            stop,
        );
        inputs_stop.store(true, Ordering::Release);
        r
    });
    if let Some(s) = collection.session() {
        s.finished = Some(now_utc());
        s.frames_seen = summary.frames_seen;
        s.skipped_unchanged = summary.skipped_unchanged;
    }
    collection.write_manifest()?;
    result?;
    let range = match (&summary.first, &summary.last) {
        (Some(a), Some(b)) => format!(
            " ({} to {})",
            a.file_name().unwrap_or_default().to_string_lossy(),
            b.file_name().unwrap_or_default().to_string_lossy()
        ),
        _ => String::new(),
    };
    println!(
        "saved {} of {} images{range} from {} frames; skipped {} unchanged, {} unreadable",
        summary.saved,
        args.frames,
        summary.frames_seen,
        summary.skipped_unchanged,
        summary.skipped_bad
    );
    if summary.saved < args.frames && !stop.load(Ordering::Relaxed) {
        println!("the source ended before {} images were saved", args.frames);
    }
    println!(
        "manifest: {}",
        collection.dir().join(crate::collect::MANIFEST).display()
    );
    if args.label == "good" && summary.saved > 0 {
        println!(
            "next: train on them (README, A new part): python3 models/train.py --data {} --out RUN",
            collection.dir().display()
        );
    }
    Ok(summary)
}

/// Debounced rising edges of the trigger, as their times, until `stop` or `inputs_stop`.
fn trigger_edges(
    mut input: Box<dyn EdgeInput>,
    debounce: Duration,
    tx: mpsc::SyncSender<Duration>,
    inputs_stop: &AtomicBool,
    stop: &AtomicBool,
) {
    let watched = watch_trigger(
        &mut *input,
        debounce,
        || !inputs_stop.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed),
        |event| {
            match event {
            TriggerEvent::Part(at) => {
                if tx.try_send(at).is_err() {
                    log::warn!("too many triggers waiting for frames: one part is not collected");
                }
            }
            TriggerEvent::Dropped { edges, .. } => log::warn!(
                "trigger: the kernel dropped {edges} edges (the reading thread fell behind): those parts are not collected"
            ),
        }
        },
    );
    if let Err(e) = watched {
        log::error!("trigger input failed: {e}; collecting stops");
        stop.store(true, Ordering::Relaxed);
    }
}

/// The frame loop: frame -> (trigger match) -> RGB -> ROI crop -> change gate -> PNG.
fn collect_frames(
    s: &mut CollectSummary,
    source: &mut dyn crate::capture::FrameSource,
    collection: &mut Collection,
    mut triggers: Option<(&mpsc::Receiver<Duration>, &mut TriggerMatcher)>,
    roi: Option<Roi>,
    args: &CollectArgs,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let progress = Progress::new(Some(args.frames), "images");
    let mut gate = args.min_change.map(ChangeGate::new);
    let every = args.every_ms.map(|t| Duration::from_secs_f64(t / 1000.0));
    let mut last_saved: Option<Duration> = None;
    let (mut rgb, mut crop) = (Vec::new(), Vec::new());
    while s.saved < args.frames && !stop.load(Ordering::Relaxed) {
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e @ (CaptureError::Stalled { .. } | CaptureError::Reopening { .. })) => {
                log::warn!("{e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        s.frames_seen += 1;
        if let Some((rx, m)) = triggers.as_mut() {
            while let Ok(t) = rx.try_recv() {
                let _ = m.push(crate::schedule::PartStamp {
                    seq: 0,
                    time: t,
                    count: 0,
                });
            }
            while m.expire(frame.timestamp).is_some() {
                log::warn!("a trigger had no frame within [trigger] frame_window_ms: that part is not collected");
            }
            if m.take(frame.timestamp).is_none() {
                continue;
            }
        }
        if let (Some(every), Some(last)) = (every, last_saved) {
            if frame.timestamp < last + every {
                continue;
            }
        }
        let (w, h) = (frame.width, frame.height);
        let region = match roi {
            Some(r) => {
                if let Err(e) = r.check(w, h) {
                    return Err(e.into());
                }
                r
            }
            None => Roi::or_whole_frame(None, w, h),
        };
        rgb.resize(w as usize * h as usize * 3, 0);
        if let Err(e) = to_rgb(&frame, &mut rgb) {
            log::warn!("frame {}: {e}; skipped", frame.sequence);
            s.skipped_bad += 1;
            continue;
        }
        let (sequence, timestamp) = (frame.sequence, frame.timestamp);
        let mono = frame.format == PixelFormat::Grey;
        crop_region(&rgb, w, region, &mut crop);
        let grey = mono || is_grey(&crop);
        if grey {
            keep_one_channel(&mut crop);
        }
        let image = Crop {
            pixels: &crop,
            width: region.width,
            height: region.height,
            grey,
        };
        if let Some(g) = gate.as_mut() {
            if !g.accept(&image).0 {
                s.skipped_unchanged += 1;
                continue;
            }
        }
        let path = collection.save(&image, now_utc(), sequence)?;
        s.saved += 1;
        last_saved = Some(timestamp);
        s.first.get_or_insert_with(|| path.clone());
        s.last = Some(path);
        progress.show(s.saved);
    }
    progress.finish();
    Ok(())
}
