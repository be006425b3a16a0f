//! What the subcommands do, one module each; `main.rs` only parses arguments and calls these.
//! Every subcommand builds its stages through [`crate::line::Line`]; [`report`] prints what they
//! measured.

pub mod bench;
pub mod bench_line;
pub mod calibrate;
pub mod check;
pub mod collect;
pub mod eval;
pub mod report;
pub mod run;
pub mod safe_state;
