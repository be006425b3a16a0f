//! MQTT results end to end through the binary and a real broker (Debian's `mosquitto`, installed
//! by `cross/setup-debian.sh`): every part delivered or counted through a broker restart, and
//! (feature `mqtt-tls`) TLS against a test CA.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::station::{config, free_port, get_json, stats_counts, wait_until_ended, Station};

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
    let station = Station::serving(&cfg, 40, &stats);
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
