#![no_main]
//! cargo fuzz target `config`: see tests/fuzz/harness.rs.
use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::config(data));
