//! `partguard safe-state`: every configured output driven to its safe level, then released.

use crate::config::Config;
use crate::line::Line;
use crate::Error;

/// Every configured output opened (which already drives it to its safe level) and set to its safe
/// level once more, then released. Fails, naming the line, when a line is held by a running
/// partguard: that process keeps its outputs safe itself.
pub fn safe_state(cfg: &Config) -> Result<(), Error> {
    let line = Line::new(cfg);
    let outputs = line.outputs(line.clock())?;
    let named = [
        ("reject", Some(outputs.reject)),
        ("alarm", outputs.alarm),
        ("ready", outputs.ready),
    ];
    for (role, output) in named {
        if let Some(mut o) = output {
            o.pin.set(o.safe)?;
            println!("{role}: {} -> {:?} (safe state)", o.pin.describe(), o.safe);
        }
    }
    Ok(())
}
