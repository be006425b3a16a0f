//! Under a service manager: readiness, the watchdog's sign of life (stops when the process is
//! stalled, resumes after), STOPPING on SIGTERM, and `safe-state` after a SIGKILL. The test plays
//! systemd's side of the notify protocol on a socket of its own.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;

fn config(dir: &Path) -> std::path::PathBuf {
    common::config::TestConfig::replay(&common::samples(), "loop = true\nrate_hz = 5")
        .decision("threshold = 0.12")
        .sections(
            "[timing]\ndelay_ms = 300\n\n[log]\nstatus_interval_s = 0.2\nprint_decisions = false\n",
        )
        .write(&dir.join("line.toml"))
}

/// Every message received within `window`.
fn collect(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

fn wait_for(sock: &UnixDatagram, what: &str, limit: Duration) -> Vec<String> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < end {
        let got = collect(sock, Duration::from_millis(200));
        let found = got.iter().any(|m| m == what);
        seen.extend(got);
        if found {
            return seen;
        }
    }
    panic!("no {what} within {limit:?}; got {seen:?}");
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn count(msgs: &[String], what: &str) -> usize {
    msgs.iter().filter(|m| *m == what).count()
}

#[test]
fn readiness_watchdog_stall_and_stop_follow_the_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let limit = Duration::from_secs(60 * common::scale());
    let child = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000") // systemd's WatchdogSec=400ms: a pet every 200 ms
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&sock, "READY=1", limit);
    let running = collect(&sock, Duration::from_millis(1500));
    assert!(
        count(&running, "WATCHDOG=1") >= 3,
        "the loop pets the watchdog every ~200 ms: {running:?}"
    );
    assert!(
        running.iter().any(|m| m.starts_with("STATUS=parts ")),
        "{running:?}"
    );
    // A stalled process (SIGSTOP here; a hung stage in the field) sends no sign of life, so
    // systemd's watchdog would kill and restart it.
    signal(&child, libc::SIGSTOP);
    let _ = collect(&sock, Duration::from_millis(100)); // sent before the stop took effect
    let stalled = collect(&sock, Duration::from_millis(1000));
    assert_eq!(count(&stalled, "WATCHDOG=1"), 0, "{stalled:?}");
    signal(&child, libc::SIGCONT);
    wait_for(
        &sock,
        "WATCHDOG=1",
        Duration::from_secs(5 * common::scale()),
    );
    signal(&child, libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", limit);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("summary: frames "));
}

#[test]
fn safe_state_after_a_sigkill_sets_every_output_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let alarmed = std::fs::read_to_string(&cfg).unwrap()
        + "\n[alarm]\nkind = \"simulated\"\nsafe_state = \"active\"\n";
    std::fs::write(&cfg, alarmed).unwrap();
    let mut child = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, libc::SIGKILL);
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");
    // What the unit's ExecStopPost runs after any exit.
    let out = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .arg("safe-state")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reject: simulated") && stdout.contains("-> Inactive (safe state)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("alarm: simulated") && stdout.contains("-> Active (safe state)"),
        "{stdout}"
    );
    // A line that cannot be opened is an error naming it, not a silent success.
    let broken = std::fs::read_to_string(&cfg).unwrap().replace(
        "[reject]\nkind = \"simulated\"",
        "[reject]\nkind = \"gpiocdev\"\nchip = \"gpiochip99\"\nline = 3",
    );
    std::fs::write(&cfg, broken).unwrap();
    let out = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .arg("safe-state")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpiochip99"), "{err}");
}

/// The README's `systemctl reload partguard` works: the unit sends the SIGHUP that re-reads the
/// calibration (the reload itself: tests/calibrate.rs), and says how.
#[test]
fn the_unit_reloads_with_sighup_as_the_readme_says() {
    let root = common::root();
    let unit = std::fs::read_to_string(root.join("cross/partguard.service")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let reload: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecReload="))
        .collect();
    if readme.contains("systemctl reload") {
        assert_eq!(reload, ["ExecReload=/bin/kill -HUP $MAINPID"], "{unit}");
    }
    // `safe-state` after every exit, a crash included.
    assert!(unit.contains("ExecStopPost=/usr/local/bin/partguard safe-state"));
}
