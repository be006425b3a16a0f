//! V4L2 camera controls (exposure, gain, white balance, focus, ...): listed, set in a safe order,
//! read back. An anomaly model learns the brightness and colour of its training images, so the
//! settings a model was trained under are locked in `[camera.controls]` and checked at every open.
//!
//! Controls are named as `v4l2-ctl` names them: the driver's name in lower case with every run of
//! other characters turned into `_` ("Exposure Time, Absolute" is `exposure_time_absolute`), or
//! by id (`0x00980900`). Menu entries are given by name (`auto_exposure = "manual"` matches
//! "Manual Mode") or index.
//!
//! The ioctls are written here rather than through `v4l::Device::query_controls`: v4l 0.14 unwraps
//! on control types it does not know and on non-UTF-8 names, i.e. a camera's answer could panic
//! the process. Only single-value controls (integer, boolean, menu, integer menu, 64-bit integer)
//! can be set; the others are listed and skipped.

use std::collections::BTreeMap;
use std::path::Path;

use super::CaptureError;

mod ioctl;
use ioctl::{control_io, write};
pub use ioctl::{list, list_device, read};

/// A value for a control in the config: a switch, a number, or a menu entry's name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum ControlValue {
    Bool(bool),
    Int(i64),
    Name(String),
}

impl<'de> serde::Deserialize<'de> for ControlValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ControlValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a camera control value: a whole number, true/false, or a menu entry's name",
                )
            }
            fn visit_bool<E>(self, v: bool) -> Result<ControlValue, E> {
                Ok(ControlValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ControlValue, E> {
                Ok(ControlValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ControlValue, E> {
                i64::try_from(v)
                    .map(ControlValue::Int)
                    .map_err(|_| E::custom("control value too large"))
            }
            fn visit_str<E>(self, v: &str) -> Result<ControlValue, E> {
                Ok(ControlValue::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for ControlValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlValue::Bool(b) => write!(f, "{b}"),
            ControlValue::Int(i) => write!(f, "{i}"),
            ControlValue::Name(s) => write!(f, "\"{s}\""),
        }
    }
}

/// What a control holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlKind {
    Integer,
    Integer64,
    Boolean,
    /// Menu entries: index and name.
    Menu(Vec<(i64, String)>),
    /// Menu entries: index and the number it stands for.
    IntegerMenu(Vec<(i64, i64)>),
    /// A button, string, array or other compound control: listed, never set.
    Other(u32),
}

/// One control the camera offers.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraControl {
    pub id: u32,
    /// The driver's name ("Exposure Time, Absolute").
    pub name: String,
    /// The config key (`exposure_time_absolute`).
    pub key: String,
    pub kind: ControlKind,
    pub minimum: i64,
    pub maximum: i64,
    pub step: u64,
    pub default: i64,
    pub flags: u32,
}

const FLAG_DISABLED: u32 = 0x0001;
const FLAG_READ_ONLY: u32 = 0x0004;
const FLAG_INACTIVE: u32 = 0x0010;
const FLAG_WRITE_ONLY: u32 = 0x0040;

/// The config key for a driver's control name, as `v4l2-ctl` spells it.
pub fn control_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    while key.ends_with('_') {
        key.pop();
    }
    key
}

/// Letters and digits only, lower case: "Manual Mode" and "manual" compare as "manualmode" and
/// "manual"; "50 Hz" and "50Hz" as "50hz".
fn squash(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl CameraControl {
    /// Whether partguard can set it (a single value, not read-only or disabled).
    pub fn settable(&self) -> bool {
        !matches!(self.kind, ControlKind::Other(_)) && !self.read_only()
    }

    /// Whether the driver marks it read-only or disabled.
    pub fn read_only(&self) -> bool {
        self.flags & (FLAG_READ_ONLY | FLAG_DISABLED) != 0
    }

    /// The allowed values, for `check` and error messages.
    pub fn range(&self) -> String {
        match &self.kind {
            ControlKind::Boolean => "true or false".into(),
            ControlKind::Menu(items) => items
                .iter()
                .map(|(i, n)| format!("\"{n}\" ({i})"))
                .collect::<Vec<_>>()
                .join(", "),
            ControlKind::IntegerMenu(items) => items
                .iter()
                .map(|(i, v)| format!("{v} ({i})"))
                .collect::<Vec<_>>()
                .join(", "),
            ControlKind::Other(t) => format!("type {t}, not settable by partguard"),
            _ if self.step > 1 => format!(
                "{} to {} in steps of {}",
                self.minimum, self.maximum, self.step
            ),
            _ => format!("{} to {}", self.minimum, self.maximum),
        }
    }

    /// A raw value as the config would write it (`true`, `120`, `"Manual Mode"`).
    pub fn show(&self, raw: i64) -> String {
        match &self.kind {
            ControlKind::Boolean => (raw != 0).to_string(),
            ControlKind::Menu(items) => items
                .iter()
                .find(|(i, _)| *i == raw)
                .map_or_else(|| raw.to_string(), |(_, n)| format!("\"{n}\"")),
            ControlKind::IntegerMenu(items) => items
                .iter()
                .find(|(i, _)| *i == raw)
                .map_or_else(|| raw.to_string(), |(_, v)| v.to_string()),
            _ => raw.to_string(),
        }
    }

    /// The raw value for a config value, or why it does not fit this control.
    pub fn resolve(&self, value: &ControlValue) -> Result<i64, String> {
        let raw = match (&self.kind, value) {
            (ControlKind::Boolean, ControlValue::Bool(b)) => i64::from(*b),
            (ControlKind::Boolean, ControlValue::Int(i @ (0 | 1))) => *i,
            (ControlKind::Menu(items), ControlValue::Name(name)) => {
                let want = squash(name);
                let exact: Vec<_> = items.iter().filter(|(_, n)| squash(n) == want).collect();
                let prefix: Vec<_> = items
                    .iter()
                    .filter(|(_, n)| !want.is_empty() && squash(n).starts_with(&want))
                    .collect();
                match (exact.as_slice(), prefix.as_slice()) {
                    ([(i, _)], _) | ([], [(i, _)]) => *i,
                    _ => return Err("is not one of its entries (or matches several)".into()),
                }
            }
            (ControlKind::Menu(items), ControlValue::Int(i)) => {
                if !items.iter().any(|(j, _)| j == i) {
                    return Err("is not one of its entries".into());
                }
                *i
            }
            (ControlKind::IntegerMenu(items), ControlValue::Int(v)) => {
                match items.iter().find(|(_, x)| x == v) {
                    Some((i, _)) => *i,
                    None => return Err("is not one of its entries".into()),
                }
            }
            (ControlKind::Integer | ControlKind::Integer64, ControlValue::Int(i)) => {
                let step = i64::try_from(self.step.max(1)).unwrap_or(1);
                if *i < self.minimum || *i > self.maximum {
                    return Err("is out of range".into());
                }
                if (*i - self.minimum) % step != 0 {
                    return Err("is not on its step".into());
                }
                *i
            }
            (ControlKind::Other(_), _) => {
                return Err("cannot be set by partguard (not a single value)".into())
            }
            (_, _) => return Err("is not a value of this kind of control".into()),
        };
        Ok(raw)
    }

    /// Auto modes are switched (off) before the values they govern: exposure time is ignored
    /// while auto exposure is on.
    fn is_auto_mode(&self) -> bool {
        self.key.contains("auto")
    }
}

/// A control as set and read back: what the calibration file and the collect manifest record.
pub type ControlsInForce = BTreeMap<String, String>;
/// Finds the control a config key names: its `v4l2-ctl` name or its id (`0x00980900` or decimal).
pub fn find<'a>(controls: &'a [CameraControl], key: &str) -> Option<&'a CameraControl> {
    let id = key
        .strip_prefix("0x")
        .map(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| key.parse::<u32>().ok());
    controls
        .iter()
        .find(|c| Some(c.id) == id || c.key == control_key(key))
}

/// Resolves every setting against `controls` and orders them: auto modes first, then the rest,
/// each group in config order. Errors name the control and what it accepts.
pub fn plan<'a>(
    device: &Path,
    controls: &'a [CameraControl],
    settings: &[(String, ControlValue)],
) -> Result<Vec<(&'a CameraControl, i64)>, CaptureError> {
    let mut planned = Vec::with_capacity(settings.len());
    for (key, value) in settings {
        let Some(c) = find(controls, key) else {
            let mut offered: Vec<&str> = controls
                .iter()
                .filter(|c| c.settable())
                .map(|c| c.key.as_str())
                .collect();
            offered.sort_unstable();
            return Err(CaptureError::UnknownControl {
                device: device.to_owned(),
                control: key.clone(),
                offered: offered.join(", "),
            });
        };
        if !c.settable() {
            return Err(CaptureError::BadControlValue {
                device: device.to_owned(),
                control: key.clone(),
                problem: format!(
                    "= {value} is refused: the control is read-only or disabled on this camera"
                ),
                range: c.range(),
            });
        }
        let raw = c
            .resolve(value)
            .map_err(|problem| CaptureError::BadControlValue {
                device: device.to_owned(),
                control: key.clone(),
                problem: format!("= {value} {problem}"),
                range: c.range(),
            })?;
        planned.push((c, raw));
    }
    // Stable: config order within each group.
    planned.sort_by_key(|(c, _)| !c.is_auto_mode());
    Ok(planned)
}

/// Sets `settings` on the camera open at `fd`, reads every one back, and returns what is in force.
pub fn apply(
    fd: i32,
    device: &Path,
    settings: &[(String, ControlValue)],
) -> Result<ControlsInForce, CaptureError> {
    let mut in_force = ControlsInForce::new();
    if settings.is_empty() {
        return Ok(in_force);
    }
    let controls = list(fd, device)?;
    let planned = plan(device, &controls, settings)?;
    for (c, raw) in &planned {
        write(fd, c, *raw).map_err(|e| {
            let hint = if c.flags & FLAG_INACTIVE != 0 {
                " (it is inactive: switch its auto mode off in [camera.controls], e.g. auto_exposure = \"manual\")"
            } else {
                ""
            };
            CaptureError::ControlRefused {
                device: device.to_owned(),
                control: c.key.clone(),
                value: c.show(*raw),
                reason: format!("{e}{hint}"),
            }
        })?;
    }
    for (c, raw) in &planned {
        if c.flags & FLAG_WRITE_ONLY != 0 {
            in_force.insert(c.key.clone(), c.show(*raw));
            continue;
        }
        let got = read(fd, c).map_err(|e| control_io(device, "VIDIOC_G_EXT_CTRLS", e))?;
        if got != *raw {
            return Err(CaptureError::ControlReadBack {
                device: device.to_owned(),
                control: c.key.clone(),
                wanted: c.show(*raw),
                got: c.show(got),
            });
        }
        in_force.insert(c.key.clone(), c.show(got));
    }
    Ok(in_force)
}

/// The controls of `in_force` that differ from `reference` (missing on either side included),
/// as "key: now X, was Y" lines.
pub fn differences(in_force: &ControlsInForce, reference: &ControlsInForce) -> Vec<String> {
    let mut keys: Vec<&String> = in_force.keys().chain(reference.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (now, was) = (in_force.get(k), reference.get(k));
            (now != was).then(|| {
                format!(
                    "{k}: now {}, was {}",
                    now.map_or("not set", String::as_str),
                    was.map_or("not set", String::as_str)
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(key: &str, kind: ControlKind, min: i64, max: i64, step: u64) -> CameraControl {
        CameraControl {
            id: 0x0098_0900 + key.len() as u32,
            name: key.into(),
            key: control_key(key),
            kind,
            minimum: min,
            maximum: max,
            step,
            default: min,
            flags: 0,
        }
    }

    fn camera() -> Vec<CameraControl> {
        vec![
            control("Brightness", ControlKind::Integer, 0, 255, 1),
            control("Exposure Time, Absolute", ControlKind::Integer, 3, 2047, 1),
            control(
                "Auto Exposure",
                ControlKind::Menu(vec![
                    (1, "Manual Mode".into()),
                    (3, "Aperture Priority Mode".into()),
                ]),
                0,
                3,
                1,
            ),
            control(
                "Power Line Frequency",
                ControlKind::Menu(vec![
                    (0, "Disabled".into()),
                    (1, "50 Hz".into()),
                    (2, "60 Hz".into()),
                ]),
                0,
                2,
                1,
            ),
            control("White Balance, Automatic", ControlKind::Boolean, 0, 1, 1),
            control("Focus, Absolute", ControlKind::Integer, 0, 250, 5),
        ]
    }

    #[test]
    fn keys_are_spelt_as_v4l2_ctl_spells_them() {
        assert_eq!(
            control_key("Exposure Time, Absolute"),
            "exposure_time_absolute"
        );
        assert_eq!(
            control_key("White Balance, Automatic"),
            "white_balance_automatic"
        );
        assert_eq!(control_key("  Gain (dB) "), "gain_db");
        assert_eq!(control_key("OSD Text Mode"), "osd_text_mode");
    }

    #[test]
    fn menus_match_by_name_prefix_or_index_and_ranges_are_checked() {
        let cs = camera();
        let c = |k: &str| find(&cs, k).unwrap();
        let name = |s: &str| ControlValue::Name(s.into());
        assert_eq!(c("auto_exposure").resolve(&name("manual")), Ok(1));
        assert_eq!(c("auto_exposure").resolve(&ControlValue::Int(3)), Ok(3));
        assert!(c("auto_exposure").resolve(&ControlValue::Int(2)).is_err());
        assert_eq!(c("power_line_frequency").resolve(&name("50Hz")), Ok(1));
        assert!(c("auto_exposure").resolve(&name("")).is_err());
        assert!(c("auto_exposure").resolve(&name("shutter")).is_err());
        assert_eq!(
            c("white_balance_automatic").resolve(&ControlValue::Bool(false)),
            Ok(0)
        );
        assert!(c("brightness").resolve(&ControlValue::Int(256)).is_err());
        assert!(c("brightness").resolve(&ControlValue::Bool(true)).is_err());
        assert_eq!(c("focus_absolute").resolve(&ControlValue::Int(30)), Ok(30));
        assert!(c("focus_absolute").resolve(&ControlValue::Int(31)).is_err());
        // By id, hexadecimal or decimal.
        let id = c("brightness").id;
        assert_eq!(find(&cs, &format!("0x{id:08x}")).unwrap().key, "brightness");
        assert_eq!(find(&cs, &id.to_string()).unwrap().key, "brightness");
    }

    #[test]
    fn auto_modes_are_set_first_and_errors_name_the_control() {
        let cs = camera();
        let dev = Path::new("/dev/video0");
        let settings = vec![
            ("exposure_time_absolute".to_string(), ControlValue::Int(120)),
            ("brightness".to_string(), ControlValue::Int(100)),
            (
                "auto_exposure".to_string(),
                ControlValue::Name("manual".into()),
            ),
            (
                "white_balance_automatic".to_string(),
                ControlValue::Bool(false),
            ),
        ];
        let order: Vec<&str> = plan(dev, &cs, &settings)
            .unwrap()
            .iter()
            .map(|(c, _)| c.key.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "auto_exposure",
                "white_balance_automatic",
                "exposure_time_absolute",
                "brightness"
            ]
        );
        let missing = vec![("gain".to_string(), ControlValue::Int(8))];
        let e = plan(dev, &cs, &missing).unwrap_err().to_string();
        assert!(e.contains("\"gain\"") && e.contains("brightness"), "{e}");
        let wrong = vec![("brightness".to_string(), ControlValue::Int(300))];
        let e = plan(dev, &cs, &wrong).unwrap_err().to_string();
        assert!(e.contains("brightness") && e.contains("0 to 255"), "{e}");
    }

    #[test]
    fn differences_name_each_control() {
        let a: ControlsInForce = [
            ("gain".into(), "8".into()),
            ("brightness".into(), "40".into()),
        ]
        .into();
        let b: ControlsInForce = [
            ("gain".into(), "8".into()),
            ("focus_absolute".into(), "30".into()),
        ]
        .into();
        assert_eq!(
            differences(&a, &b),
            [
                "brightness: now 40, was not set",
                "focus_absolute: now not set, was 30"
            ]
        );
        assert!(differences(&a, &a).is_empty());
    }
}
