//! V4L2 camera through the `v4l` crate: open by path, negotiate size and format, mmap streaming,
//! kernel timestamps (`CLOCK_MONOTONIC`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::buffer::Type;
use v4l::capability::Flags;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::controls::{self, ControlValue, ControlsInForce};
use super::{CaptureError, Frame, FrameSource, PixelFormat};

/// Order of preference when `source.format = "auto"`: uncompressed first (no decode cost).
const AUTO_ORDER: [PixelFormat; 4] = [
    PixelFormat::Yuyv,
    PixelFormat::Rgb24,
    PixelFormat::Grey,
    PixelFormat::Mjpeg,
];

pub struct V4l2Source {
    device: PathBuf,
    // The stream holds the device's handle; it must be dropped (STREAMOFF) before the device.
    stream: Stream<'static>,
    _dev: Device,
    width: u32,
    height: u32,
    stride: u32,
    format: PixelFormat,
    timeout: Duration,
    controls: ControlsInForce,
}

fn io_err(device: &Path, operation: &'static str, e: io::Error) -> CaptureError {
    match e.raw_os_error() {
        Some(libc::EBUSY) => CaptureError::DeviceBusy {
            device: device.to_owned(),
        },
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            CaptureError::DeviceMissing {
                device: device.to_owned(),
            }
        }
        Some(libc::EACCES) | Some(libc::EPERM) => CaptureError::PermissionDenied {
            device: device.to_owned(),
        },
        _ => CaptureError::Io {
            device: device.to_owned(),
            operation,
            source: e,
        },
    }
}

impl V4l2Source {
    /// Opens `device`, selects `input` if given, negotiates `width`x`height` in `format` (or the first
    /// usable one offered when `None`), and starts mmap streaming with `buffers` buffers.
    /// `timeout` bounds the wait for one frame; longer is reported as a stall. `controls` are set
    /// (auto modes first), read back and logged before streaming starts.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        device: &Path,
        width: u32,
        height: u32,
        format: Option<PixelFormat>,
        buffers: u32,
        input: Option<u32>,
        controls: &[(String, ControlValue)],
        timeout: Duration,
    ) -> Result<Self, CaptureError> {
        if !device.exists() {
            return Err(CaptureError::DeviceMissing {
                device: device.to_owned(),
            });
        }
        let dev = Device::with_path(device).map_err(|e| io_err(device, "open", e))?;
        let caps = dev
            .query_caps()
            .map_err(|e| io_err(device, "VIDIOC_QUERYCAP", e))?;
        if !caps.capabilities.contains(Flags::VIDEO_CAPTURE)
            || !caps.capabilities.contains(Flags::STREAMING)
        {
            return Err(CaptureError::NotCapture {
                device: device.to_owned(),
            });
        }
        if let Some(index) = input {
            let mut idx: libc::c_int = index as libc::c_int;
            // SAFETY: VIDIOC_S_INPUT reads and writes one int, which we own for the call.
            unsafe {
                v4l::v4l2::ioctl(
                    dev.handle().fd(),
                    v4l::v4l2::vidioc::VIDIOC_S_INPUT,
                    &mut idx as *mut libc::c_int as *mut std::os::raw::c_void,
                )
            }
            .map_err(|e| io_err(device, "VIDIOC_S_INPUT", e))?;
        }
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(|e| io_err(device, "VIDIOC_ENUM_FMT", e))?
            .into_iter()
            .map(|d| d.fourcc)
            .collect();
        let offered_str = || {
            offered
                .iter()
                .map(|f| f.str().unwrap_or("????").to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let candidates: Vec<PixelFormat> = match format {
            Some(f) => vec![f],
            None => AUTO_ORDER.to_vec(),
        };
        let mut chosen = None;
        for want in candidates {
            if !offered.contains(&FourCC::new(&want.fourcc())) {
                continue;
            }
            let mut fmt = dev
                .format()
                .map_err(|e| io_err(device, "VIDIOC_G_FMT", e))?;
            fmt.width = width;
            fmt.height = height;
            fmt.fourcc = FourCC::new(&want.fourcc());
            let got = dev
                .set_format(&fmt)
                .map_err(|e| io_err(device, "VIDIOC_S_FMT", e))?;
            if got.width == width && got.height == height && got.fourcc == fmt.fourcc {
                chosen = Some((want, got.stride));
                break;
            }
        }
        let Some((format, stride)) = chosen else {
            return Err(CaptureError::NoUsableFormat {
                device: device.to_owned(),
                width,
                height,
                offered: offered_str(),
            });
        };
        let in_force = controls::apply(dev.handle().fd(), device, controls)?;
        if !in_force.is_empty() {
            log::info!(
                "camera {} controls in force (read back): {}",
                device.display(),
                in_force
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, buffers)
            .map_err(|e| io_err(device, "VIDIOC_REQBUFS", e))?;
        stream.set_timeout(timeout);
        Ok(V4l2Source {
            device: device.to_owned(),
            stream,
            _dev: dev,
            width,
            height,
            stride: if format == PixelFormat::Mjpeg {
                0
            } else {
                stride
            },
            format,
            timeout,
            controls: in_force,
        })
    }

    pub fn format(&self) -> PixelFormat {
        self.format
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let (buf, meta) = self.stream.next().map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                CaptureError::Stalled {
                    device: self.device.clone(),
                    waited_ms: self.timeout.as_millis() as u64,
                }
            } else {
                io_err(&self.device, "VIDIOC_DQBUF", e)
            }
        })?;
        let used = (meta.bytesused as usize).min(buf.len());
        let ts = meta.timestamp;
        Ok(Some(Frame {
            data: &buf[..used],
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: self.format,
            timestamp: Duration::new(
                ts.sec.max(0) as u64,
                (ts.usec.clamp(0, 999_999) as u32) * 1000,
            ),
            sequence: meta.sequence as u64,
            origin: None,
            driver_error: meta.flags.contains(v4l::buffer::Flags::ERROR),
        }))
    }

    fn controls_in_force(&self) -> ControlsInForce {
        self.controls.clone()
    }

    fn describe(&self) -> String {
        format!(
            "v4l2 {} {}x{} {} (mmap streaming)",
            self.device.display(),
            self.width,
            self.height,
            self.format
        )
    }
}
