//! Results to the plant's MQTT broker, through `rumqttc` (the maintained pure-Rust client, on the
//! telemetry thread's tokio runtime); `mqtts://` over rustls with the `mqtt-tls` feature.
//!
//! Topics under `topic_prefix`:
//! - `<prefix>/part`: one JSON message per part (seq, capture time, score, threshold, verdict and
//!   fault reason, model sha256, archived), fail-safe parts included;
//! - `<prefix>/status`: the counts every `status_interval_s`;
//! - `<prefix>/alarm`: `raised` / `cleared` when the alarm changes (retained);
//! - `<prefix>/state`: `online` (retained) once connected, `offline` at a clean stop and as the
//!   broker-sent last will when the station vanishes.
//!
//! Part results wait in a buffer of `buffer` results while the broker is away or slow; beyond it
//! the oldest are dropped and counted. Reconnection backs off from 0.5 s to 30 s. The line never
//! sees any of this: it only fills the telemetry queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};

use super::view::View;
use super::{LiveCounts, PartRecord};
use crate::config::{broker_address, MqttConfig};
use crate::decide::Verdict;

/// Requests waiting in rumqttc's own channel; beyond this, results stay in our buffer.
const CLIENT_CHANNEL: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What went wrong setting up MQTT.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("[mqtt] broker {broker}: {problem}")]
    Broker { broker: String, problem: String },
    #[error("[mqtt] password_file {path}: {source}")]
    Password {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[mqtt] {field} {path}: {source}")]
    TlsFile {
        field: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// TLS to the broker (rustls with the ring provider), checked against `ca_file`.
#[cfg(feature = "mqtt-tls")]
fn tls(opts: &mut MqttOptions, cfg: &MqttConfig) -> Result<(), MqttError> {
    let read = |field: &'static str, path: std::path::PathBuf| {
        std::fs::read(&path).map_err(|source| MqttError::TlsFile {
            field,
            path,
            source,
        })
    };
    let ca = read("ca_file", cfg.ca_file())?;
    let client_auth = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(c), Some(k)) => Some((
            read("client_cert_file", c.clone())?,
            read("client_key_file", k.clone())?,
        )),
        _ => None,
    };
    // The process-wide rustls provider; already installed on a second connect.
    let _ = rustls::crypto::ring::default_provider().install_default();
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        },
    ));
    Ok(())
}

/// Config validation refuses mqtts:// in a build without TLS.
#[cfg(not(feature = "mqtt-tls"))]
fn tls(_: &mut MqttOptions, cfg: &MqttConfig) -> Result<(), MqttError> {
    Err(MqttError::Broker {
        broker: cfg.broker.clone(),
        problem: "this build has no TLS; build with `--features mqtt-tls`".into(),
    })
}

/// The publishing side: the buffer and the client handle. Shared by the telemetry thread's drain
/// task and the connection task (never locked across an await).
pub struct Publisher {
    client: AsyncClient,
    prefix: String,
    qos: QoS,
    model_sha256: String,
    buffer: VecDeque<PartRecord>,
    capacity: usize,
    connected: bool,
    alarm: Option<bool>,
    view: Arc<Mutex<View>>,
}

/// Connects (in the background) and returns the publisher and the connection's event loop.
pub fn connect(
    cfg: &MqttConfig,
    model_sha256: &str,
    view: Arc<Mutex<View>>,
) -> Result<(Publisher, EventLoop), MqttError> {
    let address = broker_address(&cfg.broker).map_err(|problem| MqttError::Broker {
        broker: cfg.broker.clone(),
        problem,
    })?;
    let prefix = cfg.topic_prefix();
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut opts = MqttOptions::new(cfg.client_id(), address.host.clone(), address.port);
    if address.tls {
        tls(&mut opts, cfg)?;
    }
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_last_will(LastWill::new(
        format!("{prefix}/state"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        let password = match &cfg.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| MqttError::Password {
                    path: p.clone(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            None => String::new(),
        };
        opts.set_credentials(user.clone(), password);
    }
    let (client, eventloop) = AsyncClient::new(opts, CLIENT_CHANNEL);
    Ok((
        Publisher {
            client,
            prefix,
            qos,
            model_sha256: model_sha256.to_owned(),
            buffer: VecDeque::with_capacity(cfg.buffer.min(4096)),
            capacity: cfg.buffer,
            connected: false,
            alarm: None,
            view,
        },
        eventloop,
    ))
}

impl Publisher {
    /// Takes one part result: publishes it now, or keeps it for when the broker is back.
    pub fn offer(&mut self, r: PartRecord) {
        if self.buffer.len() == self.capacity {
            self.buffer.pop_front();
            self.count(|m| m.dropped += 1);
        }
        self.buffer.push_back(r);
        self.flush();
    }

    /// Publishes buffered results while connected and the client's channel has room.
    pub fn flush(&mut self) {
        while self.connected {
            let Some(r) = self.buffer.front() else {
                break;
            };
            let payload = part_json(r, &self.model_sha256);
            match self
                .client
                .try_publish(format!("{}/part", self.prefix), self.qos, false, payload)
            {
                Ok(()) => {
                    self.buffer.pop_front();
                    self.count(|m| m.published += 1);
                }
                Err(_) => break,
            }
        }
        let buffered = self.buffer.len();
        self.count(|m| m.buffered = buffered);
    }

    /// The periodic status message, and an alarm message when the alarm changed.
    pub fn status(&mut self, live: &LiveCounts, rate: f64) {
        if !self.connected {
            return;
        }
        let mqtt = self.view.lock().map(|v| v.mqtt).unwrap_or_default();
        let doc = serde_json::json!({
            "counts": live.summary,
            "threshold": live.threshold,
            "parts_per_second": rate,
            "alarm": live.alarm,
            "drift_warnings": live.drift_warnings,
            "running": !live.ended,
            "mqtt": mqtt,
        });
        if self
            .client
            .try_publish(
                format!("{}/status", self.prefix),
                QoS::AtMostOnce,
                false,
                doc.to_string(),
            )
            .is_ok()
        {
            self.count(|m| m.status_messages += 1);
        }
        self.alarm_changed(live.alarm);
    }

    fn alarm_changed(&mut self, alarm: bool) {
        if self.alarm == Some(alarm) || !self.connected {
            return;
        }
        let text = if alarm { "raised" } else { "cleared" };
        if self
            .client
            .try_publish(
                format!("{}/alarm", self.prefix),
                QoS::AtLeastOnce,
                true,
                text,
            )
            .is_ok()
        {
            self.alarm = Some(alarm);
        }
    }

    fn set_connected(&mut self, connected: bool) {
        if connected && !self.connected {
            let _ = self.client.try_publish(
                format!("{}/state", self.prefix),
                QoS::AtLeastOnce,
                true,
                "online",
            );
            // The broker may have lost the retained alarm state.
            self.alarm = None;
        }
        self.connected = connected;
        self.count(|m| {
            if connected && !m.connected && m.published + m.status_messages > 0 {
                m.reconnects += 1;
            }
            m.connected = connected;
        });
        if connected {
            self.flush();
        }
    }

    fn count(&self, f: impl FnOnce(&mut super::view::MqttCounts)) {
        if let Ok(mut v) = self.view.lock() {
            f(&mut v.mqtt);
        }
    }

    /// A clean stop: `offline` (retained) and a disconnect.
    pub fn goodbye(&mut self) {
        let _ = self.client.try_publish(
            format!("{}/state", self.prefix),
            QoS::AtLeastOnce,
            true,
            "offline",
        );
        let _ = self.client.try_disconnect();
    }

    /// Results still waiting for the broker.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// Drives the connection until it is closed: marks the publisher connected on CONNACK and not
/// connected on an error, then waits (backing off) before the next attempt.
pub async fn drive(
    mut eventloop: EventLoop,
    publisher: Arc<Mutex<Publisher>>,
    broker: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    loop {
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            _ = stop.changed() => {
                // Stopping: keep driving the connection (the goodbye and disconnect go out) for
                // a short while.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                if logged_down {
                    log::info!("[mqtt] connected to {broker} again");
                } else {
                    log::info!("[mqtt] connected to {broker}");
                }
                logged_down = false;
                if let Ok(mut p) = publisher.lock() {
                    p.set_connected(true);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) | Ok(Event::Outgoing(_)) => {
                // Room in the client's channel again.
                if let Ok(mut p) = publisher.lock() {
                    p.flush();
                }
            }
            Ok(_) => {}
            Err(e) => {
                if let Ok(mut p) = publisher.lock() {
                    p.set_connected(false);
                }
                if !logged_down {
                    log::warn!(
                        "[mqtt] broker {broker}: {}; results wait in the buffer, reconnecting",
                        describe(&e)
                    );
                    logged_down = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The JSON of one part result.
pub fn part_json(r: &PartRecord, model_sha256: &str) -> String {
    let fault = match r.verdict {
        Verdict::Fault(f) => Some(f.as_str()),
        _ => None,
    };
    serde_json::json!({
        "seq": r.seq,
        "captured": crate::clock::utc_from_unix_us(r.captured_unix_us),
        "score": r.score.is_finite().then_some(r.score),
        "threshold": r.threshold,
        "verdict": r.verdict.as_str(),
        "fault": fault,
        "model_sha256": model_sha256,
        "archived": r.archived,
    })
    .to_string()
}
