//! The line-side view, end to end through the binary: the page's API and `/metrics` against the
//! run's `--stats-json`, hostile requests, the page in a real headless Chromium, and MQTT results
//! through a real mosquitto broker that is stopped and restarted mid-run.
//!
//! Needs Debian's `chromium`, `mosquitto` and `mosquitto-clients` (installed by
//! `cross/setup-debian.sh`, part of the README's test command).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// A config on the sample folder, replayed in a loop at `rate_hz`, with an archive and `extra`.
fn config(dir: &Path, rate_hz: f64, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[source]
kind = "replay"
path = "{samples}"
loop = true
rate_hz = {rate_hz}

[model]
path = "{model}"

[decision]
threshold = {threshold}

[reject]
kind = "simulated"
pulse_ms = 20.0

[timing]
delay_ms = 5000.0
margin_ms = 50.0
queue_size = 256

[log]
status_interval_s = 0.5
print_decisions = true

[archive]
dir = "{archive}"
{extra}
"#,
        samples = common::samples().display(),
        model = common::f32_model().display(),
        threshold = common::threshold(),
        archive = dir.join("archive").display(),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `partguard run` in the background, its stderr lines on a channel.
struct Station {
    child: Child,
    stderr: Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Station {
    fn start(config: &Path, args: &[&str]) -> Station {
        let mut child = common::partguard("info")
            .arg("--config")
            .arg(config)
            .arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("partguard: {line}");
                let _ = tx.send(line);
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Station {
            child,
            stderr: rx,
            stdout,
        }
    }

    /// The address the page is served on, from the log.
    fn address(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(1)) {
                if let Some(rest) = line.split("/metrics on http://").nth(1) {
                    return rest.trim_end_matches('/').parse().unwrap();
                }
            }
        }
        panic!("partguard never said where the page is served");
    }

    /// SIGTERM, then the exit status and stdout.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        (status, self.stdout.join().unwrap())
    }
}

/// One HTTP/1.1 request on its own connection: (status, content type, body).
fn request(addr: SocketAddr, raw: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut body = bytes[(split + 4).min(bytes.len())..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    (status, header("content-type"), body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Polls `/api/status` until the run has ended; returns the last status.
fn wait_until_ended(addr: SocketAddr) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let s = get_json(addr, "/api/status");
        if s["running"] == false {
            return s;
        }
        assert!(Instant::now() < deadline, "the run never ended: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The samples of `/metrics` as `name{labels}` -> value.
fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, ctype, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.contains("openmetrics-text"), "{ctype}");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "not a complete exposition"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse::<f64>().unwrap())
        })
        .collect()
}

fn stats_counts(path: &Path) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["counts"].clone()
}

#[test]
fn the_api_and_metrics_agree_with_the_stats_json_and_refuse_hostile_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        0.0,
        &format!("[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    let stats = dir.path().join("stats.json");
    let station = Station::start(
        &cfg,
        &[
            "--frames",
            "24",
            "--stats-json",
            stats.to_str().unwrap(),
            "--linger",
            "600",
        ],
    );
    let addr = station.address();
    // A scrape while the line runs (or has just ended, on a fast machine) is a valid exposition.
    let during = metrics(addr);
    assert!(during.contains_key("partguard_parts_total{verdict=\"ok\"}"));

    let status = wait_until_ended(addr);
    let counts = stats_counts(&stats);
    assert_eq!(
        status["counts"], counts,
        "the page's counts differ from --stats-json"
    );
    assert_eq!(counts["frames"], 24);
    let m = metrics(addr);
    for (verdict, key) in [
        ("ok", "ok"),
        ("ng", "ng"),
        ("late", "late"),
        ("missed", "missed"),
        ("fault", "faults"),
        ("overflow", "overflows"),
    ] {
        assert_eq!(
            m[&format!("partguard_parts_total{{verdict=\"{verdict}\"}}")],
            counts[key].as_f64().unwrap(),
            "{verdict}"
        );
    }
    for (metric, key) in [
        ("partguard_frames_inspected_total", "frames"),
        ("partguard_reject_pulses_total", "pulses"),
        ("partguard_archive_written_total", "archived"),
        ("partguard_archive_dropped_total", "archive_dropped"),
        ("partguard_camera_stalls_total", "stalls"),
    ] {
        assert_eq!(m[metric], counts[key].as_f64().unwrap(), "{metric}");
    }
    assert_eq!(m["partguard_capture_to_decision_seconds_count"], 24.0);
    assert_eq!(m["partguard_inference_seconds_count"], 24.0);
    assert_eq!(
        m["partguard_reject_onset_error_seconds_count"],
        counts["pulses"].as_f64().unwrap()
    );
    assert_eq!(m["partguard_telemetry_dropped_total"], 0.0);
    assert_eq!(status["station"]["model_name"], "bottle_sspcab");

    let decisions = get_json(addr, "/api/decisions?limit=600");
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 24);
    assert_eq!(decisions[0]["seq"], 23, "newest first");

    // The archive: every image listed, a thumbnail and the full image open.
    let archive = get_json(addr, "/api/archive");
    assert_eq!(archive["total"], counts["archived"]);
    let first = &archive["images"][0];
    let (s, ctype, thumb) = get(addr, first["thumb"].as_str().unwrap());
    assert_eq!((s, ctype.as_str()), (200, "image/jpeg"));
    assert_eq!(&thumb[..2], &[0xFF, 0xD8]);
    let (s, _, png) = get(addr, first["url"].as_str().unwrap());
    assert_eq!(s, 200);
    assert_eq!(&png[1..4], b"PNG");

    // Hostile names: never a file outside the archive, never a symlink out of it.
    let archive_dir = dir.path().join("archive");
    std::os::unix::fs::symlink(
        "/etc/passwd",
        archive_dir.join("99999999-20260101T000000Z-part1-NG-0.9.png"),
    )
    .unwrap();
    for path in [
        "/archive/..%2F..%2F..%2Fetc%2Fpasswd",
        "/archive/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/archive/../../etc/passwd",
        "/archive/00000001-..%2F..%2Fetc%2Fpasswd.png",
        "/archive/00000001-x%00.png",
        "/archive/99999999-20260101T000000Z-part1-NG-0.9.png",
        "/archive/99999999-20260101T000000Z-part1-NG-0.9.png/thumb",
        "/archive/00000001-20260101T000000Z-part1-NG-0.9.png",
        "/archive/%2Fetc%2Fpasswd",
        "/..%2f..%2fetc/passwd",
    ] {
        let (s, _, body) = get(addr, path);
        assert!(s == 400 || s == 404, "{path}: HTTP {s}");
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path} leaked a file"
        );
    }
    // Garbage and oversized requests get an error, and the server goes on.
    let (s, _, _) = request(addr, "GARBAGE\r\n\r\n");
    assert_eq!(s, 400);
    let huge = format!(
        "GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (s, _, _) = request(addr, &huge);
    assert_ne!(s, 200, "a 1 MiB header was served");
    assert_eq!(get(addr, "/api/status").0, 200);

    // Changing the line needs the token.
    let post = |auth: &str| {
        request(
            addr,
            &format!(
                "POST /api/reload HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    assert_eq!(post(""), 401);
    assert_eq!(
        post("Authorization: Bearer wrong-token-0123456789\r\n"),
        401
    );
    assert_eq!(post(&format!("Authorization: Bearer {TOKEN}\r\n")), 202);
    assert_eq!(get(addr, "/api/reload").0, 405);

    let (exit, _) = station.stop();
    assert!(exit.success(), "{exit}");
}

#[test]
fn without_a_token_the_page_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 0.0, "[http]\nlisten = \"127.0.0.1:0\"\n");
    let station = Station::start(&cfg, &["--frames", "2", "--linger", "600"]);
    let addr = station.address();
    let (s, _, body) = request(
        addr,
        &format!("POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    station.stop();
}

/// Chromium, headless, on the page; its DOM after `budget_ms` of the page's life.
fn chromium(url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1150",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match screenshot {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c.arg(url).stderr(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run chromium ({e}): install it with `apt-get install chromium` (cross/setup-debian.sh does)")
    });
    assert!(out.status.success(), "chromium failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[test]
fn the_page_in_a_real_browser_shows_the_runs_counts_frame_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4.0, "[http]\nlisten = \"127.0.0.1:0\"\n");
    let stats = dir.path().join("stats.json");
    let station = Station::start(
        &cfg,
        &[
            "--frames",
            "40",
            "--stats-json",
            stats.to_str().unwrap(),
            "--linger",
            "600",
        ],
    );
    let addr = station.address();
    let url = format!("http://{addr}/");
    // While the line runs (40 parts at 4 parts/s): the page asks for frames, the line copies them.
    let live = chromium(&url, 4000, None);
    assert!(live.contains("id=\"frame\""), "{live}");
    let status = wait_until_ended(addr);
    let counts = stats_counts(&stats);
    assert_eq!(status["counts"], counts);

    let dom = chromium(&url, 4000, None);
    assert_eq!(element_text(&dom, "state"), "run ended");
    for (id, key) in [
        ("c-ok", "ok"),
        ("c-ng", "ng"),
        ("c-late", "late"),
        ("c-missed", "missed"),
        ("c-faults", "faults"),
        ("c-parts", "parts"),
    ] {
        assert_eq!(
            element_text(&dom, id),
            counts[key].to_string(),
            "#{id} vs --stats-json {key}"
        );
    }
    // The frame image loaded (its src is set only from a loaded image).
    let frame_tag = &dom[dom.find("id=\"frame\"").unwrap()..];
    let frame_tag = &frame_tag[..frame_tag.find('>').unwrap()];
    assert!(
        frame_tag.contains("data-loaded=\"1\""),
        "the frame did not load: {frame_tag}"
    );
    // An archive thumbnail loaded, and its link opens the full image.
    assert!(counts["archived"].as_u64().unwrap() > 0);
    assert!(
        dom.contains("data-loaded=\"1\" alt=\"0") || dom.matches("data-loaded=\"1\"").count() >= 2,
        "no archive thumbnail loaded"
    );
    let href_at = dom.find("href=\"/archive/").expect("no archive link");
    let href = &dom[href_at + 6..];
    let href = &href[..href.find('"').unwrap()];
    let (s, ctype, _) = get(addr, href);
    assert_eq!((s, ctype.as_str()), (200, "image/png"), "{href}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page.png");
    chromium(&url, 4000, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    eprintln!("screenshot: {}", shot.display());
    let (exit, _) = station.stop();
    assert!(exit.success());
}

/// A mosquitto broker on a free loopback port, with persistence, so a subscriber's session and
/// its queued messages survive a restart.
struct Broker {
    child: Child,
    conf: PathBuf,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Broker {
        Broker::start_with(dir, port, "")
    }

    /// With `extra` lines (more listeners) in its config.
    fn start_with(dir: &Path, port: u16, extra: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                // `user root`: as root, mosquitto would otherwise switch to its own user, which
                // cannot write the session store into this folder (ignored when not root).
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\n{extra}",
                dir.display()
            ),
        )
        .unwrap();
        Broker::run(conf, port)
    }

    fn run(conf: PathBuf, port: u16) -> Broker {
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start mosquitto ({e}): install it with `apt-get install mosquitto mosquitto-clients` (cross/setup-debian.sh does)")
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, conf }
    }

    /// SIGTERM (mosquitto saves its sessions) and wait.
    fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.conf.clone()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A subscriber to `pgtest/#` (rumqttc, QoS 1, persistent session): "topic payload" lines, and
/// "SUBACK" once subscribed. It reconnects after the broker restarts.
fn subscribe(port: u16) -> Receiver<String> {
    subscribe_to(port, "pgtest/#")
}

fn subscribe_to(port: u16, topic: &'static str) -> Receiver<String> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new("partguard-test-sub", "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(opts, 16);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            let line = match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // The broker keeps the session across its restart; subscribing again is
                    // harmless and covers a broker that lost it.
                    let _ = client.try_subscribe(topic, QoS::AtLeastOnce);
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    format!("{} {}", p.topic, String::from_utf8_lossy(&p.payload))
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => "SUBACK".to_owned(),
                Ok(_) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn mqtt_publishes_every_part_and_rides_out_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(dir.path(), port);
    // A subscriber with a persistent session (QoS 1, no clean session): what is published while it
    // reconnects to the restarted broker waits for it there.
    let lines = subscribe(port);
    let mut seen = Vec::new();
    let wait_for =
        |lines: &Receiver<String>, seen: &mut Vec<String>, what: &dyn Fn(&str) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline {
                if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
                    let hit = what(&l);
                    seen.push(l);
                    if hit {
                        return;
                    }
                }
            }
            panic!("timed out; subscriber saw {seen:?}");
        };
    wait_for(&lines, &mut seen, &|l| l.contains("SUBACK"));

    let cfg = config(
        dir.path(),
        4.0,
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[mqtt]\nbroker = \"mqtt://127.0.0.1:{port}\"\ntopic_prefix = \"pgtest\"\nqos = 1\nbuffer = 2\nstatus_interval_s = 0.5\n"
        ),
    );
    let stats = dir.path().join("stats.json");
    let station = Station::start(
        &cfg,
        &[
            "--frames",
            "40",
            "--stats-json",
            stats.to_str().unwrap(),
            "--linger",
            "600",
        ],
    );
    let addr = station.address();
    wait_for(&lines, &mut seen, &|l| l.starts_with("pgtest/part "));
    // The broker goes away mid-run; the station buffers 2 results, then drops and counts.
    let conf = broker.stop();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = get_json(addr, "/api/status");
        if s["mqtt"]["counts"]["dropped"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(
            s["running"] == true,
            "the run ended before the broker outage showed: {s}"
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    let broker = Broker::run(conf, port);
    let status = wait_until_ended(addr);
    let counts = stats_counts(&stats);
    assert_eq!(status["counts"], counts);
    let (exit, stdout) = station.stop();
    assert!(exit.success());
    // The clean stop sends the final status, then offline (mosquitto also sent the last will
    // `offline` when it went down mid-run).
    wait_for(&lines, &mut seen, &|l| {
        l.starts_with("pgtest/status ") && l.contains("\"running\":false")
    });
    wait_for(&lines, &mut seen, &|l| l == "pgtest/state offline");
    drop(broker);

    let final_status: Value = serde_json::from_str(
        seen.iter()
            .rev()
            .filter_map(|l| l.strip_prefix("pgtest/status "))
            .find(|l| l.contains("\"running\":false"))
            .unwrap_or_else(|| panic!("no status message among {seen:?}")),
    )
    .unwrap();
    let mqtt = &final_status["mqtt"];
    let dropped = mqtt["dropped"].as_u64().unwrap();
    let published = mqtt["published"].as_u64().unwrap();
    assert!(mqtt["reconnects"].as_u64().unwrap() >= 1, "{mqtt}");
    // Every judged part was either delivered (QoS 1 may deliver twice after the restart) or
    // counted as dropped: exactly.
    let mut verdicts: BTreeMap<u64, String> = BTreeMap::new();
    for l in &seen {
        if let Some(json) = l.strip_prefix("pgtest/part ") {
            let v: Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["model_sha256"].as_str().unwrap().len(), 64);
            verdicts.insert(
                v["seq"].as_u64().unwrap(),
                v["verdict"].as_str().unwrap().to_owned(),
            );
        }
    }
    // Every part: those the model judged and those the capture thread sent to the fail-safe
    // policy (overruns on a slow machine).
    let frames = counts["frames"].as_u64().unwrap();
    let parts = counts["parts"].as_u64().unwrap();
    assert_eq!(
        verdicts.len() as u64 + dropped,
        parts,
        "received {} distinct parts, dropped {dropped}, parts {parts}",
        verdicts.len()
    );
    assert_eq!(published, verdicts.len() as u64);
    assert!(dropped >= 2);
    // The verdicts are the line's own (its decision lines on stdout).
    let on_stdout: BTreeMap<u64, &str> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == "part").then(|| (f[1].parse().unwrap(), f[2]))
        })
        .collect();
    assert_eq!(on_stdout.len() as u64, frames);
    for (seq, v) in &verdicts {
        match on_stdout.get(seq) {
            Some(line) => assert_eq!(*line, v.as_str(), "part {seq}"),
            // Not judged by the model: only a fail-safe part has no decision line.
            None => assert_eq!(v, "FAULT", "part {seq}"),
        }
    }
    let online = seen.iter().filter(|l| *l == "pgtest/state online").count();
    assert!(online >= 2, "no 'online' after the reconnect: {online}");
    let missing: BTreeSet<u64> = (0..parts).filter(|s| !verdicts.contains_key(s)).collect();
    eprintln!("mqtt: {published} published, {dropped} dropped (parts {missing:?})");
}

/// Runs openssl with `args` in `dir`.
#[cfg(feature = "mqtt-tls")]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a broker certificate for localhost/127.0.0.1 signed by it, and a second CA that
/// signed nothing.
#[cfg(feature = "mqtt-tls")]
fn certificates(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=partguard test {ca}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[cfg(feature = "mqtt-tls")]
#[test]
fn mqtt_over_tls_reaches_a_broker_signed_by_the_configured_ca_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (plain, tls) = (free_port(), free_port());
    let d = dir.path().display();
    let _broker = Broker::start_with(
        dir.path(),
        plain,
        &format!("listener {tls} 127.0.0.1\ncafile {d}/ca.crt\ncertfile {d}/broker.crt\nkeyfile {d}/broker.key\n"),
    );
    let lines = subscribe_to(plain, "pgtls/#");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l == "SUBACK") {
        assert!(Instant::now() < deadline, "no SUBACK");
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let run = |prefix: &str, ca: &str| {
        let cfg = config(
            dir.path(),
            0.0,
            &format!(
                "[mqtt]\nbroker = \"mqtts://127.0.0.1:{tls}\"\nca_file = \"{d}/{ca}\"\ntopic_prefix = \"{prefix}\"\nclient_id = \"{prefix}\"\n"
            ),
        );
        common::partguard("warn")
            .arg("--config")
            .arg(&cfg)
            .args(["run", "--frames", "6"])
            .output()
            .unwrap()
    };
    // The broker's CA: every part arrives, over TLS.
    let ok = run("pgtls", "ca.crt");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
            let done = l == "pgtls/state offline";
            seen.push(l);
            if done {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no offline after the run: {seen:?}"
        );
    }
    let parts: BTreeSet<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("pgtls/part "))
        .map(|j| {
            serde_json::from_str::<Value>(j).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(parts, (0..6).collect());
    // Another CA: the broker's certificate is refused, said clearly, and the line goes on.
    let refused = run("pgbad", "other-ca.crt");
    assert!(refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("[mqtt] broker") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !lines.try_iter().any(|l| l.starts_with("pgbad/part")),
        "a part went to a broker whose certificate was refused"
    );
}

#[test]
fn check_says_where_the_page_is_served_and_a_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let check = |listen: &str| {
        let cfg = config(dir.path(), 0.0, &format!("[http]\nlisten = \"{listen}\"\n"));
        let out = common::partguard("warn")
            .arg("--config")
            .arg(&cfg)
            .arg("check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let local = check("127.0.0.1:8080");
    assert!(
        local.contains("page and /metrics: http://127.0.0.1:8080/ (this machine only; read-only)"),
        "{local}"
    );
    let open = check("0.0.0.0:8080");
    assert!(open.contains("OPEN TO THE NETWORK"), "{open}");

    // A port someone else holds: `run` stops before the line starts, naming the field.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config(
        dir.path(),
        0.0,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let out = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--frames", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "[http] listen = \"127.0.0.1:{port}\": cannot listen there"
        )) && stderr.contains("pick a free port"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("part "),
        "a part was inspected"
    );
}
