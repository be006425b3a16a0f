//! Reject (and other) outputs behind a small trait, in the spirit of embedded-hal's `OutputPin`,
//! with logical levels so active-low wiring needs no special code above this module.
//!
//! Implementations: [`SimulatedLine`] (records timestamped edges; default run and tests),
//! [`CdevLine`] (Linux GPIO character device via `gpiocdev`; Jetson and any Linux board) and, with the
//! `rpi` feature, [`RpiLine`] (rppal on a Raspberry Pi).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{LineId, RejectConfig, RejectKind, SafeState};

/// The logical level of an output: `Active` fires the ejector, whatever the wiring polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Active,
    Inactive,
}

impl From<SafeState> for Level {
    fn from(s: SafeState) -> Level {
        match s {
            SafeState::Active => Level::Active,
            SafeState::Inactive => Level::Inactive,
        }
    }
}

/// GPIO faults: each names the chip and line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OutputError {
    #[error("GPIO chip {chip} not found; list the chips with `gpiodetect` and fix reject.chip")]
    ChipMissing { chip: String },
    #[error("GPIO chip {chip}: permission denied; add the user to the `gpio` group (README, Troubleshooting)")]
    PermissionDenied { chip: String },
    #[error("GPIO chip {chip} has no line {line}; list the lines with `gpioinfo {chip}` and fix reject.line")]
    NoSuchLine { chip: String, line: String },
    #[error("GPIO line {line} on {chip} is already in use by another process or driver; free it (`gpioinfo {chip}` shows the consumer)")]
    Busy { chip: String, line: String },
    #[error("GPIO line {line} on {chip}: {reason}")]
    Io {
        chip: String,
        line: String,
        reason: String,
    },
    #[error("reject.kind = \"rpi\" needs a build with the `rpi` feature")]
    RpiFeatureMissing,
}

/// A digital output.
pub trait OutputPin: Send {
    fn set(&mut self, level: Level) -> Result<(), OutputError>;
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
    fn set(&mut self, level: Level) -> Result<(), OutputError> {
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
    chip: String,
    line: String,
    offset: u32,
    req: gpiocdev::Request,
}

fn chip_path(chip: &str) -> std::path::PathBuf {
    if chip.starts_with('/') {
        chip.into()
    } else {
        std::path::Path::new("/dev").join(chip)
    }
}

impl CdevLine {
    /// Requests `line` on `chip` as an output, already at `initial` (logical), with the kernel doing
    /// the active-low inversion.
    pub fn open(
        chip: &str,
        line: &LineId,
        active_low: bool,
        initial: Level,
        consumer: &str,
    ) -> Result<Self, OutputError> {
        let path = chip_path(chip);
        let line_str = line.to_string();
        let io = |reason: String| OutputError::Io {
            chip: chip.to_owned(),
            line: line_str.clone(),
            reason,
        };
        if !path.exists() {
            return Err(OutputError::ChipMissing {
                chip: chip.to_owned(),
            });
        }
        let c = gpiocdev::chip::Chip::from_path(&path).map_err(|e| match e {
            gpiocdev::Error::Os(errno) if errno.0 == libc::EACCES || errno.0 == libc::EPERM => {
                OutputError::PermissionDenied {
                    chip: chip.to_owned(),
                }
            }
            other => io(other.to_string()),
        })?;
        let chip_info = c.info().map_err(|e| io(e.to_string()))?;
        let offset = match line {
            LineId::Offset(o) => {
                if *o >= chip_info.num_lines {
                    return Err(OutputError::NoSuchLine {
                        chip: chip.to_owned(),
                        line: line_str,
                    });
                }
                *o
            }
            LineId::Name(name) => c.find_line_info(name).map(|li| li.offset).ok_or_else(|| {
                OutputError::NoSuchLine {
                    chip: chip.to_owned(),
                    line: line_str.clone(),
                }
            })?,
        };
        let value = match initial {
            Level::Active => gpiocdev::line::Value::Active,
            Level::Inactive => gpiocdev::line::Value::Inactive,
        };
        let mut builder = gpiocdev::Request::builder();
        builder
            .on_chip(&path)
            .with_consumer(consumer)
            .with_line(offset);
        if active_low {
            builder.as_active_low();
        }
        let req = builder.as_output(value).request().map_err(|e| match e {
            gpiocdev::Error::Os(errno) if errno.0 == libc::EBUSY => OutputError::Busy {
                chip: chip.to_owned(),
                line: line_str.clone(),
            },
            other => io(other.to_string()),
        })?;
        Ok(CdevLine {
            chip: chip.to_owned(),
            line: line_str,
            offset,
            req,
        })
    }
}

impl OutputPin for CdevLine {
    fn set(&mut self, level: Level) -> Result<(), OutputError> {
        let v = match level {
            Level::Active => gpiocdev::line::Value::Active,
            Level::Inactive => gpiocdev::line::Value::Inactive,
        };
        self.req
            .set_value(self.offset, v)
            .map(|_| ())
            .map_err(|e| OutputError::Io {
                chip: self.chip.clone(),
                line: self.line.clone(),
                reason: e.to_string(),
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
    pub fn open(bcm: u8, active_low: bool, initial: Level) -> Result<Self, OutputError> {
        let chip = "rppal".to_string();
        let line = bcm.to_string();
        let gpio = rppal::gpio::Gpio::new().map_err(|e| OutputError::Io {
            chip: chip.clone(),
            line: line.clone(),
            reason: e.to_string(),
        })?;
        let pin = gpio.get(bcm).map_err(|e| match e {
            rppal::gpio::Error::PinUsed(_) => OutputError::Busy {
                chip: chip.clone(),
                line: line.clone(),
            },
            rppal::gpio::Error::PinNotAvailable(_) => OutputError::NoSuchLine {
                chip: chip.clone(),
                line: line.clone(),
            },
            other => OutputError::Io {
                chip: chip.clone(),
                line: line.clone(),
                reason: other.to_string(),
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
    fn set(&mut self, level: Level) -> Result<(), OutputError> {
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

/// Opens the configured reject output, already in its safe state.
pub fn open_reject(
    cfg: &RejectConfig,
    clock: Arc<dyn Clock>,
) -> Result<Box<dyn OutputPin>, OutputError> {
    let safe = Level::from(cfg.safe_state);
    match cfg.kind {
        RejectKind::Simulated => {
            let mut line = SimulatedLine::new(clock, 1 << 16);
            line.set(safe)?;
            Ok(Box::new(line))
        }
        RejectKind::Gpiocdev => {
            let (Some(chip), Some(line)) = (&cfg.chip, &cfg.line) else {
                return Err(OutputError::Io {
                    chip: cfg.chip.clone().unwrap_or_default(),
                    line: String::new(),
                    reason: "reject.chip and reject.line are required".into(),
                });
            };
            Ok(Box::new(CdevLine::open(
                chip,
                line,
                cfg.active_low,
                safe,
                "partguard-reject",
            )?))
        }
        #[cfg(feature = "rpi")]
        RejectKind::Rpi => match &cfg.line {
            Some(LineId::Offset(o)) if *o < 64 => {
                Ok(Box::new(RpiLine::open(*o as u8, cfg.active_low, safe)?))
            }
            other => Err(OutputError::NoSuchLine {
                chip: "rppal".into(),
                line: other.as_ref().map(|l| l.to_string()).unwrap_or_default(),
            }),
        },
        #[cfg(not(feature = "rpi"))]
        RejectKind::Rpi => Err(OutputError::RpiFeatureMissing),
    }
}
