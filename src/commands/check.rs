//! `partguard check`: opens everything the config names and says what it found.

use crate::capture::{controls, FrameSource};
use crate::config::{Config, SourceConfig};
use crate::line::{Line, Pacing};
use crate::schedule::Delay;
use crate::Error;

/// Validates the config, loads and plans the model, opens the source, the archive folder and every
/// input and output (outputs in their safe state), and prints what it found.
pub fn check(cfg: &Config, config_name: &str) -> Result<(), Error> {
    println!("config {config_name}: valid");
    let line = Line::new(cfg);
    let engine = line.engine()?;
    let i = engine.info();
    println!(
        "model {}: loaded and planned (engine {}, threads {})",
        i.path.display(),
        cfg.model.engine.name(),
        crate::commands::report::threads_label(cfg.model.threads)
    );
    for key in [
        "partguard.model_name",
        "partguard.model_version",
        "partguard.precision",
        "partguard.input_shape",
        "partguard.architecture",
        "partguard.sspcab",
        "partguard.data_license",
        "partguard.camera_controls",
    ] {
        println!("  {key} = {}", i.meta(key));
    }
    if let Some(a) = i.metadata.get("partguard.alignment") {
        println!(
            "  partguard.alignment = {a} (the part is found, turned and cropped in each frame)"
        );
    }
    println!("  file sha256 = {}", i.file_sha256);
    let source = line.source(Pacing::Configured)?;
    println!("source: {} (opened)", source.describe());
    print_camera_controls(cfg, &*source)?;
    let d = line.decision(i)?;
    for w in line.control_drift(&source.controls_in_force(), i, &d) {
        println!("WARNING: {w}");
    }
    if let Some(roi) = cfg.roi {
        println!("region of interest: {roi} (only this rectangle goes to the model)");
    }
    if let (Some(a), Some(archive)) = (&cfg.archive, line.archive()?) {
        println!(
            "reject archive: {} (writable; keeps at most {} images, {} MiB)",
            archive.dir().display(),
            a.max_images,
            a.max_megabytes
        );
    }
    drop(source);
    let io = line.io(line.clock())?;
    println!(
        "reject output: {} (in safe state {:?}, active_low {}, pulse {} ms)",
        io.outputs.reject.pin.describe(),
        cfg.reject.safe_state,
        cfg.reject.active_low,
        cfg.reject.pulse_ms
    );
    for (role, o) in [("alarm", &io.outputs.alarm), ("ready", &io.outputs.ready)] {
        if let Some(o) = o {
            println!("{role} output: {} (in safe state)", o.pin.describe());
        }
    }
    if let Some(t) = &io.trigger {
        println!("trigger input: {}", t.describe());
    }
    if let Some(e) = &io.encoder {
        println!("encoder input: {}", e.describe());
    }
    let after = if cfg.trigger.is_some() {
        "the trigger"
    } else {
        "capture"
    };
    let timing = match line.scheduler().delay {
        Delay::Time { delay, margin } => format!(
            "reject {:.1} ms after {after}, decision due {:.1} ms before",
            delay.as_secs_f64() * 1000.0,
            margin.as_secs_f64() * 1000.0
        ),
        Delay::Ticks { ticks, margin } => format!(
            "reject {ticks} encoder ticks after {after}, decision due {margin} ticks before"
        ),
    };
    println!(
        "timing: {timing}; parts not judged in time: {:?}; queue {} parts",
        cfg.timing.policy, cfg.timing.queue_size
    );
    println!("threshold: {} (from {})", d.threshold, d.origin);
    if let Some(h) = &cfg.http {
        let scope = match h.address() {
            Some(a) if a.ip().is_loopback() => "this machine only",
            _ => "OPEN TO THE NETWORK (your choice in http.listen)",
        };
        let writes = if h.token.is_some() {
            "reload allowed with the bearer token"
        } else {
            "read-only"
        };
        println!(
            "page and /metrics: http://{}/ ({scope}; {writes})",
            h.listen
        );
    }
    if let Some(m) = &cfg.mqtt {
        println!(
            "MQTT: {} as {}, topics {}/{{part,status,alarm,state}}, QoS {}",
            m.broker,
            m.client_id(),
            m.topic_prefix(),
            m.qos
        );
    }
    println!("check: OK");
    Ok(())
}

/// Every control the camera offers, with range and current value; those `[camera.controls]` sets
/// are marked `*`.
fn print_camera_controls(cfg: &Config, source: &dyn FrameSource) -> Result<(), Error> {
    let SourceConfig::V4l2 { device, .. } = &cfg.source else {
        if !cfg.camera.controls.is_empty() {
            println!("camera controls: [camera.controls] ignored (the source is a replay folder)");
        }
        return Ok(());
    };
    let in_force = source.controls_in_force();
    let all = controls::list_device(device)?;
    println!(
        "camera controls ({} offered; * = set by [camera.controls], read back):",
        all.len()
    );
    for (c, value) in &all {
        let mark = if in_force.contains_key(&c.key) {
            "*"
        } else {
            " "
        };
        let now = value.map_or_else(|| "-".to_string(), |v| c.show(v));
        println!(
            "  {mark} {:<32} {:>12}   {} (default {}){}",
            c.key,
            now,
            c.range(),
            c.show(c.default),
            if c.read_only() { ", read-only" } else { "" }
        );
    }
    Ok(())
}
