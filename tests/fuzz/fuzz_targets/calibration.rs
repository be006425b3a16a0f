#![no_main]
//! cargo fuzz target `calibration`: see tests/fuzz/harness.rs.
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

fuzz_target!(|data: &[u8]| harness::calibration(data));
