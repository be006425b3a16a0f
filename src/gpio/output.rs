//! Outputs behind a small trait, in the spirit of embedded-hal's `OutputPin`, with logical levels
//! so active-low wiring needs no special code above this module.
//!
//! Implementations: [`SimulatedLine`] (records timestamped edges; default run and tests),
//! [`CdevLine`] (Linux GPIO character device via `gpiocdev`; Jetson and any Linux board) and, with the
//! `rpi` feature, `RpiLine` (rppal on a Raspberry Pi).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{request_error, resolve_line, GpioError, Level, LineId, OutputKind, SafeState};
use crate::clock::Clock;

/// A digital output.
pub trait OutputPin: Send {
    fn set(&mut self, level: Level) -> Result<(), GpioError>;
    /// One line for logs and `check`.
    fn describe(&self) -> String;
}

/// One recorded level change of a [`SimulatedLine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub at: Duration,
    pub level: Level,
}

/// A simulated output: records every level change with the clock's time.
///
/// Clones share the record, so a test keeps one clone and hands the other to the pipeline.
#[derive(Clone)]
pub struct SimulatedLine {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<SimState>>,
}

struct SimState {
    level: Option<Level>,
    edges: Vec<Edge>,
    /// Edges beyond the preallocated record are counted, not stored (no allocation while running).
    dropped: u64,
}

impl SimulatedLine {
    /// `capacity` edges are kept; later ones are counted as dropped.
    pub fn new(clock: Arc<dyn Clock>, capacity: usize) -> Self {
        SimulatedLine {
            clock,
            state: Arc::new(Mutex::new(SimState {
                level: None,
                edges: Vec::with_capacity(capacity),
                dropped: 0,
            })),
        }
    }

    pub fn edges(&self) -> Vec<Edge> {
        self.state
            .lock()
            .map(|s| s.edges.clone())
            .unwrap_or_default()
    }

    pub fn level(&self) -> Option<Level> {
        self.state.lock().ok().and_then(|s| s.level)
    }

    /// Edges beyond `capacity` (not kept).
    pub fn dropped(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.dropped)
    }

    /// Pulses as (start, width): each Active edge paired with the next Inactive one.
    pub fn pulses(&self) -> Vec<(Duration, Duration)> {
        let edges = self.edges();
        let mut out = Vec::new();
        let mut start = None;
        for e in edges {
            match (e.level, start) {
                (Level::Active, None) => start = Some(e.at),
                (Level::Inactive, Some(s)) => {
                    out.push((s, e.at - s));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }
}

impl OutputPin for SimulatedLine {
    fn set(&mut self, level: Level) -> Result<(), GpioError> {
        let at = self.clock.now();
        if let Ok(mut s) = self.state.lock() {
            if s.level != Some(level) {
                s.level = Some(level);
                if s.edges.len() < s.edges.capacity() {
                    s.edges.push(Edge { at, level });
                } else {
                    s.dropped += 1;
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "simulated line".into()
    }
}

/// A line of a GPIO chip through the Linux GPIO character device (v2 uAPI).
pub struct CdevLine {
    role: &'static str,
    chip: String,
    line: String,
    offset: u32,
    req: gpiocdev::Request,
}

impl CdevLine {
    /// Requests `line` on `chip` as an output, already at `initial` (logical), with the kernel doing
    /// the active-low inversion. `role` is the config section, for messages.
    pub fn open(
        role: &'static str,
        chip: &str,
        line: &LineId,
        active_low: bool,
        initial: Level,
    ) -> Result<Self, GpioError> {
        let (path, offset) = resolve_line(role, chip, line)?;
        let value = match initial {
            Level::Active => gpiocdev::line::Value::Active,
            Level::Inactive => gpiocdev::line::Value::Inactive,
        };
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_consumer(format!("partguard-{role}"))
            .with_line(offset);
        if active_low {
            builder.as_active_low();
        }
        let req = builder
            .as_output(value)
            .request()
            .map_err(|e| request_error(role, chip, line, e))?;
        Ok(CdevLine {
            role,
            chip: chip.to_owned(),
            line: line.to_string(),
            offset,
            req,
        })
    }
}

impl OutputPin for CdevLine {
    fn set(&mut self, level: Level) -> Result<(), GpioError> {
        let v = match level {
            Level::Active => gpiocdev::line::Value::Active,
            Level::Inactive => gpiocdev::line::Value::Inactive,
        };
        self.req
            .set_value(self.offset, v)
            .map(|_| ())
            .map_err(|e| GpioError::Io {
                role: self.role,
                chip: self.chip.clone(),
                line: self.line.clone(),
                source: e.into(),
            })
    }

    fn describe(&self) -> String {
        format!(
            "gpiocdev {} line {} (offset {})",
            self.chip, self.line, self.offset
        )
    }
}

/// A Raspberry Pi GPIO (BCM numbering) through rppal.
#[cfg(feature = "rpi")]
pub struct RpiLine {
    bcm: u8,
    pin: rppal::gpio::OutputPin,
    active_low: bool,
}

#[cfg(feature = "rpi")]
impl RpiLine {
    pub fn open(
        role: &'static str,
        bcm: u8,
        active_low: bool,
        initial: Level,
    ) -> Result<Self, GpioError> {
        let chip = "rppal".to_string();
        let line = bcm.to_string();
        let gpio = rppal::gpio::Gpio::new().map_err(|e| GpioError::Io {
            role,
            chip: chip.clone(),
            line: line.clone(),
            source: e.into(),
        })?;
        let pin = gpio.get(bcm).map_err(|e| match e {
            rppal::gpio::Error::PinUsed(_) => GpioError::Busy {
                role,
                chip: chip.clone(),
                line: line.clone(),
                holder: "another process".to_owned(),
            },
            rppal::gpio::Error::PinNotAvailable(_) => GpioError::NoSuchLine {
                role,
                chip: chip.clone(),
                line: line.clone(),
            },
            other => GpioError::Io {
                role,
                chip: chip.clone(),
                line: line.clone(),
                source: other.into(),
            },
        })?;
        let high = (initial == Level::Active) != active_low;
        let mut pin = if high {
            pin.into_output_high()
        } else {
            pin.into_output_low()
        };
        pin.set_reset_on_drop(false);
        Ok(RpiLine {
            bcm,
            pin,
            active_low,
        })
    }
}

#[cfg(feature = "rpi")]
impl OutputPin for RpiLine {
    fn set(&mut self, level: Level) -> Result<(), GpioError> {
        let high = (level == Level::Active) != self.active_low;
        if high {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "rppal BCM GPIO {}{}",
            self.bcm,
            if self.active_low { " (active low)" } else { "" }
        )
    }
}

/// Where an output is: the fields shared by `[reject]`, `[alarm]` and `[ready]`.
#[derive(Debug, Clone, Copy)]
pub struct OutputSpec<'a> {
    /// The config section, for messages.
    pub role: &'static str,
    pub kind: OutputKind,
    pub chip: Option<&'a str>,
    pub line: Option<&'a LineId>,
    pub active_low: bool,
    pub safe_state: SafeState,
}

/// Opens an output, already in its safe state. A simulated output records up to 65536 edges.
pub fn open_output(
    spec: OutputSpec<'_>,
    clock: Arc<dyn Clock>,
) -> Result<Box<dyn OutputPin>, GpioError> {
    let safe = Level::from(spec.safe_state);
    let role = spec.role;
    match spec.kind {
        OutputKind::Simulated => {
            let mut line = SimulatedLine::new(clock, 1 << 16);
            line.set(safe)?;
            Ok(Box::new(line))
        }
        OutputKind::Gpiocdev => {
            let (Some(chip), Some(line)) = (spec.chip, spec.line) else {
                return Err(GpioError::Io {
                    role,
                    chip: spec.chip.unwrap_or_default().to_owned(),
                    line: String::new(),
                    source: format!("{role}.chip and {role}.line are required").into(),
                });
            };
            Ok(Box::new(CdevLine::open(
                role,
                chip,
                line,
                spec.active_low,
                safe,
            )?))
        }
        #[cfg(feature = "rpi")]
        OutputKind::Rpi => match spec.line {
            Some(LineId::Offset(o)) if *o < 64 => Ok(Box::new(RpiLine::open(
                role,
                *o as u8,
                spec.active_low,
                safe,
            )?)),
            other => Err(GpioError::NoSuchLine {
                role,
                chip: "rppal".into(),
                line: other.map(|l| l.to_string()).unwrap_or_default(),
            }),
        },
        #[cfg(not(feature = "rpi"))]
        OutputKind::Rpi => Err(GpioError::RpiFeatureMissing { role }),
    }
}
