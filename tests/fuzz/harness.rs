//! What each fuzz target does with its input; shared by the fuzz targets (tests/fuzz/fuzz_targets)
//! and by the corpus regression test (tests/fuzz_corpus.rs), so every input ever found is replayed
//! by `cargo test`. Each function must return (Ok or a clean error) for any input, never panic.

use std::path::Path;

use partguard::capture::{to_rgb, Frame, PixelFormat};

/// A camera frame: byte 0 picks the format, bytes 1-2 the size (1..=64 x 1..=64), byte 3 extra row
/// padding; the rest is the frame's data, truncated or oversized as it comes.
pub fn convert(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let format = [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
    ][data[0] as usize % 4];
    let width = u32::from(data[1] % 64) + 1;
    let height = u32::from(data[2] % 64) + 1;
    let stride = match format.bytes_per_pixel() {
        Some(bpp) => width * bpp as u32 + u32::from(data[3] % 8),
        None => 0,
    };
    let frame = Frame {
        data: &data[4..],
        width,
        height,
        stride,
        format,
        timestamp: Default::default(),
        sequence: 0,
        origin: None,
        driver_error: false,
    };
    let mut out = vec![0u8; (width * height * 3) as usize];
    let _ = to_rgb(&frame, &mut out);
}

/// A config file's text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = partguard::config::Config::parse(
            text,
            Path::new("fuzz.toml"),
            Path::new("/nonexistent"),
        );
    }
}

/// An ONNX model file's bytes, through the contract and metadata checks.
pub fn model_metadata(data: &[u8]) {
    let _ = partguard::infer::model_info_from_bytes(Path::new("fuzz.onnx"), data.to_vec());
}

/// A calibration file's text.
pub fn calibration(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = partguard::calibrate::Calibration::parse(text, Path::new("fuzz.cal.toml"));
    }
}

/// The harness for a target name (the fuzz_targets and corpus folder names).
pub fn by_name(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "convert" => convert,
        "config" => config,
        "model_metadata" => model_metadata,
        "calibration" => calibration,
        _ => return None,
    })
}
