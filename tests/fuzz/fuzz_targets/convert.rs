#![no_main]
//! cargo fuzz target `convert`: see tests/fuzz/harness.rs.
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::convert(data));
