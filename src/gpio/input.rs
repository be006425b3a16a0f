//! Digital inputs: the photo-eye trigger and the conveyor encoder, behind one small trait.
//!
//! [`CdevInput`] reads edge events from the Linux GPIO character device (kernel timestamps on
//! `CLOCK_MONOTONIC`, the clock frames and deadlines use); [`SocketTrigger`] is a software trigger
//! (one datagram per part); [`SimulatedInput`] replays scripted edges in real time for tests and
//! demos. [`Debouncer`] drops contact bounce; [`EncoderPosition`] is the
//! shared tick count the reject actuator waits on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{request_error, resolve_line, Cause, GpioError, LineId};
use crate::clock::Clock;

/// One edge of an input, in logical terms (`rising` = to active, whatever the wiring polarity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEdge {
    /// `CLOCK_MONOTONIC` time of the edge.
    pub at: Duration,
    pub rising: bool,
    /// Edges of this line the kernel dropped just before this one (its event buffer overflowed
    /// while the reading thread was behind); their times are lost.
    pub lost: u32,
}

/// A digital input that reports edges.
pub trait EdgeInput: Send {
    /// The next edge, waiting at most `timeout`; `Ok(None)` on timeout.
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<InputEdge>, GpioError>;
    /// One line for logs.
    fn describe(&self) -> String;
}

/// Which edges an input reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edges {
    Rising,
    Both,
}

/// An input line of the GPIO character device, with kernel edge detection and timestamps.
pub struct CdevInput {
    role: &'static str,
    chip: String,
    line: String,
    req: gpiocdev::Request,
    /// The kernel's sequence number of the line's last edge (0: none yet, or uAPI v1 without one).
    last_seqno: u32,
}

/// Edges dropped between the line's edges numbered `last` and `seqno` by the kernel (numbers from 1;
/// 0 where the kernel gives none).
fn dropped_between(last: u32, seqno: u32) -> u32 {
    if last == 0 || seqno == 0 {
        return 0;
    }
    seqno.wrapping_sub(last).saturating_sub(1)
}

impl CdevInput {
    /// Requests `line` on `chip` as an input reporting `edges`. `role` is the config section.
    pub fn open(
        role: &'static str,
        chip: &str,
        line: &LineId,
        active_low: bool,
        edges: Edges,
    ) -> Result<Self, GpioError> {
        let (path, offset) = resolve_line(role, chip, line)?;
        let mut b = gpiocdev::Request::builder();
        b.on_chip(&path)
            .with_consumer(format!("partguard-{role}"))
            .with_line(offset)
            .as_input()
            .with_edge_detection(match edges {
                Edges::Rising => gpiocdev::line::EdgeDetection::RisingEdge,
                Edges::Both => gpiocdev::line::EdgeDetection::BothEdges,
            })
            .with_event_clock(gpiocdev::line::EventClock::Monotonic)
            // Room for bursts (an encoder at speed) while the reading thread is descheduled.
            .with_kernel_event_buffer_size(1024);
        if active_low {
            b.as_active_low();
        }
        let req = b
            .request()
            .map_err(|e| request_error(role, chip, line, e))?;
        Ok(CdevInput {
            role,
            chip: chip.to_owned(),
            line: line.to_string(),
            req,
            last_seqno: 0,
        })
    }

    fn io(&self, e: gpiocdev::Error) -> GpioError {
        GpioError::Io {
            role: self.role,
            chip: self.chip.clone(),
            line: self.line.clone(),
            source: e.into(),
        }
    }
}

impl EdgeInput for CdevInput {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<InputEdge>, GpioError> {
        if !self.req.wait_edge_event(timeout).map_err(|e| self.io(e))? {
            return Ok(None);
        }
        let ev = self.req.read_edge_event().map_err(|e| self.io(e))?;
        let lost = dropped_between(self.last_seqno, ev.line_seqno);
        self.last_seqno = ev.line_seqno;
        Ok(Some(InputEdge {
            at: Duration::from_nanos(ev.timestamp_ns),
            rising: ev.kind == gpiocdev::line::EdgeKind::Rising,
            lost,
        }))
    }

    fn describe(&self) -> String {
        format!("gpiocdev {} line {} (input)", self.chip, self.line)
    }
}

/// A software trigger: a UNIX datagram socket; every datagram received is one rising edge,
/// stamped with `CLOCK_MONOTONIC` at reception. For parts that stand still when the trigger comes
/// (indexing tables, robot cells): the stamp is the receive time, so a moving part's position is
/// only as exact as the sender's latency. A photo-eye on a GPIO line is exact to microseconds.
///
/// Send one with e.g. `socat - UNIX-SENDTO:/run/partguard/trigger <<< part` or from any program.
pub struct SocketTrigger {
    path: std::path::PathBuf,
    sock: std::os::unix::net::UnixDatagram,
    buf: [u8; 64],
}

impl SocketTrigger {
    /// Creates the socket at `path`, replacing a stale socket left by an earlier run: never any
    /// other kind of file, and never a socket another process still receives on (a running
    /// partguard: `check` must not steal its trigger).
    pub fn bind(path: &std::path::Path) -> Result<Self, GpioError> {
        use std::os::unix::fs::FileTypeExt;
        let err = |source: Cause| GpioError::Socket {
            role: "trigger",
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                let probe =
                    std::os::unix::net::UnixDatagram::unbound().and_then(|p| p.connect(path));
                if probe.is_ok() {
                    return Err(err(
                        "is in use by another process (a running partguard?)".into()
                    ));
                }
                std::fs::remove_file(path)
                    .map_err(|e| err(format!("cannot remove the old socket: {e}").into()))?
            }
            Ok(_) => return Err(err("exists and is not a socket".into())),
            Err(_) => {}
        }
        let sock = std::os::unix::net::UnixDatagram::bind(path).map_err(|e| err(e.into()))?;
        Ok(SocketTrigger {
            path: path.to_owned(),
            sock,
            buf: [0; 64],
        })
    }
}

impl EdgeInput for SocketTrigger {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<InputEdge>, GpioError> {
        // A zero timeout would mean "block forever" to set_read_timeout.
        let timeout = timeout.max(Duration::from_micros(1));
        let err = |e: std::io::Error| GpioError::Socket {
            role: "trigger",
            path: self.path.clone(),
            source: e.into(),
        };
        self.sock.set_read_timeout(Some(timeout)).map_err(err)?;
        match self.sock.recv(&mut self.buf) {
            Ok(_) => Ok(Some(InputEdge {
                at: crate::clock::monotonic_now(),
                rising: true,
                lost: 0,
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(err(e)),
        }
    }

    fn describe(&self) -> String {
        format!("software trigger, socket {}", self.path.display())
    }
}

impl Drop for SocketTrigger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Scripted edges delivered at their times on `clock` (tests, demos).
pub struct SimulatedInput {
    clock: Arc<dyn Clock>,
    edges: std::vec::IntoIter<InputEdge>,
    next: Option<InputEdge>,
}

impl SimulatedInput {
    /// `edges` must be in time order.
    pub fn new(clock: Arc<dyn Clock>, edges: Vec<InputEdge>) -> Self {
        let mut edges = edges.into_iter();
        let next = edges.next();
        SimulatedInput { clock, edges, next }
    }
}

impl EdgeInput for SimulatedInput {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<InputEdge>, GpioError> {
        let limit = self.clock.now() + timeout;
        match self.next {
            Some(e) if e.at <= limit => {
                self.clock.sleep_until(e.at);
                self.next = self.edges.next();
                Ok(Some(e))
            }
            _ => {
                self.clock.sleep_until(limit);
                Ok(None)
            }
        }
    }

    fn describe(&self) -> String {
        "simulated input".into()
    }
}

/// Drops edges closer than `period` to the last accepted one (contact bounce of a photo-eye relay).
#[derive(Debug, Clone, Copy)]
pub struct Debouncer {
    period: Duration,
    last: Option<Duration>,
}

impl Debouncer {
    pub fn new(period: Duration) -> Self {
        Debouncer { period, last: None }
    }

    /// Whether an active edge at `at` is a new part.
    pub fn accept(&mut self, at: Duration) -> bool {
        if self.last.is_some_and(|l| at < l + self.period) {
            return false;
        }
        self.last = Some(at);
        true
    }
}

/// What a photo-eye reports to [`watch_trigger`]'s caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerEvent {
    /// A part: a debounced rising edge at this time.
    Part(Duration),
    /// The kernel dropped `edges` edges of the line before the one at `at` (its event buffer
    /// overflowed): parts that passed the photo-eye untracked.
    Dropped { at: Duration, edges: u32 },
}

/// A photo-eye trigger's loop, shared by the line and `collect`: waits for edges 50 ms at a time
/// while `keep_going()` holds and calls `on_event` for each debounced rising edge and for each gap
/// in the kernel's edges. Returns the input's error when it fails (the caller stops what the
/// trigger drives).
pub fn watch_trigger(
    input: &mut dyn EdgeInput,
    debounce: Duration,
    keep_going: impl Fn() -> bool,
    mut on_event: impl FnMut(TriggerEvent),
) -> Result<(), GpioError> {
    let mut debouncer = Debouncer::new(debounce);
    while keep_going() {
        if let Some(e) = input.wait_edge(Duration::from_millis(50))? {
            if e.lost > 0 {
                on_event(TriggerEvent::Dropped {
                    at: e.at,
                    edges: e.lost,
                });
            }
            if e.rising && debouncer.accept(e.at) {
                on_event(TriggerEvent::Part(e.at));
            }
        }
    }
    Ok(())
}

/// Tick times kept to look up the count at a past moment (frame or trigger timestamp).
const TICK_HISTORY: usize = 1024;

/// The encoder's tick count, shared by the counting thread and the reject actuator. The actuator
/// says which count it waits for; the counter wakes it when the count gets there. The last
/// `TICK_HISTORY` (1024) tick times are kept so a frame or a trigger edge gets the count at its own
/// timestamp, not at the (later) moment it was read.
#[derive(Debug)]
pub struct EncoderPosition {
    count: AtomicU64,
    wake_at: AtomicU64,
    waiter: OnceLock<std::thread::Thread>,
    /// Tick n (1-based) happened at `ticks[(n - 1) % TICK_HISTORY]` nanoseconds.
    ticks: Box<[AtomicU64]>,
}

impl Default for EncoderPosition {
    fn default() -> Self {
        Self::new()
    }
}

impl EncoderPosition {
    pub fn new() -> Self {
        EncoderPosition {
            count: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            waiter: OnceLock::new(),
            ticks: (0..TICK_HISTORY).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// The count at time `t` (ticks later than `t` are not counted), as far back as the history
    /// reaches.
    pub fn count_at(&self, t: Duration) -> u64 {
        let t = t.as_nanos() as u64;
        let now = self.count();
        let mut c = now;
        while c > 0 && now - c < TICK_HISTORY as u64 - 1 {
            if self.ticks[((c - 1) % TICK_HISTORY as u64) as usize].load(Ordering::Acquire) <= t {
                break;
            }
            c -= 1;
        }
        c
    }

    /// One tick at `at`; wakes the waiting thread when its count is reached.
    pub fn tick(&self, at: Duration) {
        self.ticks_at(1, at);
    }

    /// `n` ticks, all at `at` (ticks the kernel dropped, counted with the edge after them);
    /// wakes the waiting thread when its count is reached.
    pub fn ticks_at(&self, n: u64, at: Duration) {
        let history = TICK_HISTORY as u64;
        // Ticks the history cannot hold are counted without a time; then one at a time, each
        // slot written before the count that makes `count_at` read it (as for a single tick).
        if n > history {
            self.count.fetch_add(n - history, Ordering::SeqCst);
        }
        for _ in 0..n.min(history) {
            let k = self.count.load(Ordering::SeqCst);
            self.ticks[(k % history) as usize].store(at.as_nanos() as u64, Ordering::Release);
            self.count.fetch_add(1, Ordering::SeqCst);
        }
        let c = self.count();
        if c >= self.wake_at.load(Ordering::SeqCst) {
            if let Some(t) = self.waiter.get() {
                t.unpark();
            }
        }
    }

    /// The calling thread is woken (unparked) once the count reaches `count` (`None`: never).
    /// Returns false when the count is already there (no need to wait).
    pub fn wake_me_at(&self, count: Option<u64>) -> bool {
        let _ = self.waiter.set(std::thread::current());
        let target = count.unwrap_or(u64::MAX);
        self.wake_at.store(target, Ordering::SeqCst);
        // A tick between the caller's last read and the store above compared against the old
        // target: check again.
        self.count() < target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_edges_are_the_gap_in_the_kernels_sequence_numbers() {
        assert_eq!(dropped_between(0, 1), 0, "the first edge");
        assert_eq!(dropped_between(7, 8), 0);
        assert_eq!(dropped_between(7, 12), 4);
        assert_eq!(dropped_between(u32::MAX, 1), 1, "wrapped");
        assert_eq!(dropped_between(7, 0), 0, "uAPI v1: no numbers");
    }

    #[test]
    fn ticks_counted_together_share_their_time() {
        let p = EncoderPosition::new();
        let ms = Duration::from_millis;
        p.tick(ms(10));
        p.ticks_at(4, ms(50));
        assert_eq!(p.count(), 5);
        assert_eq!(p.count_at(ms(49)), 1);
        assert_eq!(p.count_at(ms(50)), 5);
    }

    #[test]
    fn the_count_at_a_past_time_ignores_later_ticks() {
        let p = EncoderPosition::new();
        let ms = Duration::from_millis;
        for i in 1..=10 {
            p.tick(ms(10 * i));
        }
        assert_eq!(p.count(), 10);
        assert_eq!(p.count_at(ms(100)), 10);
        assert_eq!(p.count_at(ms(55)), 5);
        assert_eq!(p.count_at(ms(50)), 5);
        assert_eq!(p.count_at(ms(5)), 0);
        assert!(!p.wake_me_at(Some(10)));
        assert!(p.wake_me_at(Some(11)));
    }

    #[test]
    fn bounces_inside_the_period_are_dropped() {
        let mut d = Debouncer::new(Duration::from_millis(5));
        let ms = Duration::from_millis;
        assert!(d.accept(ms(100)));
        assert!(!d.accept(ms(101)));
        assert!(!d.accept(ms(104)));
        assert!(d.accept(ms(105)));
        assert!(d.accept(ms(200)));
    }
}
