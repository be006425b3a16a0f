//! Frame sources: a V4L2 camera and an image-folder replay, behind one trait.

pub mod controls;
mod convert;
mod reopen;
mod replay;
mod v4l2;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use convert::to_rgb;
pub use reopen::{Opener, ReopeningSource};
pub use replay::ReplaySource;
pub use v4l2::V4l2Source;

/// The pixel formats partguard reads from cameras (V4L2 fourccs in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// YUV 4:2:2 packed, Y0 U Y1 V (`YUYV`), BT.601 limited range.
    Yuyv,
    /// Motion JPEG (`MJPG`), one JPEG per frame.
    Mjpeg,
    /// 8-bit greyscale (`GREY`).
    Grey,
    /// 8-bit R, G, B (`RGB3`).
    Rgb24,
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Rgb24 => *b"RGB3",
        }
    }
    pub fn from_fourcc(f: [u8; 4]) -> Option<Self> {
        match &f {
            b"YUYV" => Some(PixelFormat::Yuyv),
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"GREY" => Some(PixelFormat::Grey),
            b"RGB3" => Some(PixelFormat::Rgb24),
            _ => None,
        }
    }
    /// The config's `source.format`: `Some(None)` for `auto`, `None` when not understood.
    pub fn parse_config(s: &str) -> Option<Option<Self>> {
        if s.eq_ignore_ascii_case("auto") {
            return Some(None);
        }
        let b = s.to_ascii_uppercase().into_bytes();
        let f: [u8; 4] = b.try_into().ok()?;
        PixelFormat::from_fourcc(f).map(Some)
    }
    /// Bytes per pixel of the packed formats (MJPEG has none).
    pub fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::Yuyv => Some(2),
            PixelFormat::Grey => Some(1),
            PixelFormat::Rgb24 => Some(3),
            PixelFormat::Mjpeg => None,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// The ground truth of a replayed frame, from its folder's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Good,
    Defect,
}

impl Label {
    /// `good` (any case) is a good part; any other folder name is a defect class.
    pub fn from_path(path: &Path) -> Option<Label> {
        let dir = path.parent()?.file_name()?.to_str()?;
        Some(if dir.eq_ignore_ascii_case("good") {
            Label::Good
        } else {
            Label::Defect
        })
    }
}

/// One captured frame, borrowed from the source's buffers until the next call.
#[derive(Debug)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next (V4L2 `bytesperline`; 0 for MJPEG).
    pub stride: u32,
    pub format: PixelFormat,
    /// Capture time on `CLOCK_MONOTONIC` (the kernel's buffer timestamp for V4L2).
    pub timestamp: Duration,
    pub sequence: u64,
    /// The file a replayed frame came from.
    pub origin: Option<&'a Path>,
    /// The driver marked the buffer's data as corrupt (V4L2 `V4L2_BUF_FLAG_ERROR`): the frame is a
    /// bad frame, whatever its bytes look like.
    pub driver_error: bool,
}

impl Frame<'_> {
    pub fn label(&self) -> Option<Label> {
        self.origin.and_then(Label::from_path)
    }
}

/// Camera and replay faults. Each names the device or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("camera {device} does not exist; check the cable and `v4l2-ctl --list-devices`, then fix source.device")]
    DeviceMissing { device: PathBuf },
    #[error("camera {device} is busy: another process is streaming from it; stop it (`fuser {device}`) and retry")]
    DeviceBusy { device: PathBuf },
    #[error("camera {device}: permission denied; add the user to the `video` group (see README, Troubleshooting)")]
    PermissionDenied { device: PathBuf },
    #[error("camera {device} is not a video capture device with streaming I/O; pick the capture node (`v4l2-ctl --list-devices`)")]
    NotCapture { device: PathBuf },
    #[error("camera {device} offers no usable format at {width}x{height}: it offers {offered}; set source.format/width/height to one of those (partguard reads YUYV, MJPG, GREY, RGB3)")]
    NoUsableFormat {
        device: PathBuf,
        width: u32,
        height: u32,
        offered: String,
    },
    #[error("camera {device}: {operation} failed: {source}")]
    Io {
        device: PathBuf,
        operation: &'static str,
        source: std::io::Error,
    },
    #[error("camera {device} has no control \"{control}\"; fix [camera.controls] (`partguard check` lists every control with its range). It offers: {offered}")]
    UnknownControl {
        device: PathBuf,
        control: String,
        offered: String,
    },
    #[error(
        "camera {device}: control {control} {problem}; it takes {range}. Fix [camera.controls]"
    )]
    BadControlValue {
        device: PathBuf,
        control: String,
        /// The value given and what is wrong with it.
        problem: String,
        range: String,
    },
    #[error("camera {device} refused control {control} = {value}: {reason}")]
    ControlRefused {
        device: PathBuf,
        control: String,
        value: String,
        reason: String,
    },
    #[error("camera {device}: control {control} was set to {wanted} but reads back {got}; the driver does not hold it (an auto mode still on?). Fix [camera.controls]")]
    ControlReadBack {
        device: PathBuf,
        control: String,
        wanted: String,
        got: String,
    },
    #[error("camera {device} delivered no frame for {waited_ms} ms (stalled or unplugged)")]
    Stalled { device: PathBuf, waited_ms: u64 },
    #[error("camera {device} is down for {down_ms} ms and being reopened (next try in {retry_in_ms} ms); check its cable and `dmesg`")]
    Reopening {
        device: PathBuf,
        down_ms: u64,
        retry_in_ms: u64,
    },
    #[error("truncated {format} frame: {got} bytes, {expected} needed for {width}x{height}")]
    Truncated {
        format: PixelFormat,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("the camera driver marked frame {sequence} as corrupt (V4L2_BUF_FLAG_ERROR: a transfer or sensor error); check the cable, the USB bandwidth and `dmesg`")]
    DriverError { sequence: u64 },
    #[error("corrupt MJPEG frame: {reason}")]
    BadJpeg { reason: String },
    #[error("MJPEG frame is {got_w}x{got_h}, the stream was negotiated at {width}x{height}")]
    JpegSize {
        width: u32,
        height: u32,
        got_w: usize,
        got_h: usize,
    },
    #[error("replay folder {path} holds no readable PNG or JPEG images; point source.path at a folder of part images")]
    ReplayEmpty { path: PathBuf },
    /// `path` is the folder (or entry) that could not be read.
    #[error("cannot read replay folder {path}: {source}; check source.path")]
    ReplayRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the model's input tensor holds {got} values, the preprocessor writes {expected}; the engine and the model disagree (a bug: report it)")]
    InputSize { expected: usize, got: usize },
    #[error("the region of interest {roi} does not fit the {width}x{height} frame; fix [roi] (x + width <= {width}, y + height <= {height})")]
    RoiOutsideFrame { roi: Roi, width: u32, height: u32 },
}

/// A region of interest in the camera frame, in pixels: only this rectangle is resized into the
/// model's input (e.g. the part's square inside a 16:9 frame, so it is not squashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for Roi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} at ({}, {})",
            self.width, self.height, self.x, self.y
        )
    }
}

impl Roi {
    /// `roi` when it fits a `width` x `height` frame, else the whole frame (what the archive and
    /// the page show of a part).
    pub fn or_whole_frame(roi: Option<Roi>, width: u32, height: u32) -> Roi {
        roi.filter(|r| r.check(width, height).is_ok())
            .unwrap_or(Roi {
                x: 0,
                y: 0,
                width,
                height,
            })
    }

    /// Copies this region of an RGB frame (`width` x `height`, 3 bytes a pixel) into `out`, shrunk
    /// by nearest neighbour to `w` x `h` (the region's own size: a plain copy). `out` is cleared
    /// first and stays empty, with `false` returned, when the frame is shorter than its size says
    /// or the region does not fit it ([`Roi::check`]). Allocates nothing once `out` has the
    /// capacity.
    pub fn copy_rgb(
        &self,
        frame: &[u8],
        (width, height): (u32, u32),
        (w, h): (usize, usize),
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let fw = width as usize;
        if frame.len() < fw * height as usize * 3 || self.check(width, height).is_err() {
            return false;
        }
        let (x0, y0, rw, rh) = (
            self.x as usize,
            self.y as usize,
            self.width as usize,
            self.height as usize,
        );
        for y in 0..h {
            let row = (y0 + y * rh / h) * fw;
            if w == rw {
                let start = (row + x0) * 3;
                out.extend_from_slice(&frame[start..start + w * 3]);
            } else {
                for x in 0..w {
                    let i = (row + x0 + x * rw / w) * 3;
                    out.extend_from_slice(&frame[i..i + 3]);
                }
            }
        }
        true
    }

    /// Whether the region lies inside a `width` x `height` frame (and is not empty).
    pub fn check(&self, width: u32, height: u32) -> Result<(), CaptureError> {
        let fits = self.width > 0
            && self.height > 0
            && u64::from(self.x) + u64::from(self.width) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.height) <= u64::from(height);
        if fits {
            Ok(())
        } else {
            Err(CaptureError::RoiOutsideFrame {
                roi: *self,
                width,
                height,
            })
        }
    }
}

/// A source of frames. `next_frame` returns `Ok(None)` when a finite source is exhausted.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
    /// One line for logs and `check`: device, size, format.
    fn describe(&self) -> String;
    /// Frames skipped because they could not be read (counted, logged).
    fn skipped(&self) -> u64 {
        0
    }
    /// Whether frames come at the world's pace (a camera, a paced replay). A source that is not
    /// live (an unpaced replay) waits for a free frame buffer instead of counting an overrun.
    fn is_live(&self) -> bool {
        true
    }
    /// The camera controls set from `[camera.controls]`, as read back at the last open (empty for
    /// a replay).
    fn controls_in_force(&self) -> controls::ControlsInForce {
        controls::ControlsInForce::new()
    }
}
