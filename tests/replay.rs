//! Replay source: order, looping, labels, pacing, and unreadable images skipped and counted.

use std::sync::Arc;
use std::time::Duration;

use partguard::capture::{CaptureError, FrameSource, Label, ReplaySource};
use partguard::clock::{Clock, SimClock};

mod common;
use common::samples;

fn names(src: &mut ReplaySource, n: usize) -> Vec<(String, Option<Label>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        match src.next_frame().unwrap() {
            Some(f) => {
                let p = f.origin.unwrap();
                let rel = p
                    .strip_prefix(samples())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, f.label()));
            }
            None => break,
        }
    }
    out
}

#[test]
fn replays_in_path_order_with_folder_labels_then_ends() {
    let mut src = ReplaySource::open(&samples(), false, 0.0, 64).unwrap();
    assert_eq!(src.len(), 8);
    let got = names(&mut src, 100);
    let expected = [
        ("broken_large/000.png", Label::Defect),
        ("broken_small/000.png", Label::Defect),
        ("contamination/000.png", Label::Defect),
        ("contamination/001.png", Label::Defect),
        ("good/000.png", Label::Good),
        ("good/001.png", Label::Good),
        ("good/002.png", Label::Good),
        ("good/003.png", Label::Good),
    ];
    assert_eq!(got.len(), expected.len());
    for ((name, label), (en, el)) in got.iter().zip(expected) {
        assert_eq!((name.as_str(), *label), (en, Some(el)));
    }
    assert!(
        src.next_frame().unwrap().is_none(),
        "a non-looping replay must end"
    );
}

#[test]
fn looping_wraps_around_and_sequence_keeps_counting() {
    // preload budget 0: the per-frame decode path
    let mut src = ReplaySource::open(&samples(), true, 0.0, 0).unwrap();
    let got = names(&mut src, 11);
    assert_eq!(got.len(), 11);
    assert_eq!(got[8].0, got[0].0);
    assert_eq!(got[10].0, got[2].0);
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!(f.sequence, 11);
    assert_eq!((f.width, f.height), (256, 256));
}

#[test]
fn paces_frames_at_the_configured_rate() {
    let clock = SimClock::new();
    clock.set(Duration::from_secs(100));
    let mut src =
        ReplaySource::with_clock(&samples(), true, 10.0, 64, Box::new(clock.clone())).unwrap();
    let mut stamps = Vec::new();
    for _ in 0..4 {
        stamps.push(src.next_frame().unwrap().unwrap().timestamp);
    }
    let gaps: Vec<_> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, vec![Duration::from_millis(100); 3]);
    assert_eq!(clock.now(), Duration::from_millis(100_300));
    let _ = Arc::new(clock);
}

#[test]
fn unreadable_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::copy(samples().join("good/000.png"), good.join("a.png")).unwrap();
    std::fs::write(good.join("b.png"), b"not a png at all").unwrap();
    std::fs::copy(samples().join("good/001.png"), good.join("c.png")).unwrap();
    for preload in [64, 0] {
        let mut src = ReplaySource::open(dir.path(), false, 0.0, preload).unwrap();
        let mut seen = 0;
        while let Some(f) = src.next_frame().unwrap() {
            assert_ne!(f.origin.unwrap().file_name().unwrap(), "b.png");
            seen += 1;
        }
        assert_eq!(seen, 2, "preload {preload}");
        assert_eq!(src.skipped(), 1, "preload {preload}");
    }
}

#[test]
fn empty_or_missing_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = ReplaySource::open(dir.path(), false, 0.0, 64)
        .err()
        .unwrap();
    assert!(
        matches!(&err, CaptureError::ReplayEmpty { path } if path == dir.path()),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("holds no readable PNG or JPEG images"));
    let missing = dir.path().join("nope");
    let err = ReplaySource::open(&missing, false, 0.0, 64).err().unwrap();
    match &err {
        CaptureError::ReplayRead { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a replay read error, got {other}"),
    }
}
