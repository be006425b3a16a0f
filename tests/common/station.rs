//! The partguard binary as a station with `[http]` and `[mqtt]`: a config on the samples, the
//! running process, a minimal HTTP/1.1 client, and readers for `/api/status`, `/metrics` and the
//! `--stats-json` file. Shared by `tests/page.rs` and `tests/mqtt.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

/// A config on the sample folder, replayed in a loop at `rate_hz`, with an archive and `extra`.
pub fn config(dir: &Path, rate_hz: f64, extra: &str) -> PathBuf {
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
        samples = super::samples().display(),
        model = super::f32_model().display(),
        threshold = super::threshold(),
        archive = dir.join("archive").display(),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `partguard run` in the background, its stderr lines on a channel.
pub struct Station {
    child: Child,
    stderr: Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Station {
    pub fn start(config: &Path, args: &[&str]) -> Station {
        let mut child = super::partguard("info")
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

    /// `run` of `frames` parts writing `stats`, serving the page until stopped.
    pub fn serving(config: &Path, frames: u64, stats: &Path) -> Station {
        let frames = frames.to_string();
        Station::start(
            config,
            &[
                "--frames",
                &frames,
                "--stats-json",
                &stats.display().to_string(),
                "--linger",
                "600",
            ],
        )
    }

    /// The address the page is served on, from the log.
    pub fn address(&self) -> SocketAddr {
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
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        (status, self.stdout.join().unwrap())
    }
}

/// One HTTP/1.1 request on its own connection: (status, content type, body).
pub fn request(addr: SocketAddr, raw: &str) -> (u16, String, Vec<u8>) {
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

pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
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

pub fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Polls `/api/status` until the run has ended; returns the last status.
pub fn wait_until_ended(addr: SocketAddr) -> Value {
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
pub fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
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

pub fn stats_counts(path: &Path) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["counts"].clone()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
