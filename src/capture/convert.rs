//! Pixel-format conversion into a caller-owned RGB24 buffer (width * height * 3 bytes).
//!
//! The packed formats convert without allocating. MJPEG frames are decoded by `zune-jpeg` straight
//! into the output buffer (the decoder keeps small per-frame tables of its own).

use super::{CaptureError, Frame, PixelFormat};

/// Converts `frame` to packed RGB24 in `out`, which must hold exactly `width * height * 3` bytes.
///
/// A buffer the driver marked as corrupt ([`CaptureError::DriverError`]) or shorter than the
/// negotiated size ([`CaptureError::Truncated`]) is an error; extra bytes past the last row (some
/// drivers pad buffers) are ignored.
pub fn to_rgb(frame: &Frame<'_>, out: &mut [u8]) -> Result<(), CaptureError> {
    if frame.driver_error {
        return Err(CaptureError::DriverError {
            sequence: frame.sequence,
        });
    }
    let (w, h) = (frame.width as usize, frame.height as usize);
    assert_eq!(
        out.len(),
        w * h * 3,
        "caller must size the RGB buffer to the frame"
    );
    let Some(bpp) = frame.format.bytes_per_pixel() else {
        return decode_mjpeg(frame, out);
    };
    let row = w * bpp;
    let stride = if frame.stride == 0 {
        row
    } else {
        frame.stride as usize
    };
    let needed = if h == 0 { 0 } else { stride * (h - 1) + row };
    if stride < row || frame.data.len() < needed {
        return Err(CaptureError::Truncated {
            format: frame.format,
            width: frame.width,
            height: frame.height,
            expected: needed.max(row * h),
            got: frame.data.len(),
        });
    }
    for y in 0..h {
        let src = &frame.data[y * stride..y * stride + row];
        let dst = &mut out[y * w * 3..(y + 1) * w * 3];
        match frame.format {
            PixelFormat::Rgb24 => dst.copy_from_slice(src),
            PixelFormat::Grey => {
                for (d, &g) in dst.chunks_exact_mut(3).zip(src) {
                    d.fill(g);
                }
            }
            PixelFormat::Yuyv => yuyv_row(src, dst),
            PixelFormat::Mjpeg => unreachable!("MJPEG has no bytes per pixel"),
        }
    }
    Ok(())
}

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// BT.601 limited range (what UVC cameras send), integer arithmetic.
#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8, dst: &mut [u8]) {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    dst[0] = clamp8((c + 409 * e + 128) >> 8);
    dst[1] = clamp8((c - 100 * d - 208 * e + 128) >> 8);
    dst[2] = clamp8((c + 516 * d + 128) >> 8);
}

fn yuyv_row(src: &[u8], dst: &mut [u8]) {
    for (px, rgb) in src.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
        yuv_to_rgb(y0, u, v, &mut rgb[..3]);
        yuv_to_rgb(y1, u, v, &mut rgb[3..]);
    }
    // An odd width leaves one pixel sharing the last macropixel's chroma.
    if src.len() % 4 == 2 && dst.len() >= 3 {
        let n = src.len();
        let (u, v) = if n >= 6 {
            (src[n - 5], src[n - 3])
        } else {
            (128, 128)
        };
        let m = dst.len();
        yuv_to_rgb(src[n - 2], u, v, &mut dst[m - 3..]);
    }
}

fn decode_mjpeg(frame: &Frame<'_>, out: &mut [u8]) -> Result<(), CaptureError> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(false);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(frame.data, opts);
    dec.decode_headers().map_err(|e| CaptureError::BadJpeg {
        reason: format!("{e:?}"),
    })?;
    let (got_w, got_h) = dec.dimensions().unwrap_or((0, 0));
    if got_w != frame.width as usize || got_h != frame.height as usize {
        return Err(CaptureError::JpegSize {
            width: frame.width,
            height: frame.height,
            got_w,
            got_h,
        });
    }
    // zune-jpeg 0.4 can panic on a corrupt stream (an assertion in its upsampler, found by the
    // `convert` fuzz target: tests/fuzz/regressions/convert). A corrupt frame from a camera must be
    // a bad frame, not the end of the capture thread, so a decoder panic is caught here.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dec.decode_into(out))) {
        Ok(r) => r.map_err(|e| CaptureError::BadJpeg {
            reason: format!("{e:?}"),
        }),
        Err(_) => Err(CaptureError::BadJpeg {
            reason: "the JPEG decoder failed on this frame (corrupt stream)".into(),
        }),
    }
}
