//! The service manager's side: systemd's notify protocol (`Type=notify`, `WatchdogSec=`).
//!
//! Under systemd (`cross/partguard.service`), `partguard run` sends `READY=1` once the model is
//! loaded and the inspection loop runs, `WATCHDOG=1` from the inspection loop while it is alive,
//! `STATUS=...` with each status line, and `STOPPING=1` when SIGTERM/SIGINT arrives. A process that
//! stops petting the watchdog for `WatchdogSec` (a hung stage, a deadlock) is killed by systemd and
//! restarted (`Restart=on-failure`); the unit's `ExecStopPost=partguard safe-state` puts the outputs
//! in their safe state after any kind of exit, a SIGKILL included. Without `NOTIFY_SOCKET` in the
//! environment every call here does nothing.
//!
//! Hand-written rather than taken from the `sd-notify` crate: it is a few lines, and the watchdog
//! message goes out from the real-time loop without allocating (socket and address made once).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Where notifications go, and how often the watchdog wants a sign of life.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Half the watchdog timeout (systemd's advice), None without `WATCHDOG_USEC`.
    pet_every: Option<Duration>,
    /// CLOCK_MONOTONIC ns of the next due `WATCHDOG=1`.
    next_pet: AtomicU64,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// The address in `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
pub fn parse_address(value: &str) -> std::io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(value),
    }
}

/// The watchdog period asked for by `WATCHDOG_USEC` (and `WATCHDOG_PID`, when it names us).
pub fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Reads `NOTIFY_SOCKET` / `WATCHDOG_USEC` / `WATCHDOG_PID` once; later calls keep the first answer.
/// A malformed address is logged and notifications stay off.
pub fn init_from_env() {
    NOTIFIER.get_or_init(|| {
        let value = std::env::var("NOTIFY_SOCKET").ok()?;
        let made = parse_address(&value).and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        let (sock, addr) = match made {
            Ok(x) => x,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET={value}: {e}; no readiness or watchdog notifications");
                return None;
            }
        };
        let timeout = watchdog_timeout(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        if let Some(t) = timeout {
            log::info!("systemd watchdog: {} ms", t.as_millis());
        }
        Some(Notifier {
            sock,
            addr,
            pet_every: timeout.map(|t| t / 2),
            next_pet: AtomicU64::new(0),
        })
    });
}

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER.get().and_then(Option::as_ref)
}

fn send(n: &Notifier, msg: &[u8]) {
    if let Err(e) = n.sock.send_to_addr(msg, &n.addr) {
        log::warn!(
            "service notification {:?} not delivered: {e}",
            String::from_utf8_lossy(msg)
        );
    }
}

/// Startup is finished: the loop runs.
pub fn ready() {
    if let Some(n) = notifier() {
        send(n, b"READY=1");
    }
}

/// Shutting down (a stop was asked for).
pub fn stopping() {
    if let Some(n) = notifier() {
        send(n, b"STOPPING=1");
    }
}

/// A one-line status shown by `systemctl status` (allocates; once per status interval).
pub fn status(text: &str) {
    if let Some(n) = notifier() {
        send(n, format!("STATUS={text}").as_bytes());
    }
}

/// A sign of life from the inspection loop at `now` (CLOCK_MONOTONIC); sends `WATCHDOG=1` when half
/// the watchdog period has passed since the last one. Allocation-free; cheap to call every loop.
pub fn watchdog(now: Duration) {
    let Some(n) = notifier() else { return };
    let Some(every) = n.pet_every else { return };
    let now_ns = now.as_nanos() as u64;
    if now_ns >= n.next_pet.load(Ordering::Relaxed) {
        n.next_pet
            .store(now_ns + every.as_nanos() as u64, Ordering::Relaxed);
        send(n, b"WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_watchdog_settings_parse() {
        assert!(parse_address("/run/systemd/notify")
            .unwrap()
            .as_pathname()
            .is_some());
        assert!(parse_address("@abstract/name")
            .unwrap()
            .as_pathname()
            .is_none());
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some(&me)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_timeout(Some("30000000"), Some("1")), None); // not for us
        assert_eq!(watchdog_timeout(Some("0"), None), None);
        assert_eq!(watchdog_timeout(Some("x"), None), None);
        assert_eq!(watchdog_timeout(None, Some(&me)), None);
    }
}
