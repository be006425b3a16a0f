//! The reject actuator: a thread that owns the reject output and fires pulses at their start times.
//!
//! The inspection loop hands pulse start times over a bounded, allocation-free `heapless` queue; the
//! actuator sleeps until each start, holds the line active for the pulse width, and releases it. The
//! line rests inactive while running and is put in its safe state when the actuator stops (normal
//! exit, signal, or the loop unwinding from a panic).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heapless::spsc::{Consumer, Producer, Queue};

use crate::clock::Clock;
use crate::output::{Level, OutputPin};

/// Pending pulses the queue holds; more is a fault (the part is counted, the pulse merged).
pub const QUEUE_CAPACITY: usize = 64;

pub type PulseQueue = Queue<Duration, QUEUE_CAPACITY>;

/// Counters shared between the loop and the actuator.
#[derive(Debug, Default)]
pub struct ActuatorCounters {
    pub pulses: AtomicU64,
    pub output_errors: AtomicU64,
    pub overflows: AtomicU64,
}

/// The loop's end of the actuator.
pub struct RejectHandle<'q> {
    producer: Producer<'q, Duration, QUEUE_CAPACITY>,
    thread: std::thread::Thread,
    pub counters: Arc<ActuatorCounters>,
}

impl RejectHandle<'_> {
    /// Schedules a pulse to start at `start` (clock time). Returns false when the queue is full.
    pub fn fire_at(&mut self, start: Duration) -> bool {
        let ok = self.producer.enqueue(start).is_ok();
        if !ok {
            self.counters.overflows.fetch_add(1, Ordering::Relaxed);
        }
        self.thread.unpark();
        ok
    }
}

/// Settings of the actuator.
#[derive(Debug, Clone, Copy)]
pub struct PulseSettings {
    pub width: Duration,
    pub safe: Level,
}

/// Spawns the actuator in `scope`. It stops, leaving the line in its safe state, once `stop` is set
/// and the queued pulses are done.
pub fn spawn_actuator<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    queue: &'env mut PulseQueue,
    mut line: Box<dyn OutputPin>,
    clock: Arc<dyn Clock>,
    settings: PulseSettings,
    stop: &'env AtomicBool,
) -> std::io::Result<(
    RejectHandle<'env>,
    std::thread::ScopedJoinHandle<'scope, Box<dyn OutputPin>>,
)> {
    let (producer, consumer) = queue.split();
    let counters = Arc::new(ActuatorCounters::default());
    let c2 = counters.clone();
    let join = std::thread::Builder::new()
        .name("reject-actuator".into())
        .spawn_scoped(scope, move || {
            run_actuator(consumer, &mut *line, &*clock, settings, stop, &c2);
            line
        })?;
    let thread = join.thread().clone();
    Ok((
        RejectHandle {
            producer,
            thread,
            counters,
        },
        join,
    ))
}

/// Puts the line in its safe state when dropped, also while unwinding from a panic.
struct SafeOnDrop<'a> {
    line: &'a mut dyn OutputPin,
    safe: Level,
}

impl Drop for SafeOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.line.set(self.safe) {
            log::error!(
                "could not put {} in its safe state: {e}",
                self.line.describe()
            );
        }
    }
}

fn set(line: &mut dyn OutputPin, level: Level, counters: &ActuatorCounters) {
    if let Err(e) = line.set(level) {
        counters.output_errors.fetch_add(1, Ordering::Relaxed);
        log::error!("reject output: {e}");
    }
}

fn run_actuator(
    mut consumer: Consumer<'_, Duration, QUEUE_CAPACITY>,
    line: &mut dyn OutputPin,
    clock: &dyn Clock,
    settings: PulseSettings,
    stop: &AtomicBool,
    counters: &ActuatorCounters,
) {
    let guard = SafeOnDrop {
        line,
        safe: settings.safe,
    };
    set(guard.line, Level::Inactive, counters);
    loop {
        if let Some(start) = consumer.dequeue() {
            clock.sleep_until(start);
            set(guard.line, Level::Active, counters);
            // The width counts from the real onset: a late wake-up must not shorten the pulse.
            let onset = clock.now();
            clock.sleep_until(onset + settings.width);
            set(guard.line, Level::Inactive, counters);
            counters.pulses.fetch_add(1, Ordering::Relaxed);
        } else if stop.load(Ordering::Acquire) {
            break;
        } else {
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
    drop(guard);
}
