//! `[http]` (the page on the device, its JSON API and `/metrics`) and `[mqtt]` (results to the
//! plant's broker): the station's view for people and systems beside the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[http]`: off when the section is absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port served, e.g. "127.0.0.1:8080". Any other address than loopback opens the
    /// page to the network: the user's explicit choice.
    pub listen: String,
    /// Bearer token that allows the requests that change the line (`POST /api/reload`). Without
    /// one, the page is read-only and such requests are refused.
    #[serde(default)]
    pub token: Option<String>,
}

impl HttpConfig {
    /// The socket address of `listen` (checked by validation).
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// `[mqtt]`: off when the section is absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// "mqtt://host:1883" (the port defaults to 1883), or "mqtts://host:8883" for TLS (builds
    /// with the `mqtt-tls` feature; the port defaults to 8883).
    pub broker: String,
    /// TLS: PEM file of the CA(s) that signed the broker's certificate (default: the system's
    /// bundle, /etc/ssl/certs/ca-certificates.crt).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// TLS: client certificate and its private key (PEM), for brokers that authenticate clients
    /// by certificate; both or neither.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// MQTT client id; default `partguard-<hostname>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Topics start with this; default `partguard/<hostname>`.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// 0 (at most once) or 1 (at least once; the broker acknowledges, resent after a reconnect).
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (first line), so the config carries no secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Seconds between status messages (the statistics JSON).
    #[serde(default = "default_status_interval")]
    pub status_interval_s: f64,
    /// Part results kept while the broker is away; beyond this they are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_qos() -> u8 {
    1
}
fn default_status_interval() -> f64 {
    10.0
}
fn default_buffer() -> usize {
    1000
}

/// The system's CA bundle (Debian's ca-certificates), the default `ca_file`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A broker's address from `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// The broker's host, port and whether it speaks TLS.
pub fn broker_address(broker: &str) -> Result<BrokerAddress, String> {
    let (rest, tls, default_port) = if let Some(r) = broker.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else if let Some(r) = broker.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else {
        return Err(format!(
            "is \"{broker}\": give it as mqtt://host:port, or mqtts://host:port for TLS"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| {
                format!("is \"{broker}\": the port \"{p}\" is not a number 1-65535")
            })?,
        ),
        None => (rest, default_port),
    };
    if host.is_empty() || port == 0 {
        return Err(format!("is \"{broker}\": give it as mqtt://host:port"));
    }
    Ok(BrokerAddress {
        host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
        port,
        tls,
    })
}

/// The machine's host name (for the default client id and topic prefix).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "station".to_owned())
}

impl MqttConfig {
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("partguard-{}", hostname()))
    }

    pub fn topic_prefix(&self) -> String {
        self.topic_prefix
            .clone()
            .unwrap_or_else(|| format!("partguard/{}", hostname()))
            .trim_end_matches('/')
            .to_owned()
    }

    pub(super) fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.password_file,
            &mut self.ca_file,
            &mut self.client_cert_file,
            &mut self.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The CA file TLS checks the broker against.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE))
    }
}

/// Checks `[http]` and `[mqtt]`.
pub(super) fn validate(
    http: Option<&HttpConfig>,
    mqtt: Option<&MqttConfig>,
    path: &Path,
) -> Result<(), ConfigError> {
    let bad = |field: &'static str, problem: String| ConfigError::Field {
        path: path.to_owned(),
        field,
        problem,
    };
    if let Some(h) = http {
        if h.address().is_none() {
            return Err(bad(
                "http.listen",
                format!(
                    "is \"{}\": give an address and port, e.g. \"127.0.0.1:8080\"",
                    h.listen
                ),
            ));
        }
        if let Some(t) = &h.token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "http.token",
                    "must be at least 16 printable characters without spaces (e.g. the output of `openssl rand -hex 16`)".into(),
                ));
            }
        }
    }
    if let Some(m) = mqtt {
        let address = broker_address(&m.broker).map_err(|p| bad("mqtt.broker", p))?;
        if address.tls && !cfg!(feature = "mqtt-tls") {
            return Err(bad(
                "mqtt.broker",
                format!(
                    "is \"{}\": this build has no TLS; build with `--features mqtt-tls`, or use mqtt://",
                    m.broker
                ),
            ));
        }
        let tls_files = [
            ("mqtt.ca_file", &m.ca_file),
            ("mqtt.client_cert_file", &m.client_cert_file),
            ("mqtt.client_key_file", &m.client_key_file),
        ];
        for (field, file) in tls_files {
            let Some(p) = file else { continue };
            if !address.tls {
                return Err(bad(
                    field,
                    format!("is set but mqtt.broker \"{}\" is not mqtts://", m.broker),
                ));
            }
            if let Err(e) = std::fs::read(p) {
                return Err(bad(field, format!("{}: cannot read it ({e})", p.display())));
            }
        }
        if m.client_cert_file.is_some() != m.client_key_file.is_some() {
            return Err(bad(
                "mqtt.client_key_file",
                "give mqtt.client_cert_file and mqtt.client_key_file together".into(),
            ));
        }
        if m.qos > 1 {
            return Err(bad("mqtt.qos", format!("is {}: must be 0 or 1", m.qos)));
        }
        if !(m.status_interval_s.is_finite() && (0.1..=86_400.0).contains(&m.status_interval_s)) {
            return Err(bad(
                "mqtt.status_interval_s",
                format!("is {}: must be 0.1 to 86400", m.status_interval_s),
            ));
        }
        if m.buffer == 0 || m.buffer > 100_000 {
            return Err(bad(
                "mqtt.buffer",
                format!("is {}: must be 1-100000 part results", m.buffer),
            ));
        }
        if let Some(prefix) = &m.topic_prefix {
            if prefix.is_empty() || prefix.contains(['#', '+']) {
                return Err(bad(
                    "mqtt.topic_prefix",
                    format!("is \"{prefix}\": must be a topic without wildcards (# +)"),
                ));
            }
        }
        if m.password_file.is_some() && m.username.is_none() {
            return Err(bad(
                "mqtt.password_file",
                "needs mqtt.username as well".into(),
            ));
        }
        if let Some(p) = &m.password_file {
            if let Err(e) = std::fs::read_to_string(p) {
                return Err(bad(
                    "mqtt.password_file",
                    format!("{}: cannot read it ({e})", p.display()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        let at = |host: &str, port, tls| BrokerAddress {
            host: host.into(),
            port,
            tls,
        };
        assert_eq!(
            broker_address("mqtt://10.0.0.5:1884").unwrap(),
            at("10.0.0.5", 1884, false)
        );
        assert_eq!(
            broker_address("mqtt://broker.local").unwrap(),
            at("broker.local", 1883, false)
        );
        assert_eq!(
            broker_address("mqtts://broker.local").unwrap(),
            at("broker.local", 8883, true)
        );
        assert!(broker_address("tcp://x:1").unwrap_err().contains("mqtt://"));
        assert!(broker_address("mqtt://x:port")
            .unwrap_err()
            .contains("port"));
        assert!(broker_address("mqtt://:1883").is_err());
    }
}
