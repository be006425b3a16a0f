#![no_main]
//! cargo fuzz target `convert`: see tests/fuzz/harness.rs.
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(
    init: {
        // zune-jpeg 0.4 panics on some corrupt streams; partguard's MJPEG conversion catches
        // those and reports a bad frame (src/capture/convert.rs), so they are not crashes. Any
        // other panic still aborts: that is a crash to fix.
        std::panic::set_hook(Box::new(|info| {
            if info.location().is_some_and(|l| l.file().contains("zune-jpeg")) {
                return;
            }
            eprintln!("{info}");
            std::process::abort();
        }));
    },
    |data: &[u8]| harness::convert(data)
);
