//! GPIO and the other digital lines of the station: one module per direction ([`output`]: the
//! reject, alarm and ready outputs; [`input`]: the photo-eye trigger and the encoder), the line
//! lookup they share, and one error type. It takes its own line spec ([`LineId`], [`OutputKind`],
//! [`SafeState`]); the config schema uses these types, not the other way round.

pub mod input;
pub mod output;

pub use input::{
    watch_trigger, CdevInput, Debouncer, EdgeInput, Edges, EncoderPosition, InputEdge,
    SimulatedInput, SocketTrigger, TriggerEvent,
};
#[cfg(feature = "rpi")]
pub use output::RpiLine;
pub use output::{open_output, CdevLine, Edge, OutputPin, OutputSpec, SimulatedLine};

/// What drives an output (`kind` in `[reject]`, `[alarm]`, `[ready]`).
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A simulated line that records timestamped edges (tests, demos).
    Simulated,
    /// The Linux GPIO character device (Jetson, Raspberry Pi, any Linux board).
    Gpiocdev,
    /// rppal on a Raspberry Pi (cargo feature `rpi`).
    Rpi,
}

/// The level an output rests at when idle, at start, on exit and on a fault.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SafeState {
    Inactive,
    Active,
}

/// A GPIO line by offset or by name.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum LineId {
    Offset(u32),
    Name(String),
}

impl std::fmt::Display for LineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineId::Offset(o) => write!(f, "{o}"),
            LineId::Name(n) => write!(f, "\"{n}\""),
        }
    }
}

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

/// GPIO faults: each names the config section (`role`: reject, alarm, ready, trigger, encoder), the
/// chip and the line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error(
        "{role}: GPIO chip {chip} not found; list the chips with `gpiodetect` and fix {role}.chip"
    )]
    ChipMissing { role: &'static str, chip: String },
    #[error("{role}: GPIO chip {chip}: permission denied; add the user to the `gpio` group (README, Troubleshooting)")]
    PermissionDenied { role: &'static str, chip: String },
    #[error("{role}: GPIO chip {chip} has no line {line}; list the lines with `gpioinfo {chip}` and fix {role}.line")]
    NoSuchLine {
        role: &'static str,
        chip: String,
        line: String,
    },
    #[error("{role}: GPIO line {line} on {chip} is already in use by {holder}; free it (`gpioinfo {chip}` shows the consumer; a second partguard on the same line is the usual cause)")]
    Busy {
        role: &'static str,
        chip: String,
        line: String,
        /// The kernel's consumer label of the holder, e.g. `"partguard-reject"`.
        holder: String,
    },
    #[error("{role}: GPIO line {line} on {chip}: {source}")]
    Io {
        role: &'static str,
        chip: String,
        line: String,
        /// The driver's error (gpiocdev, rppal), kept whole.
        #[source]
        source: Cause,
    },
    #[error("{role}: socket {path}: {source}; check that its folder exists and is writable by partguard's user, and that no other partguard uses it")]
    Socket {
        role: &'static str,
        path: std::path::PathBuf,
        /// The OS's error, or what was found at the path.
        #[source]
        source: Cause,
    },
    #[error("{role}: kind = \"rpi\" needs a build with the `rpi` feature")]
    RpiFeatureMissing { role: &'static str },
}

/// The cause inside [`GpioError::Io`] and [`GpioError::Socket`]: the driver's or the OS's error.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

fn chip_path(chip: &str) -> std::path::PathBuf {
    if chip.starts_with('/') {
        chip.into()
    } else {
        std::path::Path::new("/dev").join(chip)
    }
}

/// Finds `line` on `chip`: the chip's device path and the line's offset.
pub(super) fn resolve_line(
    role: &'static str,
    chip: &str,
    line: &LineId,
) -> Result<(std::path::PathBuf, u32), GpioError> {
    let path = chip_path(chip);
    let io = |source: gpiocdev::Error| GpioError::Io {
        role,
        chip: chip.to_owned(),
        line: line.to_string(),
        source: source.into(),
    };
    if !path.exists() {
        return Err(GpioError::ChipMissing {
            role,
            chip: chip.to_owned(),
        });
    }
    let c = gpiocdev::chip::Chip::from_path(&path).map_err(|e| match e {
        e if matches!(errno_of(&e), Some(libc::EACCES | libc::EPERM)) => {
            GpioError::PermissionDenied {
                role,
                chip: chip.to_owned(),
            }
        }
        other => io(other),
    })?;
    let chip_info = c.info().map_err(io)?;
    let no_line = || GpioError::NoSuchLine {
        role,
        chip: chip.to_owned(),
        line: line.to_string(),
    };
    let offset = match line {
        LineId::Offset(o) if *o < chip_info.num_lines => *o,
        LineId::Offset(_) => return Err(no_line()),
        LineId::Name(name) => c
            .find_line_info(name)
            .map(|li| li.offset)
            .ok_or_else(no_line)?,
    };
    Ok((path, offset))
}

/// Who holds a line, as the kernel names its consumer.
fn line_holder(chip: &str, line: &LineId) -> String {
    let info = resolve_line("holder", chip, line)
        .ok()
        .and_then(|(path, offset)| {
            gpiocdev::chip::Chip::from_path(&path)
                .ok()?
                .line_info(offset)
                .ok()
        });
    match info {
        Some(i) if !i.consumer.is_empty() => format!("\"{}\"", i.consumer),
        _ => "another process or driver".to_owned(),
    }
}

/// The kernel's errno in a gpiocdev error: a plain OS error, or one from a uAPI call (a line
/// request's `get_line` ioctl reports EBUSY this way).
fn errno_of(e: &gpiocdev::Error) -> Option<i32> {
    match e {
        gpiocdev::Error::Os(errno) => Some(errno.0),
        gpiocdev::Error::Uapi(_, gpiocdev_uapi::Error::Os(errno)) => Some(errno.0),
        _ => None,
    }
}

/// Maps a failed line request: EBUSY is a line held by someone else.
pub(super) fn request_error(
    role: &'static str,
    chip: &str,
    line: &LineId,
    e: gpiocdev::Error,
) -> GpioError {
    match e {
        e if errno_of(&e) == Some(libc::EBUSY) => GpioError::Busy {
            role,
            chip: chip.to_owned(),
            line: line.to_string(),
            holder: line_holder(chip, line),
        },
        other => GpioError::Io {
            role,
            chip: chip.to_owned(),
            line: line.to_string(),
            source: other.into(),
        },
    }
}
