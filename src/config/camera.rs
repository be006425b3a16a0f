//! `[camera]`: the V4L2 controls locked for a part (exposure, gain, white balance, focus, ...).

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::capture::controls::ControlValue;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Controls by `v4l2-ctl` name or id, in the file's order (auto modes are set first anyway),
    /// e.g. `auto_exposure = "manual"`, `exposure_time_absolute = 120`,
    /// `white_balance_automatic = false`. Set, read back and logged at every camera open.
    #[serde(default, deserialize_with = "in_file_order")]
    pub controls: Vec<(String, ControlValue)>,
}

/// A TOML table as its keys and values in the order the file gives them.
fn in_file_order<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, ControlValue)>, D::Error> {
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(String, ControlValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of control = value (a number, true/false, or a menu entry's name)")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, ControlValue>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered)
}
