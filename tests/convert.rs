//! Pixel-format conversions against known values, and bad frames that must be errors, not panics.

use std::time::Duration;

use partguard::capture::{to_rgb, CaptureError, Frame, PixelFormat};

fn frame(data: &[u8], w: u32, h: u32, stride: u32, format: PixelFormat) -> Frame<'_> {
    Frame {
        data,
        width: w,
        height: h,
        stride,
        format,
        timestamp: Duration::ZERO,
        sequence: 0,
        origin: None,
        driver_error: false,
    }
}

#[test]
fn yuyv_bt601_limited_range_known_colours() {
    // Two macropixels: black/white, then the BT.601 codes of pure red (Y=81, U=90, V=240) and pure
    // blue (Y=41, U=240, V=110) sharing chroma pairs as in a real YUYV stream.
    let data = [16, 128, 235, 128, 81, 90, 81, 240];
    let mut out = [0u8; 4 * 3];
    to_rgb(&frame(&data, 4, 1, 8, PixelFormat::Yuyv), &mut out).unwrap();
    assert_eq!(&out[0..3], &[0, 0, 0]);
    assert_eq!(&out[3..6], &[255, 255, 255]);
    // Red within the rounding of 8-bit BT.601 codes.
    for px in out[6..].chunks(3) {
        assert!(
            px[0] >= 253 && px[1] <= 2 && px[2] <= 2,
            "red came out {px:?}"
        );
    }
    let blue = [41, 240, 41, 110];
    let mut out = [0u8; 2 * 3];
    to_rgb(&frame(&blue, 2, 1, 4, PixelFormat::Yuyv), &mut out).unwrap();
    assert!(
        out[0] <= 2 && out[1] <= 2 && out[2] >= 253,
        "blue came out {out:?}"
    );
}

#[test]
fn grey_replicates_and_rgb24_honours_stride() {
    let grey = [0, 77, 255, 9];
    let mut out = [0u8; 12];
    to_rgb(&frame(&grey, 2, 2, 2, PixelFormat::Grey), &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 77, 77, 77, 255, 255, 255, 9, 9, 9]);

    // 1x2 RGB with 2 bytes of row padding (stride 5).
    let rgb = [1, 2, 3, 0xEE, 0xEE, 4, 5, 6];
    let mut out = [0u8; 6];
    to_rgb(&frame(&rgb, 1, 2, 5, PixelFormat::Rgb24), &mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn truncated_packed_frames_are_errors() {
    let short = [0u8; 7];
    let mut out = [0u8; 4 * 2 * 3];
    for fmt in [PixelFormat::Yuyv, PixelFormat::Grey, PixelFormat::Rgb24] {
        let err = to_rgb(&frame(&short, 4, 2, 0, fmt), &mut out).unwrap_err();
        assert!(
            matches!(err, CaptureError::Truncated { got: 7, .. }),
            "{fmt}: {err}"
        );
    }
    // Oversized buffers (driver padding) are fine.
    let big = [128u8; 64];
    to_rgb(&frame(&big, 4, 2, 0, PixelFormat::Grey), &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 128));
}

fn encode_jpeg(w: u32, h: u32) -> (Vec<u8>, Vec<u8>) {
    let mut rgb = Vec::new();
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    (jpeg, rgb)
}

#[test]
fn mjpeg_decodes_close_to_the_source() {
    let (jpeg, rgb) = encode_jpeg(64, 48);
    let mut out = vec![0u8; 64 * 48 * 3];
    to_rgb(&frame(&jpeg, 64, 48, 0, PixelFormat::Mjpeg), &mut out).unwrap();
    let max_err = out
        .iter()
        .zip(&rgb)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(max_err <= 12, "JPEG round trip error {max_err}");
}

#[test]
fn truncated_or_wrong_size_mjpeg_is_an_error_not_a_panic() {
    let (jpeg, _) = encode_jpeg(64, 48);
    let mut out = vec![0u8; 64 * 48 * 3];
    for cut in [0, 2, 20, 200, jpeg.len() / 2] {
        // Must return (Ok with partial data is acceptable for a cut inside the scan, never a panic).
        let r = to_rgb(
            &frame(&jpeg[..cut], 64, 48, 0, PixelFormat::Mjpeg),
            &mut out,
        );
        if cut < 200 {
            assert!(r.is_err(), "a {cut}-byte JPEG was accepted");
        }
    }
    let mut out = vec![0u8; 32 * 48 * 3];
    let err = to_rgb(&frame(&jpeg, 32, 48, 0, PixelFormat::Mjpeg), &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::JpegSize {
                got_w: 64,
                got_h: 48,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fourcc_names_round_trip() {
    for f in [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
    ] {
        assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        assert_eq!(
            PixelFormat::parse_config(&f.to_string().to_lowercase()),
            Some(Some(f))
        );
    }
    assert_eq!(PixelFormat::parse_config("auto"), Some(None));
    assert_eq!(PixelFormat::parse_config("NV12"), None);
}

#[test]
fn a_frame_the_driver_marked_corrupt_is_a_bad_frame_whatever_its_bytes() {
    // complete, valid YUYV bytes: only the driver's flag (V4L2_BUF_FLAG_ERROR) says they are not
    let data = [16, 128, 235, 128];
    let mut out = [0u8; 2 * 3];
    let mut f = frame(&data, 2, 1, 4, PixelFormat::Yuyv);
    f.sequence = 41;
    f.driver_error = true;
    let e = to_rgb(&f, &mut out).unwrap_err();
    assert!(
        matches!(e, CaptureError::DriverError { sequence: 41 }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("frame 41") && e.to_string().contains("dmesg"),
        "{e}"
    );
    f.driver_error = false;
    to_rgb(&f, &mut out).unwrap();
}
