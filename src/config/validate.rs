//! Config validation: every field checked after parsing, errors naming the file and the field
//! and saying what to do.

use std::path::Path;

use super::{plant, Config, ConfigError, SourceConfig, DEFAULT_DELAY_MS};
use crate::gpio::{LineId, OutputKind};

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        plant::validate(self.http.as_ref(), self.mqtt.as_ref(), path)?;
        let bad = |field: &'static str, problem: String| ConfigError::Field {
            path: path.to_owned(),
            field,
            problem,
        };
        match &self.source {
            SourceConfig::Replay {
                path: p, rate_hz, ..
            } => {
                if !p.exists() {
                    return Err(bad(
                        "source.path",
                        format!(
                            "names {} which does not exist; give a folder of images",
                            p.display()
                        ),
                    ));
                }
                if !rate_hz.is_finite() || *rate_hz < 0.0 {
                    return Err(bad(
                        "source.rate_hz",
                        format!("is {rate_hz}; use 0 (as fast as possible) or a positive rate"),
                    ));
                }
            }
            SourceConfig::V4l2 {
                width,
                height,
                format,
                buffers,
                ..
            } => {
                if *width == 0 || *height == 0 {
                    return Err(bad("source.width", format!("{width}x{height} is not a frame size; give the camera's size, e.g. 640x480")));
                }
                if crate::capture::PixelFormat::parse_config(format).is_none() {
                    return Err(bad(
                        "source.format",
                        format!("is \"{format}\"; use auto, YUYV, MJPG, GREY or RGB3"),
                    ));
                }
                if !(2..=32).contains(buffers) {
                    return Err(bad(
                        "source.buffers",
                        format!("is {buffers}; use 2 to 32 (4 is typical)"),
                    ));
                }
                if let Some(roi) = self.roi {
                    if roi.check(*width, *height).is_err() {
                        return Err(bad("roi", format!("{roi} does not fit the {width}x{height} frame of source; keep x + width <= {width} and y + height <= {height}")));
                    }
                }
            }
        }
        if let Some(roi) = self.roi {
            if roi.width == 0 || roi.height == 0 {
                return Err(bad(
                    "roi",
                    format!("{roi} is empty; give the part's rectangle in camera pixels"),
                ));
            }
        }
        let engine = self.model.engine;
        if !engine.built_in() {
            return Err(bad(
                "model.engine",
                format!(
                    "is \"{}\" but this partguard was built without it; rebuild with `cargo build --release --features {}`, or use \"tract\"",
                    engine.name(),
                    engine.feature()
                ),
            ));
        }
        if !self.model.path.is_file() {
            return Err(bad(
                "model.path",
                format!("names {} which is not a file; point it at an ONNX model (see models/README.md)", self.model.path.display()),
            ));
        }
        match (self.decision.threshold, &self.decision.calibration) {
            (None, None) => {
                return Err(bad(
                    "decision",
                    "needs `threshold` or `calibration`; run `partguard calibrate` to make a calibration file".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "decision",
                    "has both `threshold` and `calibration`; keep one (the calibration file holds its own threshold)".into(),
                ))
            }
            (Some(t), None) if !t.is_finite() => {
                return Err(bad("decision.threshold", format!("is {t}; give a finite score")));
            }
            _ => {}
        }
        let r = &self.reject;
        if !r.pulse_ms.is_finite() || r.pulse_ms <= 0.0 || r.pulse_ms > 10_000.0 {
            return Err(bad(
                "reject.pulse_ms",
                format!(
                    "is {}; give a pulse width in milliseconds, 0 < width <= 10000",
                    r.pulse_ms
                ),
            ));
        }
        check_output(path, "reject", r.kind, r.chip.as_deref(), r.line.as_ref())?;
        for (role, o) in [("alarm", &self.alarm), ("ready", &self.ready)] {
            if let Some(o) = o {
                check_output(path, role, o.kind, o.chip.as_deref(), o.line.as_ref())?;
                if role == "alarm" && o.heartbeat_ms != 0.0 {
                    return Err(bad(
                        "alarm.heartbeat_ms",
                        format!(
                            "is {}; the alarm output does not toggle (only [ready] has a \
                             heartbeat); remove it",
                            o.heartbeat_ms
                        ),
                    ));
                }
                if !(o.heartbeat_ms.is_finite() && (0.0..=60_000.0).contains(&o.heartbeat_ms)) {
                    return Err(bad(
                        "ready.heartbeat_ms",
                        format!(
                            "is {}; use 0 (steady) or a period in ms up to 60000",
                            o.heartbeat_ms
                        ),
                    ));
                }
            }
        }
        if let Some(a) = &self.archive {
            if a.max_images == 0 {
                return Err(bad(
                    "archive.max_images",
                    "is 0; give how many reject images to keep (e.g. 1000), or remove [archive]"
                        .into(),
                ));
            }
            if !a.max_megabytes.is_finite() || a.max_megabytes < 1.0 {
                return Err(bad(
                    "archive.max_megabytes",
                    format!(
                        "is {}; give the disk space for the archive in MiB, at least 1",
                        a.max_megabytes
                    ),
                ));
            }
        }
        self.validate_timing(path)
    }

    fn validate_timing(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| ConfigError::Field {
            path: path.to_owned(),
            field,
            problem,
        };
        let ms_ok = |v: f64| v.is_finite() && (0.0..=600_000.0).contains(&v);
        let t = &self.timing;
        match (t.delay_ms, t.delay_ticks, &self.encoder) {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "timing",
                    "has both `delay_ms` and `delay_ticks`; keep the one that matches your line"
                        .into(),
                ))
            }
            (_, Some(_), None) => return Err(bad(
                "timing.delay_ticks",
                "needs an [encoder] section (chip and line of the encoder input); or give delay_ms"
                    .into(),
            )),
            (None, None, Some(_)) => {
                return Err(bad(
                    "timing.delay_ticks",
                    "is missing: with an [encoder], give the camera-to-ejector distance in ticks"
                        .into(),
                ))
            }
            (Some(d), None, _) if !ms_ok(d) || d == 0.0 => {
                return Err(bad(
                    "timing.delay_ms",
                    format!("is {d}; give the camera-to-ejector travel time in ms (> 0)"),
                ))
            }
            _ => {}
        }
        if !ms_ok(t.margin_ms) {
            return Err(bad(
                "timing.margin_ms",
                format!("is {}; give milliseconds >= 0", t.margin_ms),
            ));
        }
        let delay_ms = t.delay_ms.unwrap_or(DEFAULT_DELAY_MS);
        if t.delay_ticks.is_none() && t.margin_ms >= delay_ms {
            return Err(bad(
                "timing.margin_ms",
                format!("is {} but the delay is {delay_ms} ms; the margin must be shorter than the delay", t.margin_ms),
            ));
        }
        if let Some(ticks) = t.delay_ticks {
            if t.margin_ticks >= ticks {
                return Err(bad(
                    "timing.margin_ticks",
                    format!(
                        "is {} but delay_ticks is {ticks}; the margin must be smaller",
                        t.margin_ticks
                    ),
                ));
            }
        }
        if !ms_ok(t.min_gap_ms) {
            return Err(bad(
                "timing.min_gap_ms",
                format!("is {}; give milliseconds >= 0", t.min_gap_ms),
            ));
        }
        if !ms_ok(t.alarm_hold_ms) {
            return Err(bad(
                "timing.alarm_hold_ms",
                format!("is {}; give milliseconds >= 0", t.alarm_hold_ms),
            ));
        }
        if !(1..=crate::schedule::MAX_QUEUE).contains(&t.queue_size) {
            return Err(bad(
                "timing.queue_size",
                format!(
                    "is {}; use 1 to {} (at least the parts between camera and ejector, plus a few)",
                    t.queue_size,
                    crate::schedule::MAX_QUEUE
                ),
            ));
        }
        if let Some(tr) = &self.trigger {
            match (&tr.chip, &tr.line, &tr.socket) {
                (Some(_), Some(_), None) | (None, None, Some(_)) => {}
                (_, _, Some(_)) => {
                    return Err(bad(
                        "trigger",
                        "has both a GPIO line (`chip`, `line`) and `socket`; keep the one the part signal comes from".into(),
                    ))
                }
                (None, _, None) => {
                    return Err(bad(
                        "trigger.chip",
                        "is missing; give the photo-eye's `chip` and `line`, or a `socket` path for a software trigger".into(),
                    ))
                }
                (Some(_), None, None) => {
                    return Err(bad(
                        "trigger.line",
                        "is missing; give the photo-eye's line (offset or name, see `gpioinfo`)".into(),
                    ))
                }
            }
            if !ms_ok(tr.debounce_ms) {
                return Err(bad(
                    "trigger.debounce_ms",
                    format!("is {}; give milliseconds >= 0", tr.debounce_ms),
                ));
            }
            if !ms_ok(tr.frame_window_ms) || tr.frame_window_ms == 0.0 {
                return Err(bad(
                    "trigger.frame_window_ms",
                    format!(
                        "is {}; give the longest trigger-to-frame time in ms (> 0)",
                        tr.frame_window_ms
                    ),
                ));
            }
        }
        let status = self.log.status_interval_s;
        if !(status.is_finite() && (0.0..=86_400.0).contains(&status)) {
            return Err(bad(
                "log.status_interval_s",
                format!("is {status}; use 0 (no status lines) or a period in s up to 86400"),
            ));
        }
        // The CPUs the kernel knows, online or not (the threads pin to one with sched_setaffinity).
        // SAFETY: sysconf reads a system value; no memory is passed.
        let conf = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        let cpus = usize::try_from(conf).map_or(libc::CPU_SETSIZE as usize, |n| {
            n.clamp(1, libc::CPU_SETSIZE as usize)
        });
        for (field, cpu) in [
            ("realtime.actuator_cpu", self.realtime.actuator_cpu),
            ("realtime.inference_cpu", self.realtime.inference_cpu),
        ] {
            if let Some(cpu) = cpu.filter(|&c| c >= cpus) {
                return Err(bad(
                    field,
                    format!(
                        "is {cpu}, but this machine has CPUs 0 to {} (`nproc`); pick one of them or remove the field",
                        cpus - 1
                    ),
                ));
            }
        }
        if self.realtime.fifo_priority > 99 {
            return Err(bad(
                "realtime.fifo_priority",
                format!(
                    "is {}; use 1 to 99, or 0 to turn SCHED_FIFO off",
                    self.realtime.fifo_priority
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the fields an output of `kind` needs.
fn check_output(
    path: &Path,
    role: &'static str,
    kind: OutputKind,
    chip: Option<&str>,
    line: Option<&LineId>,
) -> Result<(), ConfigError> {
    let bad = |field: &'static str, problem: String| ConfigError::Field {
        path: path.to_owned(),
        field,
        problem,
    };
    let field = |name: &str| -> &'static str {
        match (role, name) {
            ("reject", "chip") => "reject.chip",
            ("reject", "line") => "reject.line",
            ("reject", _) => "reject.kind",
            ("alarm", "chip") => "alarm.chip",
            ("alarm", "line") => "alarm.line",
            ("alarm", _) => "alarm.kind",
            (_, "chip") => "ready.chip",
            (_, "line") => "ready.line",
            _ => "ready.kind",
        }
    };
    match kind {
        OutputKind::Simulated => {}
        OutputKind::Gpiocdev => {
            if chip.is_none() {
                return Err(bad(
                    field("chip"),
                    "is missing; name the GPIO chip, e.g. \"/dev/gpiochip0\" (see `gpiodetect`)"
                        .into(),
                ));
            }
            if line.is_none() {
                return Err(bad(
                    field("line"),
                    "is missing; give the line offset or name (see `gpioinfo`)".into(),
                ));
            }
        }
        OutputKind::Rpi => {
            if !matches!(line, Some(LineId::Offset(_))) {
                return Err(bad(
                    field("line"),
                    "must be the BCM GPIO number for kind = \"rpi\", e.g. line = 17".into(),
                ));
            }
            if !cfg!(feature = "rpi") {
                return Err(bad(field("kind"), "is \"rpi\" but this build lacks the `rpi` feature; rebuild with `--features rpi` or use kind = \"gpiocdev\"".into()));
            }
        }
    }
    Ok(())
}
