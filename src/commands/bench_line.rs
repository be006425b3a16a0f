//! `partguard bench --line`: the whole threaded line (replay at each rate -> model -> scheduler ->
//! simulated reject output) and the onset error of every reject pulse against its deadline.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::gpio::{Level, SimulatedLine};
use crate::line::{Line, Pacing};
use crate::pipeline::{run, LineIo};
use crate::reject::{Outputs, SafeOutput};
use crate::schedule::Delay;
use crate::Error;

/// What `partguard bench --line` is asked to do.
#[derive(Debug, Clone)]
pub struct LineBench {
    pub rates: Vec<f64>,
    pub seconds: f64,
    /// Competing busy threads for the second pass of each rate (0: no second pass).
    pub load: usize,
    pub pulse_ms: f64,
}

/// Busy threads that compete for the CPUs until dropped (integer and memory work, no sleeping).
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start(n: usize) -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u64; 1 << 20];
                    let mut x = i as u64 + 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for v in buf.iter_mut() {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            *v ^= x;
                        }
                    }
                    std::hint::black_box(&buf);
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `partguard bench --line`: the whole threaded line (replay at each rate -> model -> scheduler ->
/// simulated reject output) and the onset error of every reject pulse against its deadline.
pub fn bench_line(cfg: &Config, b: &LineBench) -> Result<(), Error> {
    let line = Line::new(cfg);
    let clock = line.clock();
    let mut schedule = line.scheduler();
    schedule.pulse = Duration::from_secs_f64(b.pulse_ms / 1000.0);
    let Delay::Time { delay, margin } = schedule.delay else {
        return Err(crate::config::ConfigError::Field {
            path: "config".into(),
            field: "timing.delay_ticks",
            problem: "`bench --line` measures time-mode delays; give timing.delay_ms".into(),
        }
        .into());
    };
    println!(
        "bench --line: delay {:.0} ms, margin {:.0} ms, pulse {} ms, policy {:?}, actuator SCHED_FIFO priority {}, {} s per rate",
        delay.as_secs_f64() * 1000.0,
        margin.as_secs_f64() * 1000.0,
        b.pulse_ms,
        schedule.policy,
        cfg.realtime.fifo_priority,
        b.seconds
    );
    println!(
        "{:>6} {:>5} {:>6} {:>9} {:>5} {:>5} {:>6} {:>6} {:>7} {:>7} {:>11} {:>11} {:>11}",
        "parts/s",
        "load",
        "parts",
        "inspected",
        "OK",
        "NG",
        "late",
        "fault",
        "pulses",
        "merged",
        "onset med",
        "onset p99",
        "onset max"
    );
    let loads: Vec<usize> = if b.load > 0 { vec![0, b.load] } else { vec![0] };
    // With [http] or [mqtt] in the config, the line feeds them as `run` does (one telemetry
    // thread for the whole bench): their effect on the reject timing is what this measures.
    let mut telemetry = None;
    for &rate in &b.rates {
        for &load in &loads {
            let engine = line.engine()?;
            let decision = line.decision(engine.info())?;
            let threshold = decision.threshold;
            if telemetry.is_none() {
                telemetry = line.telemetry(engine.info(), &decision, "bench --line replay")?;
                if let Some((_, service)) = &telemetry {
                    println!(
                        "telemetry on: page {}, MQTT {}",
                        service
                            .local_addr()
                            .map_or("off".to_owned(), |a| format!("http://{a}/")),
                        cfg.mqtt.as_ref().map_or("off", |m| m.broker.as_str())
                    );
                }
            }
            let source = line.source(Pacing::LoopAt(rate))?;
            let mut inspector = line.inspector(source, engine, threshold, None, clock.clone());
            let reject = SimulatedLine::new(clock.clone(), 1 << 16);
            let io = LineIo {
                outputs: Outputs {
                    reject: SafeOutput {
                        pin: Box::new(reject),
                        safe: Level::Inactive,
                    },
                    alarm: None,
                    ready: None,
                    heartbeat: None,
                },
                trigger: None,
                encoder: None,
            };
            let mut opts = line.run_options(None, None);
            opts.actuator.schedule = schedule;
            opts.print_decisions = false;
            opts.status_interval = None;
            opts.telemetry = telemetry.as_ref().map(|(t, _)| t.clone());
            // max_frames counts inspected frames; stop on time instead.
            let stop = AtomicBool::new(false);
            let _load = CpuLoad::start(load);
            let (s, lat) = std::thread::scope(|scope| {
                let stop = &stop;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_secs_f64(b.seconds));
                    stop.store(true, std::sync::atomic::Ordering::Release);
                });
                run(&mut inspector, io, opts, stop, None)
            })?;
            let ms = |us: u32| us as f64 / 1000.0;
            println!(
                "{:>6.0} {:>5} {:>6} {:>9} {:>5} {:>5} {:>6} {:>6} {:>7} {:>7} {:>8.3} ms {:>8.3} ms {:>8.3} ms",
                rate,
                load,
                s.counts.parts,
                s.frames,
                s.counts.ok,
                s.counts.ng,
                s.counts.late,
                s.counts.faults,
                s.counts.pulses,
                s.counts.merged,
                ms(lat.onset.median_us),
                ms(lat.onset.p99_us),
                ms(lat.onset.max_us)
            );
        }
    }
    if let Some((_, service)) = telemetry {
        service.stop();
    }
    println!(
        "onset = reject output set active minus the part's due time (capture + delay), per pulse start; \
         parts the model could not keep up with are fail-safe (fault/late) and still fire at their deadline"
    );
    Ok(())
}
