//! A camera that comes back: when the source fails (unplugged, `ENODEV`, a driver error) it is
//! closed and opened again with exponential backoff, while the capture thread counts the outage as
//! a stall and raises the alarm. Parts triggered meanwhile have no frame and take the fail-safe
//! policy (missed frame); nothing passes uninspected.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{CaptureError, Frame, FrameSource};

/// Opens the source again; called on the capture thread.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

pub struct ReopeningSource {
    device: PathBuf,
    open: Opener,
    current: Option<Box<dyn FrameSource>>,
    /// The current source failed: close it on the next call (it may not be dropped while the
    /// failed call's borrow is alive).
    failed: bool,
    first_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    next_try: Instant,
    down_since: Instant,
    reopens: u64,
    description: String,
    /// The controls read back at the last successful open.
    controls: super::controls::ControlsInForce,
}

impl ReopeningSource {
    /// Wraps an open source; `open` makes a new one after a failure. Retries start `first_backoff`
    /// after the failure and double up to `max_backoff`.
    pub fn new(
        device: PathBuf,
        source: Box<dyn FrameSource>,
        open: Opener,
        first_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        let description = source.describe();
        let controls = source.controls_in_force();
        let now = Instant::now();
        ReopeningSource {
            device,
            open,
            current: Some(source),
            failed: false,
            first_backoff,
            max_backoff,
            backoff: first_backoff,
            next_try: now,
            down_since: now,
            reopens: 0,
            description,
            controls,
        }
    }

    /// How many times the source was opened again after a failure.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    fn down(&self) -> CaptureError {
        CaptureError::Reopening {
            device: self.device.clone(),
            down_ms: self.down_since.elapsed().as_millis() as u64,
            retry_in_ms: self
                .next_try
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
        }
    }

    /// One open attempt when due; otherwise waits a little (at most 200 ms, so the capture thread
    /// keeps servicing triggers and the alarm) and reports the outage.
    fn try_open(&mut self) -> Result<(), CaptureError> {
        let now = Instant::now();
        if now < self.next_try {
            std::thread::sleep((self.next_try - now).min(Duration::from_millis(200)));
            return Err(self.down());
        }
        match (self.open)() {
            Ok(s) => {
                log::warn!(
                    "camera {} is back after {} ms: {}",
                    self.device.display(),
                    self.down_since.elapsed().as_millis(),
                    s.describe()
                );
                self.description = s.describe();
                self.controls = s.controls_in_force();
                self.current = Some(s);
                self.reopens += 1;
                self.backoff = self.first_backoff;
                Ok(())
            }
            Err(e) => {
                self.next_try = Instant::now() + self.backoff;
                log::warn!(
                    "camera {}: reopening failed ({e}); next try in {} ms",
                    self.device.display(),
                    self.backoff.as_millis()
                );
                self.backoff = (self.backoff * 2).min(self.max_backoff);
                Err(self.down())
            }
        }
    }
}

impl FrameSource for ReopeningSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.failed {
            self.current = None;
            self.failed = false;
        }
        if self.current.is_none() {
            self.try_open()?;
            if self.current.is_none() {
                return Err(self.down());
            }
        }
        let Some(source) = self.current.as_mut() else {
            unreachable!("opened just above")
        };
        match source.next_frame() {
            // A stall (no frame for a while) keeps the device: frames may resume.
            Err(e @ CaptureError::Stalled { .. }) => Err(e),
            Err(e) => {
                log::error!("{e}; closing the camera and opening it again");
                let now = Instant::now();
                self.failed = true;
                self.down_since = now;
                self.backoff = self.first_backoff;
                self.next_try = now + self.first_backoff;
                Err(CaptureError::Reopening {
                    device: self.device.clone(),
                    down_ms: 0,
                    retry_in_ms: self.first_backoff.as_millis() as u64,
                })
            }
            ok => ok,
        }
    }

    fn describe(&self) -> String {
        format!("{} (reopened when it fails)", self.description)
    }

    fn skipped(&self) -> u64 {
        self.current.as_ref().map_or(0, |s| s.skipped())
    }

    fn controls_in_force(&self) -> super::controls::ControlsInForce {
        self.controls.clone()
    }
}
