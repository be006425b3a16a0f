//! The one way the integration tests write a station config for the binary: the shipped f32 model
//! and the built-in threshold, a simulated reject output, and only what a test changes on top.

use std::path::{Path, PathBuf};

/// A station config, written as TOML by [`TestConfig::write`].
pub struct TestConfig {
    source: String,
    model: PathBuf,
    decision: String,
    reject: String,
    sections: String,
}

impl TestConfig {
    /// `[source]` with `body` (its lines, e.g. from [`replay`]), the f32 model, the built-in
    /// threshold, a simulated reject output with 20 ms pulses, and no status line.
    pub fn new(source: &str) -> Self {
        TestConfig {
            source: source.to_owned(),
            model: super::f32_model(),
            decision: format!("threshold = {}", super::threshold()),
            reject: "kind = \"simulated\"\npulse_ms = 20".to_owned(),
            sections: "[log]\nstatus_interval_s = 0\n".to_owned(),
        }
    }

    /// [`TestConfig::new`] replaying `folder` with `extra` lines in `[source]` (e.g. `rate_hz`).
    pub fn replay(folder: &Path, extra: &str) -> Self {
        Self::new(&replay(folder, extra))
    }

    /// Another model file.
    pub fn model(mut self, path: &Path) -> Self {
        self.model = path.to_owned();
        self
    }

    /// Replaces `[decision]`'s lines (e.g. `calibration = "line.cal.toml"`).
    pub fn decision(mut self, body: &str) -> Self {
        self.decision = body.to_owned();
        self
    }

    /// Replaces `[reject]`'s lines.
    pub fn reject(mut self, body: &str) -> Self {
        self.reject = body.to_owned();
        self
    }

    /// Replaces the sections after `[reject]` (`[log]`, `[timing]`, `[roi]`, `[archive]`...), given
    /// as TOML with their headers.
    pub fn sections(mut self, toml: &str) -> Self {
        self.sections = toml.to_owned();
        self
    }

    pub fn text(&self) -> String {
        format!(
            "[source]\n{}\n\n[model]\npath = {:?}\n\n[decision]\n{}\n\n[reject]\n{}\n\n{}\n",
            self.source, self.model, self.decision, self.reject, self.sections
        )
    }

    /// Writes the config to `path` and returns it.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap();
        path.to_owned()
    }
}

/// `[source]` lines replaying `folder`, with `extra` lines.
pub fn replay(folder: &Path, extra: &str) -> String {
    format!("kind = \"replay\"\npath = {:?}\n{extra}", folder)
}
