//! The binary end to end: the built-in default run, check, eval, errors and exit codes, SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

mod common;

fn write_config(dir: &Path, source: &str, reject: &str) -> std::path::PathBuf {
    common::config::TestConfig::new(source)
        .reject(&format!("{reject}\npulse_ms = 20"))
        .sections("[log]\nstatus_interval_s = 0.2\n")
        .write(&dir.join("line.toml"))
}

#[test]
fn default_run_inspects_the_samples_and_prints_a_summary() {
    let threshold = partguard::config::Config::builtin()
        .unwrap()
        .decision
        .threshold
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("stats.json");
    // The built-in default, with its line made independent of the machine's speed: the replay is
    // unpaced (each frame is taken when a frame buffer is free, so no frame is ever overrun) and
    // the ejector sits 5 s (times the emulation's scale) after the camera. A part then waits for
    // at most the two frames ahead of it (3 frame buffers): the decisions come in time while one
    // inference takes under ~1.6 s, over 10x the ~0.1 s of an idle x86 core. On a busy 2-core
    // machine inference took 234-261 ms, and the paced default (5 parts/s, 1 s) turned parts late.
    let k = common::scale();
    let text = partguard::config::BUILTIN_DEFAULT
        .replace("rate_hz = 5 ", "rate_hz = 0 ")
        .replace("delay_ms = 1000.0", &format!("delay_ms = {}.0", 5000 * k))
        .replace("margin_ms = 50.0", &format!("margin_ms = {}.0", 50 * k))
        .replace("\"samples/bottle\"", &format!("{:?}", common::samples()))
        .replace(
            "\"../models/bottle_sspcab_f32.onnx\"",
            &format!("{:?}", common::f32_model()),
        );
    assert!(text.contains("rate_hz = 0 ") && text.contains(&format!("delay_ms = {}.0", 5000 * k)));
    let cfg = dir.path().join("unpaced.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = common::partguard("warn");
    cmd.arg("--config").arg(cfg);
    let out = cmd
        .arg("run")
        .arg("--stats-json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parts = common::part_lines(&stdout);
    assert_eq!(parts.len(), 8, "{stdout}");
    let mut ng = 0;
    for p in &parts {
        assert_eq!(
            p.rejected,
            p.score > threshold,
            "decision does not follow the threshold: {p:?}"
        );
        if p.file.starts_with("good/") {
            assert!(!p.rejected, "a good sample was rejected: {p:?}");
        }
        ng += p.rejected as u32;
    }
    // every defective sample is rejected (tests/model.rs: the shipped model separates them)
    assert_eq!(ng, 4, "{stdout}");
    assert!(
        stdout
            .contains("summary: frames 8 OK 4 NG 4 late 0 missed 0 faults 0 overflows 0 (parts 8;"),
        "{stdout}"
    );
    // The same figures as JSON. Unpaced, parts follow each other as fast as inference goes, so
    // how many adjacent rejects merge into one running pulse depends on the machine's speed:
    // every NG part is either a pulse of its own or merged into one.
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["counts"]["ok"], 4, "{doc}");
    assert_eq!(doc["counts"]["ng"], 4, "{doc}");
    let pulses = doc["counts"]["pulses"].as_u64().unwrap();
    let merged = doc["counts"]["merged"].as_u64().unwrap();
    assert!(pulses >= 1 && pulses + merged == 4, "{doc}");
    assert!(
        stdout.contains(&format!("reject pulses {pulses} merged {merged} ")),
        "{stdout}"
    );
    assert_eq!(doc["reject_onset_error"]["count"], pulses, "{doc}");
    assert!(
        doc["latency_us"]["inference"]["median_us"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn check_reports_model_source_and_output() {
    let out = common::partguard("warn").arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("partguard.precision = f32"), "{stdout}");
    assert!(
        stdout.contains("replay") && stdout.contains("8 images"),
        "{stdout}"
    );
    assert!(
        stdout.contains("simulated line") && stdout.contains("check: OK"),
        "{stdout}"
    );
}

#[test]
fn eval_prints_auroc_and_writes_csv() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("scores.csv");
    let out = common::partguard("warn")
        .args(["eval", "--data"])
        .arg(common::samples())
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("8 images (4 good, 4 defective)"),
        "{stdout}"
    );
    // the shipped model separates the eight samples (tests/model.rs)
    assert!(stdout.contains("image AUROC: 1.0000"), "{stdout}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 9);
    assert!(text.starts_with("path,label,score\n"));
}

#[test]
fn config_errors_exit_2_and_name_the_file() {
    let out = common::partguard("warn")
        .args(["check", "--config", "/nonexistent/line.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/line.toml"), "{err}");
}

#[test]
fn missing_camera_and_missing_gpio_chip_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "kind = \"v4l2\"\ndevice = \"/dev/video97\"\nwidth = 640\nheight = 480",
        "kind = \"simulated\"",
    );
    let out = common::partguard("warn")
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("camera /dev/video97 does not exist"), "{err}");

    let cfg = write_config(
        dir.path(),
        &format!(
            "kind = \"replay\"\npath = \"{}\"",
            common::samples().display()
        ),
        "kind = \"gpiocdev\"\nchip = \"/dev/gpiochip97\"\nline = 3",
    );
    let out = common::partguard("warn")
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GPIO chip /dev/gpiochip97 not found"), "{err}");
}

#[test]
fn sigterm_stops_the_run_cleanly_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "kind = \"replay\"\npath = \"{}\"\nloop = true\nrate_hz = 20",
            common::samples().display()
        ),
        "kind = \"simulated\"",
    );
    let mut child = common::partguard("warn")
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait for a few parts, so the loop is running when the signal lands.
    let mut seen = 0;
    for line in lines.by_ref() {
        if line.unwrap().starts_with("part") {
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("summary: frames")),
        "{rest:?}"
    );
}

/// A config replaying the samples onto a simulated line (with a comment line), and its text.
fn samples_config(dir: &Path) -> (std::path::PathBuf, String) {
    let source = format!(
        "# the line's camera\nkind = \"replay\"\npath = {:?}",
        common::samples()
    );
    let cfg = write_config(dir, &source, "kind = \"simulated\"");
    let text = std::fs::read_to_string(&cfg).unwrap();
    (cfg, text)
}

/// `partguard --config cfg bench --pick --engine tract --warmup 0 args...`
fn bench_pick(cfg: &Path, args: &[&str]) -> std::process::Output {
    common::partguard("warn")
        .arg("--config")
        .arg(cfg)
        .args(["bench", "--pick", "--engine", "tract", "--warmup", "0"])
        .args(args)
        .output()
        .unwrap()
}

/// `bench --pick` measures the engines and thread counts and writes the fastest into the config's
/// `[model]`, keeping the rest of the file (comments included); the edited file still loads.
#[test]
fn bench_pick_writes_the_fastest_engine_into_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, before) = samples_config(dir.path());
    let out = bench_pick(&cfg, &["--threads", "1,2", "--frames", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // both thread counts measured, one picked
    assert!(stdout.contains("on tract, threads 1"), "{stdout}");
    assert!(stdout.contains("on tract, threads 2"), "{stdout}");
    let picked = stdout
        .lines()
        .find(|l| l.starts_with("picked: "))
        .unwrap_or_else(|| panic!("no pick in {stdout}"));
    let after = std::fs::read_to_string(&cfg).unwrap();
    assert!(after.contains("# the line's camera"), "{after}");
    assert!(after.contains("engine = \"tract\""), "{after}");
    let threads = if picked.contains("with 1 thread") {
        1
    } else {
        2
    };
    assert!(after.contains(&format!("threads = {threads}")), "{after}");
    // nothing else changed: the old lines are all still there
    for line in before.lines() {
        assert!(after.contains(line), "lost {line:?}:\n{after}");
    }
    let loaded = partguard::config::Config::load(&cfg).unwrap();
    assert_eq!(loaded.model.threads, threads);
    assert_eq!(loaded.model.engine, partguard::infer::EngineKind::Tract);
}

#[test]
fn bench_pick_needs_a_config_file_and_a_broken_one_stays_unchanged() {
    let out = common::partguard("warn")
        .args(["bench", "--pick", "--frames", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config"), "{err}");

    // a fixed threshold belongs to the config's model: picking among other models is refused
    let dir = tempfile::tempdir().unwrap();
    let (cfg, before) = samples_config(dir.path());
    let int8 = common::root().join("models/bottle_sspcab_int8.onnx");
    let int8 = int8.to_str().unwrap();
    let out = bench_pick(&cfg, &["--threads", "1", "--frames", "1", "--model", int8]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("decision.threshold") && err.contains("calibrate"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);

    // write_model_choice refuses a file without [model] and leaves it as it was
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "# no model here\n[source]\nkind = \"replay\"\n").unwrap();
    let choice = partguard::config::ModelChoice {
        engine: partguard::infer::EngineKind::Tract,
        threads: 2,
        path: None,
    };
    let e = partguard::config::write_model_choice(&p, &choice).unwrap_err();
    assert!(e.to_string().contains("field `model`"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "# no model here\n[source]\nkind = \"replay\"\n"
    );
}
