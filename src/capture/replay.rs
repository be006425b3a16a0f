//! Replay: a folder of part images fed as frames, in path order, optionally looping and paced.
//!
//! When the decoded images fit `preload_mib` they are decoded once at start, so the steady-state loop
//! reads only memory (and allocates nothing). Larger folders (evaluation sets) are decoded per frame
//! into a reused buffer. An image that cannot be read is logged and counted, then skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CaptureError, Frame, FrameSource, PixelFormat};
use crate::clock::{Clock, MonotonicClock};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

struct Decoded {
    rgb: Vec<u8>,
    width: u32,
    height: u32,
}

pub struct ReplaySource {
    root: PathBuf,
    files: Vec<PathBuf>,
    preloaded: Option<Vec<Decoded>>,
    current: Decoded,
    next: usize,
    looping: bool,
    period: Option<Duration>,
    next_due: Option<Duration>,
    sequence: u64,
    skipped: u64,
    clock: Box<dyn Clock>,
}

/// All images under `root` (recursively), sorted by path. `root` may also be a single image.
pub fn list_images(root: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| CaptureError::ReplayRead { path, source }
    };
    if root.is_file() {
        return Ok(vec![root.to_owned()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(err(&dir))?;
        for entry in entries {
            let path = entry.map_err(err(&dir))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn decode(path: &Path) -> Result<Decoded, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .into_rgb8();
    let (width, height) = img.dimensions();
    Ok(Decoded {
        rgb: img.into_raw(),
        width,
        height,
    })
}

impl ReplaySource {
    /// Opens a replay of `root`. `rate_hz` of 0 replays as fast as frames are asked for.
    pub fn open(
        root: &Path,
        looping: bool,
        rate_hz: f64,
        preload_mib: usize,
    ) -> Result<Self, CaptureError> {
        Self::with_clock(
            root,
            looping,
            rate_hz,
            preload_mib,
            Box::new(MonotonicClock),
        )
    }

    pub fn with_clock(
        root: &Path,
        looping: bool,
        rate_hz: f64,
        preload_mib: usize,
        clock: Box<dyn Clock>,
    ) -> Result<Self, CaptureError> {
        let files = list_images(root)?;
        if files.is_empty() {
            return Err(CaptureError::ReplayEmpty {
                path: root.to_owned(),
            });
        }
        let mut src = ReplaySource {
            root: root.to_owned(),
            files,
            preloaded: None,
            current: Decoded {
                rgb: Vec::new(),
                width: 0,
                height: 0,
            },
            next: 0,
            looping,
            period: (rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / rate_hz)),
            next_due: None,
            sequence: 0,
            skipped: 0,
            clock,
        };
        src.try_preload(preload_mib.saturating_mul(1 << 20));
        Ok(src)
    }

    /// Decodes everything up front if it fits the budget; unreadable files are dropped (counted).
    fn try_preload(&mut self, budget: usize) {
        if budget == 0 {
            return;
        }
        let mut all = Vec::with_capacity(self.files.len());
        let mut kept = Vec::with_capacity(self.files.len());
        let mut total = 0usize;
        for path in &self.files {
            match decode(path) {
                Ok(d) => {
                    total += d.rgb.len();
                    if total > budget {
                        log::info!(
                            "replay {}: images exceed the {} MiB preload budget; decoding per frame",
                            self.root.display(),
                            budget >> 20
                        );
                        return;
                    }
                    all.push(d);
                    kept.push(path.clone());
                }
                Err(e) => {
                    log::warn!("replay: skipping unreadable image {}: {e}", path.display());
                    self.skipped += 1;
                }
            }
        }
        self.files = kept;
        self.preloaded = Some(all);
    }

    /// A paced replay delivers its first frame at `t` (clock time), then one per period: tests line
    /// simulated trigger and encoder edges up with the frames this way.
    pub fn start_at(&mut self, t: Duration) {
        self.next_due = Some(t);
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn pace(&mut self) -> Duration {
        let now = self.clock.now();
        let Some(period) = self.period else {
            return now;
        };
        let due = self.next_due.unwrap_or(now);
        if due > now {
            self.clock.sleep_until(due);
        }
        // A slow consumer does not cause a burst of catch-up frames.
        self.next_due = Some(due.max(now) + period);
        self.clock.now()
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if self.files.is_empty() {
                return Err(CaptureError::ReplayEmpty {
                    path: self.root.clone(),
                });
            }
            if self.next >= self.files.len() {
                if !self.looping {
                    return Ok(None);
                }
                self.next = 0;
            }
            let idx = self.next;
            self.next += 1;
            if self.preloaded.is_none() {
                match decode(&self.files[idx]) {
                    Ok(d) => self.current = d,
                    Err(e) => {
                        log::warn!(
                            "replay: skipping unreadable image {}: {e}",
                            self.files[idx].display()
                        );
                        self.skipped += 1;
                        continue;
                    }
                }
            }
            let timestamp = self.pace();
            let sequence = self.sequence;
            self.sequence += 1;
            let d = match &self.preloaded {
                Some(all) => &all[idx],
                None => &self.current,
            };
            return Ok(Some(Frame {
                data: &d.rgb,
                width: d.width,
                height: d.height,
                stride: d.width * 3,
                format: PixelFormat::Rgb24,
                timestamp,
                sequence,
                origin: Some(&self.files[idx]),
                driver_error: false,
            }));
        }
    }

    fn describe(&self) -> String {
        format!(
            "replay {} ({} images{}{}, {})",
            self.root.display(),
            self.files.len(),
            if self.looping { ", looping" } else { "" },
            match self.period {
                Some(p) => format!(", {:.1} fps", 1.0 / p.as_secs_f64()),
                None => ", as fast as possible".into(),
            },
            if self.preloaded.is_some() {
                "preloaded"
            } else {
                "decoded per frame"
            }
        )
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn is_live(&self) -> bool {
        self.period.is_some()
    }
}
