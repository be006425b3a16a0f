//! `partguard collect` through the binary: ROI crops at full resolution, numbering that continues,
//! the manifest, the change gate, grey images, one image per trigger, and refused arguments.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::config::replay;
use common::{partguard, samples};

fn config(dir: &Path, source: &str, extra: &str) -> PathBuf {
    common::config::TestConfig::new(source)
        .decision("threshold = 0.2")
        .reject("kind = \"simulated\"\npulse_ms = 50")
        .sections(extra)
        .write(&dir.join("collect.toml"))
}

fn collect(config: &Path, args: &[&str]) -> std::process::Output {
    partguard("warn")
        .arg("--config")
        .arg(config)
        .arg("collect")
        .args(args)
        .output()
        .unwrap()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn pngs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    v.sort();
    v
}

#[test]
fn collect_saves_the_roi_at_full_resolution_numbered_on_with_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let good = samples().join("good");
    let roi = "[roi]\nx = 40\ny = 10\nwidth = 150\nheight = 100\n";
    let cfg = config(tmp.path(), &replay(&good, ""), roi);
    let out = tmp.path().join("part-a");
    let o = collect(&cfg, &["--out", out.to_str().unwrap(), "--frames", "3"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("saved 3 of 3 images (000001.png to 000003.png)"),
        "{stdout}"
    );
    assert_eq!(pngs(&out), ["000001.png", "000002.png", "000003.png"]);
    // The crop is what the model sees, at the camera's resolution: the ROI's pixels exactly.
    let first = image::open(out.join("000001.png")).unwrap().to_rgb8();
    assert_eq!(first.dimensions(), (150, 100));
    let whole = image::open(good.join("000.png")).unwrap().to_rgb8();
    assert_eq!(first.get_pixel(0, 0), whole.get_pixel(40, 10));
    assert_eq!(first.get_pixel(149, 99), whole.get_pixel(189, 109));

    // A second session continues the numbering (the sample folder has 4 images: 1 more, then
    // the source ends) and keeps the first session's files.
    let before = std::fs::read(out.join("000001.png")).unwrap();
    let o = collect(&cfg, &["--out", out.to_str().unwrap(), "--frames", "5"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(
        stdout.contains("saved 4 of 5 images (000004.png to 000007.png)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the source ended before 5 images"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(out.join("000001.png")).unwrap(), before);
    assert_eq!(pngs(&out).len(), 7);

    let m = manifest(&out);
    assert_eq!(m["label"], "good");
    let sessions = m["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let s = &sessions[1];
    assert_eq!(s["partguard_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["roi"]["width"], 150);
    assert!(s["source"].as_str().unwrap().contains("replay"));
    assert_eq!(s["frames_seen"], 4);
    assert!(s["finished"].as_str().unwrap().ends_with('Z'));
    let files: Vec<&str> = s["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["000004.png", "000005.png", "000006.png", "000007.png"]
    );

    // One label per folder: defects go elsewhere.
    let o = collect(
        &cfg,
        &[
            "--out",
            out.to_str().unwrap(),
            "--frames",
            "1",
            "--label",
            "scratch",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("\"good\""),
        "{stderr}"
    );
    assert_eq!(pngs(&out).len(), 7);
}

#[test]
fn min_change_skips_a_line_standing_still_and_grey_parts_stay_grey() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("line");
    std::fs::create_dir_all(&src).unwrap();
    // The same part three times (the line stands still), then another one; all grey.
    let a = image::open(samples().join("good/000.png"))
        .unwrap()
        .to_luma8();
    let b = image::open(samples().join("good/001.png"))
        .unwrap()
        .to_luma8();
    for (name, img) in [("1.png", &a), ("2.png", &a), ("3.png", &a), ("4.png", &b)] {
        img.save(src.join(name)).unwrap();
    }
    let cfg = config(tmp.path(), &replay(&src, ""), "");
    let out = tmp.path().join("grey");
    let o = collect(
        &cfg,
        &[
            "--out",
            out.to_str().unwrap(),
            "--frames",
            "4",
            "--min-change",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(
        stdout.contains("saved 2 of 4 images") && stdout.contains("skipped 2 unchanged"),
        "{stdout}"
    );
    assert_eq!(manifest(&out)["sessions"][0]["skipped_unchanged"], 2);
    // Saved as 8-bit grey PNGs, pixel for pixel.
    let saved = image::open(out.join("000002.png")).unwrap();
    assert_eq!(saved.color(), image::ColorType::L8);
    assert_eq!(saved.to_luma8(), b);
}

#[test]
fn with_a_trigger_one_image_per_part() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("trigger.sock");
    // Frames come continuously (a camera); only those right after a trigger are parts.
    let source = replay(&samples().join("good"), "loop = true\nrate_hz = 50");
    let trigger = format!(
        "[trigger]\nsocket = \"{}\"\nframe_window_ms = 5000\n",
        socket.display()
    );
    let cfg = config(tmp.path(), &source, &trigger);
    let out = tmp.path().join("parts");
    let child = partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .args(["collect", "--out", out.to_str().unwrap(), "--frames", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the trigger socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for n in 1..=3usize {
        tx.send_to(b"part", &socket).unwrap();
        // The next trigger only once this part's image is there: no timing assumption.
        while pngs(&out).len() < n {
            assert!(Instant::now() < deadline, "part {n} was not collected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(
        stdout.contains("one per trigger") && stdout.contains("saved 3 of 3"),
        "{stdout}"
    );
    let m = manifest(&out);
    assert_eq!(m["sessions"][0]["mode"], "trigger");
    // Many frames went by; three were kept.
    assert!(m["sessions"][0]["frames_seen"].as_u64().unwrap() >= 3);
    assert_eq!(pngs(&out).len(), 3);
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &replay(&samples().join("good"), ""), "");
    let out = tmp.path().join("never");
    for (args, field) in [
        (vec!["--frames", "0"], "--frames"),
        (vec!["--frames", "3", "--label", "../x"], "--label"),
        (vec!["--frames", "3", "--min-change", "300"], "--min-change"),
        (vec!["--frames", "3", "--every-ms=-5"], "--every-ms"),
    ] {
        let mut all = vec!["--out", out.to_str().unwrap()];
        all.extend(args);
        let o = collect(&cfg, &all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(field), "{stderr}");
        assert!(!out.exists());
    }
}
