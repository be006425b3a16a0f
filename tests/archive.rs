//! The reject archive: real rejected parts in a bounded ring with their heatmaps, a writer that falls
//! behind (dropped, counted), a disk that refuses the writes (failed, counted, the line goes on), and
//! a folder that cannot be used (a clear setup error).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use partguard::archive::{
    heatmap_overlay, jet, Archive, ArchiveReason, ArchiveSettings, ArchivedPart,
};
use partguard::capture::ReplaySource;
use partguard::clock::{Clock, MonotonicClock};
use partguard::pipeline::run;
use partguard::schedule::Policy;

mod common;

fn settings(dir: &Path, max_images: usize) -> ArchiveSettings {
    ArchiveSettings {
        dir: dir.to_owned(),
        max_images,
        max_bytes: 64 << 20,
    }
}

/// The archive's PNG files, oldest first.
fn ring(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn rejected_parts_are_archived_with_their_heatmap_in_a_bounded_ring() {
    let dir = tempfile::tempdir().unwrap();
    let source = ReplaySource::open(&common::samples(), false, 0.0, 64).unwrap();
    let mut insp = common::inspector(source);
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = common::SimLine::new(clock);
    let mut opts = common::options(common::time_schedule(1000, 20, 1, Policy::Reject));
    opts.archive = Some(Archive::open(settings(dir.path(), 3)).unwrap());
    let stop = AtomicBool::new(false);
    let (summary, _) = run(&mut insp, line.io(), opts, &stop, None).unwrap();

    // The four defective samples are judged NG and archived when judged; the ring keeps the
    // newest three. Whether their decisions reach the ejector in time does not matter here (on a
    // starved machine some come late and the policy rejects them): the scheduler's tests own that.
    assert_eq!(summary.frames, 8, "{summary:?}");
    assert_eq!(
        summary.counts.ok + summary.counts.ng + summary.counts.late,
        8,
        "{summary:?}"
    );
    assert_eq!(summary.archived, 4, "{summary:?}");
    assert_eq!((summary.archive_dropped, summary.archive_failed), (0, 0));
    let files = ring(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for (i, n) in names.iter().enumerate() {
        assert!(n.starts_with(&format!("{:08}-", i + 1)), "{n}");
        assert!(n.contains("-NG-"), "{n}");
        let score: f32 = n
            .trim_end_matches(".png")
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(score > common::threshold(), "{n}");
    }

    // Each file: the part on the left, bit for bit one of the defective samples; the heatmap
    // overlay on the right, which is not the part itself.
    let defects: Vec<image::RgbImage> = ["broken_large/000", "broken_small/000"]
        .iter()
        .chain(&["contamination/000", "contamination/001"])
        .map(|n| rgb(&common::samples().join(format!("{n}.png"))))
        .collect();
    for f in &files {
        let img = rgb(f);
        assert_eq!(img.dimensions(), (512, 256), "{}", f.display());
        let left = image::imageops::crop_imm(&img, 0, 0, 256, 256).to_image();
        let right = image::imageops::crop_imm(&img, 256, 0, 256, 256).to_image();
        assert!(
            defects.contains(&left),
            "{}: left half is none of the defective samples",
            f.display()
        );
        assert_ne!(left, right, "{}: no overlay", f.display());
    }
}

#[test]
fn the_ring_continues_its_numbering_and_bounds_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(
            dir.path()
                .join(format!("{i:08}-20261128T000000Z-part{i}-NG-0.5000.png")),
            b"old",
        )
        .unwrap();
    }
    std::fs::write(dir.path().join(".partguard-tmp-9"), b"half a file").unwrap();
    std::fs::write(dir.path().join("operator-notes.txt"), b"keep me").unwrap();
    let archive = Archive::open(settings(dir.path(), 3)).unwrap();
    let frame = vec![90u8; 32 * 16 * 3];
    let map = vec![0.25f32; 8 * 4];
    assert!(archive.submit(&ArchivedPart {
        seq: 77,
        reason: ArchiveReason::Fault,
        score: f32::NAN,
        frame: &frame,
        width: 32,
        height: 16,
        roi: None,
        map: Some((&map, 8, 4)),
    }));
    let counts = archive.finish();
    assert_eq!((counts.archived, counts.removed), (1, 1), "{counts:?}");
    let names: Vec<String> = ring(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[0].starts_with("00000003-"), "{names:?}");
    assert!(names[1].starts_with("00000004-"), "{names:?}");
    assert!(
        names[2].starts_with("00000005-") && names[2].ends_with("-part77-FAULT-nan.png"),
        "{names:?}"
    );
    assert_eq!(names[3], "operator-notes.txt");
    assert_eq!(rgb(&dir.path().join(&names[2])).dimensions(), (64, 16));
}

#[test]
fn a_writer_behind_the_line_drops_parts_and_counts_them_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(settings(dir.path(), 100)).unwrap();
    // 1-megapixel parts with a noisy map: each PNG takes the writer tens of milliseconds, the
    // submits take well under one.
    let (w, h) = (1024u32, 1024u32);
    let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7919 % 251) as u8).collect();
    let map: Vec<f32> = (0..64 * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    let mut accepted = 0;
    for seq in 0..20 {
        let ok = archive.submit(&ArchivedPart {
            seq,
            reason: ArchiveReason::Reject,
            score: 0.9,
            frame: &frame,
            width: w,
            height: h,
            roi: None,
            map: Some((&map, 64, 64)),
        });
        accepted += u64::from(ok);
    }
    let counts = archive.finish();
    assert!(counts.dropped > 0, "{counts:?}");
    assert_eq!(counts.archived, accepted, "{counts:?}");
    assert_eq!(counts.archived + counts.dropped + counts.failed, 20);
    assert_eq!(ring(dir.path()).len() as u64, counts.archived);
}

#[test]
fn the_heatmap_is_red_where_the_map_is_high_and_blue_where_it_is_low() {
    let grey = vec![128u8; 16 * 16 * 3];
    // 2x2 map: anomalous in the bottom-right quarter only.
    let map = [0.0, 0.0, 0.0, 1.0];
    let mut out = Vec::new();
    heatmap_overlay(&grey, 16, 16, &map, 2, 2, &mut out);
    let px = |x: usize, y: usize| &out[(y * 16 + x) * 3..(y * 16 + x) * 3 + 3];
    let (cold, hot) = (px(0, 0), px(15, 15));
    assert!(cold[2] > cold[0] + 40, "top-left {cold:?}");
    assert!(hot[0] > hot[2] + 40, "bottom-right {hot:?}");
    // Half the part, half the colour.
    let blue = jet(0.0);
    assert_eq!(cold[2], ((128 + u16::from(blue[2])) / 2) as u8);
}

/// The binary's config with an `[archive]` in `dir`.
fn config_with_archive(dir: &Path, archive_dir: &Path) -> PathBuf {
    let text = partguard::config::BUILTIN_DEFAULT
        .replace("rate_hz = 5 ", "rate_hz = 0 ")
        .replace("\"samples/bottle\"", &format!("{:?}", common::samples()))
        .replace(
            "\"../models/bottle_sspcab_f32.onnx\"",
            &format!("{:?}", common::f32_model()),
        )
        // Unpaced, the parts queue for the model; a long conveyor keeps a loaded machine (the
        // sibling tests encode PNGs in parallel) from making one of them late.
        .replace(
            "delay_ms = 1000.0",
            &format!("delay_ms = {}.0", 10_000 * common::scale()),
        )
        + &format!("\n[archive]\ndir = {archive_dir:?}\nmax_images = 50\n");
    let p = dir.join("archive.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_disk_that_refuses_the_writes_costs_the_images_not_the_inspection() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("rejects");
    let cfg = config_with_archive(dir.path(), &archive_dir);
    // A file size limit of 16 KiB: every archive image (about 200 KiB) fails to write with EFBIG,
    // as a full disk fails with ENOSPC; the process ignores SIGXFSZ as partguard's unit would
    // have it (the default action would kill it).
    let mut cmd = common::partguard_bin(env!("CARGO_BIN_EXE_partguard"));
    cmd.env("RUST_LOG", "error")
        .arg("--config")
        .arg(&cfg)
        .arg("run");
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 16 * 1024,
                rlim_max: 16 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("summary: frames 8 OK 4 NG 4 late 0 missed 0 faults 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("archive: written 0 dropped 0 failed 4"),
        "{stdout}"
    );
    assert!(stderr.contains("reject archive: cannot write"), "{stderr}");
    assert!(stderr.contains("inspection goes on"), "{stderr}");
    // No half-written file is left in the ring.
    assert_eq!(ring(&archive_dir), Vec::<PathBuf>::new());
}

#[test]
fn an_archive_folder_that_cannot_be_made_is_a_setup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    let archive_dir = blocker.join("rejects");
    let cfg = config_with_archive(dir.path(), &archive_dir);
    let out = common::run_with_config(env!("CARGO_BIN_EXE_partguard"), &cfg, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("reject archive {}", archive_dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains("archive.dir"), "{stderr}");
}

#[test]
fn check_reports_a_usable_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("rejects");
    let cfg = config_with_archive(dir.path(), &archive_dir);
    let out = common::run_with_config(env!("CARGO_BIN_EXE_partguard"), &cfg, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "reject archive: {} (writable; keeps at most 50 images",
            archive_dir.display()
        )),
        "{stdout}"
    );
    assert!(archive_dir.is_dir());
}
