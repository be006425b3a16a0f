//! Config errors name the file and the field, and say what to do.

use std::path::Path;

use partguard::config::{Config, ConfigError, SourceConfig};
use partguard::gpio::{LineId, OutputKind};

const GOOD: &str = r#"
[source]
kind = "replay"
path = "samples/bottle"

[model]
path = "../models/bottle_sspcab_f32.onnx"

[decision]
threshold = 0.5

[reject]
kind = "simulated"
pulse_ms = 50
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    Config::parse(text, Path::new("line3.toml"), &base)
}

fn field_error(text: &str) -> (&'static str, String) {
    match parse(text) {
        Err(ConfigError::Field {
            field,
            problem,
            path,
        }) => {
            assert_eq!(path, Path::new("line3.toml"));
            (field, problem)
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn the_shipped_example_is_valid_and_paths_resolve_beside_it() {
    let cfg = Config::builtin().unwrap();
    match &cfg.source {
        SourceConfig::Replay { path, .. } => {
            assert!(path.ends_with("examples/samples/bottle"), "{path:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(cfg.model.path.is_file());
    assert_eq!(cfg.reject.kind, OutputKind::Simulated);
    assert_eq!(parse(GOOD).unwrap().decision.threshold, Some(0.5));
}

#[test]
fn missing_field_names_it() {
    let text = GOOD.replace("pulse_ms = 50", "");
    let err = parse(&text).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(
        msg.contains("line3.toml") && msg.contains("missing field `pulse_ms`"),
        "{msg}"
    );
    let (f, p) = field_error(&GOOD.replace("threshold = 0.5", ""));
    assert_eq!(f, "decision");
    assert!(p.contains("partguard calibrate"), "{p}");
    let (f, p) = field_error(&GOOD.replace(
        "threshold = 0.5",
        "threshold = 0.5\ncalibration = \"line3.cal.toml\"",
    ));
    assert_eq!(f, "decision");
    assert!(p.contains("both"), "{p}");
}

#[test]
fn wrong_type_names_the_field() {
    let text = GOOD.replace("pulse_ms = 50", "pulse_ms = \"fifty\"");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(
        msg.contains("line3.toml") && msg.contains("pulse_ms"),
        "{msg}"
    );
}

#[test]
fn unknown_field_is_refused() {
    let text = GOOD.replace("pulse_ms = 50", "pulse_ms = 50\npulse_width = 3");
    let msg = parse(&text).unwrap_err().to_string();
    assert!(msg.contains("unknown field `pulse_width`"), "{msg}");
}

#[test]
fn missing_paths_and_bad_values_name_the_field() {
    let (f, p) = field_error(&GOOD.replace("samples/bottle", "samples/nothing-here"));
    assert_eq!(f, "source.path");
    assert!(p.contains("does not exist"), "{p}");
    let (f, p) = field_error(&GOOD.replace("bottle_sspcab_f32.onnx", "missing.onnx"));
    assert_eq!(f, "model.path");
    assert!(p.contains("not a file"), "{p}");
    let (f, _) = field_error(&GOOD.replace("pulse_ms = 50", "pulse_ms = -1"));
    assert_eq!(f, "reject.pulse_ms");
    let (f, p) = field_error(&GOOD.replace("kind = \"simulated\"", "kind = \"gpiocdev\""));
    assert_eq!(f, "reject.chip");
    assert!(p.contains("gpiodetect"), "{p}");
}

#[test]
fn camera_fields_are_checked() {
    let cam = GOOD.replace(
        "kind = \"replay\"\npath = \"samples/bottle\"",
        "kind = \"v4l2\"\ndevice = \"/dev/video9\"\nwidth = 640\nheight = 480\nformat = \"NV12\"",
    );
    let (f, p) = field_error(&cam);
    assert_eq!(f, "source.format");
    assert!(p.contains("YUYV"), "{p}");
    let ok = parse(&cam.replace("NV12", "yuyv")).unwrap();
    assert!(matches!(ok.source, SourceConfig::V4l2 { width: 640, .. }));
    // A region of interest must fit the camera's frame.
    let with_roi = |x: u32| {
        cam.replace("NV12", "YUYV")
            + &format!("\n[roi]\nx = {x}\ny = 100\nwidth = 256\nheight = 256\n")
    };
    let ok = parse(&with_roi(384)).unwrap();
    assert_eq!(ok.roi.map(|r| (r.x, r.width)), Some((384, 256)));
    let (f, p) = field_error(&with_roi(385));
    assert_eq!(f, "roi");
    assert!(p.contains("640x480") && p.contains("x + width"), "{p}");
}

#[test]
fn gpio_line_by_offset_or_name() {
    let text = GOOD.replace(
        "kind = \"simulated\"",
        "kind = \"gpiocdev\"\nchip = \"gpiochip0\"\nline = \"PQ.05\"\nactive_low = true",
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.reject.line, Some(LineId::Name("PQ.05".into())));
    assert!(cfg.reject.active_low);
    let cfg = parse(&text.replace("\"PQ.05\"", "17")).unwrap();
    assert_eq!(cfg.reject.line, Some(LineId::Offset(17)));
}

#[test]
fn unreadable_file_says_so() {
    let err = Config::load(Path::new("/nonexistent/partguard.toml")).unwrap_err();
    // The cause is kept (`source()`), and the message names the file.
    match &err {
        ConfigError::Read { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected a read error, got {other}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    assert!(err.to_string().contains("/nonexistent/partguard.toml"));
}

#[test]
fn timing_errors_name_the_field_and_the_fix() {
    let cases = [
        (
            "[timing]\ndelay_ms = 300\ndelay_ticks = 40\n",
            "timing",
            "both",
        ),
        (
            "[timing]\ndelay_ticks = 40\n",
            "timing.delay_ticks",
            "[encoder]",
        ),
        (
            "[encoder]\nchip = \"gpiochip0\"\nline = 3\n",
            "timing.delay_ticks",
            "is missing",
        ),
        (
            "[timing]\ndelay_ms = 100\nmargin_ms = 100\n",
            "timing.margin_ms",
            "shorter than the delay",
        ),
        (
            "[timing]\ndelay_ms = -5\n",
            "timing.delay_ms",
            "travel time",
        ),
        (
            "[timing]\nqueue_size = 0\n",
            "timing.queue_size",
            "1 to 256",
        ),
        (
            "[trigger]\nchip = \"gpiochip0\"\nline = 4\nframe_window_ms = 0\n",
            "trigger.frame_window_ms",
            "> 0",
        ),
        (
            "[alarm]\nkind = \"gpiocdev\"\nchip = \"gpiochip0\"\n",
            "alarm.line",
            "is missing",
        ),
        (
            "[realtime]\nfifo_priority = 120\n",
            "realtime.fifo_priority",
            "1 to 99",
        ),
        // values that would panic in a Duration or a cpu_set_t rather than be refused
        (
            "[log]\nstatus_interval_s = inf\n",
            "log.status_interval_s",
            "up to 86400",
        ),
        (
            "[log]\nstatus_interval_s = 1e20\n",
            "log.status_interval_s",
            "up to 86400",
        ),
        (
            "[ready]\nkind = \"simulated\"\nheartbeat_ms = 1e20\n",
            "ready.heartbeat_ms",
            "up to 60000",
        ),
        (
            "[realtime]\nactuator_cpu = 100000\n",
            "realtime.actuator_cpu",
            "nproc",
        ),
        (
            "[realtime]\ninference_cpu = 4096\n",
            "realtime.inference_cpu",
            "nproc",
        ),
    ];
    for (extra, want_field, want_text) in cases {
        let (field, problem) = field_error(&format!("{GOOD}\n{extra}"));
        assert_eq!(field, want_field, "{extra}");
        assert!(problem.contains(want_text), "{extra}: {problem}");
    }
    let err = parse(&format!("{GOOD}\n[timing]\npolicy = \"ignore\"\n")).unwrap_err();
    assert!(err.to_string().contains("policy"), "{err}");
}

#[test]
fn trigger_is_a_gpio_line_or_a_socket_not_both() {
    let ok = parse(&format!(
        "{GOOD}\n[trigger]\nsocket = \"/run/partguard/trigger\"\n"
    ))
    .unwrap();
    assert_eq!(
        ok.trigger.and_then(|t| t.socket),
        Some("/run/partguard/trigger".into())
    );
    let (f, p) = field_error(&format!(
        "{GOOD}\n[trigger]\nchip = \"gpiochip0\"\nline = 4\nsocket = \"/run/t\"\n"
    ));
    assert_eq!(f, "trigger");
    assert!(p.contains("both"), "{p}");
    let (f, p) = field_error(&format!("{GOOD}\n[trigger]\nactive_low = true\n"));
    assert_eq!(f, "trigger.chip");
    assert!(p.contains("socket"), "{p}");
    let (f, _) = field_error(&format!("{GOOD}\n[trigger]\nchip = \"gpiochip0\"\n"));
    assert_eq!(f, "trigger.line");
}

#[test]
fn a_line_with_encoder_trigger_and_outputs_parses() {
    let cfg = parse(&format!(
        "{GOOD}\n[timing]\ndelay_ticks = 480\nmargin_ticks = 40\npolicy = \"pass\"\nqueue_size = 16\n\
         [encoder]\nchip = \"gpiochip0\"\nline = 22\nedges = \"both\"\n\
         [trigger]\nchip = \"gpiochip0\"\nline = \"PHOTO_EYE\"\nactive_low = true\n\
         [ready]\nkind = \"simulated\"\nheartbeat_ms = 250\n"
    ))
    .unwrap();
    assert_eq!(cfg.timing.delay_ticks, Some(480));
    assert_eq!(cfg.timing.policy, partguard::schedule::Policy::Pass);
    assert_eq!(
        cfg.trigger.as_ref().and_then(|t| t.line.clone()),
        Some(LineId::Name("PHOTO_EYE".into()))
    );
    let s = partguard::line::Line::new(&cfg).scheduler();
    assert_eq!(
        s.delay,
        partguard::schedule::Delay::Ticks {
            ticks: 480,
            margin: 40
        }
    );
    assert_eq!(s.queue_size, 16);
}

#[test]
fn the_archive_resolves_beside_the_config_and_its_bounds_are_checked() {
    let cfg = parse(&format!("{GOOD}\n[archive]\ndir = \"rejects\"\n")).unwrap();
    let a = cfg.archive.unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    assert_eq!(a.dir, base.join("rejects"));
    assert_eq!(
        (a.max_images, a.max_megabytes, a.faults),
        (1000, 500.0, true)
    );
    let (field, problem) =
        field_error(&format!("{GOOD}\n[archive]\ndir = \"r\"\nmax_images = 0\n"));
    assert_eq!(field, "archive.max_images");
    assert!(problem.contains("remove [archive]"), "{problem}");
    let (field, _) = field_error(&format!(
        "{GOOD}\n[archive]\ndir = \"r\"\nmax_megabytes = 0.1\n"
    ));
    assert_eq!(field, "archive.max_megabytes");
}

#[test]
#[cfg(not(feature = "onnxruntime"))]
fn an_engine_not_built_in_is_a_config_error_saying_how_to_build_it() {
    let text = GOOD.replace(
        "path = \"../models/bottle_sspcab_f32.onnx\"",
        "path = \"../models/bottle_sspcab_f32.onnx\"\nengine = \"onnxruntime\"",
    );
    let (field, problem) = field_error(&text);
    assert_eq!(field, "model.engine");
    assert!(problem.contains("--features onnxruntime"), "{problem}");
    let (field, _) = field_error(&text.replace("\"onnxruntime\"", "\"tensorrt\""));
    assert_eq!(field, "model.engine");
}

#[test]
fn an_unknown_engine_is_refused() {
    let text = GOOD.replace(
        "path = \"../models/bottle_sspcab_f32.onnx\"",
        "path = \"../models/bottle_sspcab_f32.onnx\"\nengine = \"openvino\"",
    );
    match parse(&text) {
        Err(ConfigError::Parse { reason, .. }) => {
            assert!(
                reason.contains("openvino") && reason.contains("tract"),
                "{reason}"
            )
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn heartbeat_belongs_to_ready_and_a_bad_value_names_its_section() {
    let (field, problem) = field_error(&format!(
        "{GOOD}\n[alarm]\nkind = \"simulated\"\nheartbeat_ms = 250\n"
    ));
    assert_eq!(field, "alarm.heartbeat_ms", "{problem}");
    assert!(problem.contains("only [ready]"), "{problem}");
    let (field, problem) = field_error(&format!(
        "{GOOD}\n[ready]\nkind = \"simulated\"\nheartbeat_ms = -5\n"
    ));
    assert_eq!(field, "ready.heartbeat_ms", "{problem}");
    // A steady ready output and an alarm without a heartbeat are fine.
    parse(&format!(
        "{GOOD}\n[alarm]\nkind = \"simulated\"\n\n[ready]\nkind = \"simulated\"\nheartbeat_ms = 0\n"
    ))
    .unwrap();
}

#[test]
fn http_and_mqtt_sections_are_checked_and_name_the_field() {
    let cfg = parse(&format!(
        "{GOOD}\n[http]\nlisten = \"127.0.0.1:8080\"\n\n[mqtt]\nbroker = \"mqtt://10.0.0.5\"\ntopic_prefix = \"plant/line3/\"\n"
    ))
    .unwrap();
    let h = cfg.http.unwrap();
    assert!(h.address().unwrap().ip().is_loopback());
    assert_eq!(h.token, None);
    let m = cfg.mqtt.unwrap();
    assert_eq!((m.qos, m.buffer, m.status_interval_s), (1, 1000, 10.0));
    assert_eq!(m.topic_prefix(), "plant/line3");
    for (section, field, needle) in [
        (
            "[http]\nlisten = \"localhost\"\n",
            "http.listen",
            "address and port",
        ),
        (
            "[http]\nlisten = \"127.0.0.1:8080\"\ntoken = \"short\"\n",
            "http.token",
            "16",
        ),
        (
            "[mqtt]\nbroker = \"tcp://x:1883\"\n",
            "mqtt.broker",
            "mqtt://",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x:99999\"\n",
            "mqtt.broker",
            "port",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\nqos = 2\n",
            "mqtt.qos",
            "0 or 1",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\nstatus_interval_s = 1e20\n",
            "mqtt.status_interval_s",
            "0.1 to 86400",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\nbuffer = 0\n",
            "mqtt.buffer",
            "1-100000",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\ntopic_prefix = \"a/#\"\n",
            "mqtt.topic_prefix",
            "wildcards",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\npassword_file = \"p\"\n",
            "mqtt.password_file",
            "username",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\nusername = \"u\"\npassword_file = \"no-such-file\"\n",
            "mqtt.password_file",
            "cannot read",
        ),
    ] {
        let (f, problem) = field_error(&format!("{GOOD}\n{section}"));
        assert_eq!(f, field, "{section}");
        assert!(problem.contains(needle), "{section}: {problem}");
    }
    assert!(matches!(
        parse(&format!(
            "{GOOD}\n[http]\nlisten = \"127.0.0.1:8080\"\nport = 1\n"
        )),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn camera_controls_keep_the_files_order_and_refuse_other_values() {
    use partguard::capture::controls::ControlValue;
    let cfg = parse(&format!(
        "{GOOD}\n[camera.controls]\nexposure_time_absolute = 120\nauto_exposure = \"manual\"\nwhite_balance_automatic = false\n0x00980900 = 40\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.camera.controls,
        vec![
            ("exposure_time_absolute".to_string(), ControlValue::Int(120)),
            (
                "auto_exposure".to_string(),
                ControlValue::Name("manual".into())
            ),
            (
                "white_balance_automatic".to_string(),
                ControlValue::Bool(false)
            ),
            ("0x00980900".to_string(), ControlValue::Int(40)),
        ]
    );
    // Neither a list nor a fraction is a control value; the error names the section.
    for bad in ["gain = [1, 2]", "gain = 1.5"] {
        match parse(&format!("{GOOD}\n[camera.controls]\n{bad}\n")) {
            Err(ConfigError::Parse { reason, .. }) => {
                assert!(
                    reason.contains("camera") && reason.contains("control"),
                    "{reason}"
                )
            }
            other => panic!("expected a parse error for {bad}, got {other:?}"),
        }
    }
    match parse(&format!("{GOOD}\n[camera]\nexposure = 5\n")) {
        Err(ConfigError::Parse { reason, .. }) => assert!(reason.contains("exposure"), "{reason}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
}
