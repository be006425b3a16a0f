//! The resize must match Pillow's bilinear resize (the model was trained on it) exactly.

use partguard::capture::CaptureError;
use partguard::preprocess::{Alignment, InputSpec, Preprocessor, Resizer, Roi};

fn load(path: &str) -> (Vec<u8>, usize, usize) {
    let img = image::open(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .into_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as usize, h as usize)
}

fn check(src: &str, expected: &str) {
    let (s, sw, sh) = load(src);
    let (e, ew, eh) = load(expected);
    let mut out = vec![0u8; ew * eh * 3];
    let mut r = Resizer::default();
    r.resize(&s, sw, sh, &mut out, ew, eh);
    let diff = out.iter().zip(&e).filter(|(a, b)| a != b).count();
    assert_eq!(
        diff, 0,
        "{src} -> {ew}x{eh}: {diff} bytes differ from Pillow"
    );
}

#[test]
fn downscale_matches_pillow_bit_for_bit() {
    check(
        "examples/samples/bottle/good/000.png",
        "tests/data/good000_pil_bilinear_128.png",
    );
    check(
        "examples/samples/bottle/good/000.png",
        "tests/data/good000_pil_bilinear_100x77.png",
    );
}

#[test]
fn upscale_matches_pillow_bit_for_bit() {
    check(
        "tests/data/good000_crop50x40.png",
        "tests/data/good000_crop50x40_pil_bilinear_120x90.png",
    );
}

#[test]
fn tensor_is_nchw_scaled() {
    let spec = InputSpec {
        width: 2,
        height: 1,
        scale: 0.5,
        offset: -1.0,
        align: None,
    };
    let mut pre = Preprocessor::new(spec);
    let data = [10u8, 20, 30, 40, 50, 60];
    let frame = partguard::capture::Frame {
        data: &data,
        width: 2,
        height: 1,
        stride: 6,
        format: partguard::capture::PixelFormat::Rgb24,
        timestamp: Default::default(),
        sequence: 0,
        origin: None,
        driver_error: false,
    };
    let mut t = [0f32; 6];
    pre.run(&frame, &mut t).unwrap();
    assert_eq!(t, [4.0, 19.0, 9.0, 24.0, 14.0, 29.0]);
}

#[test]
fn region_of_interest_is_resized_alone() {
    // The part pasted into a larger frame, at an offset: the ROI gives the same tensor as the part
    // image on its own.
    let (part, pw, ph) = load("examples/samples/bottle/good/000.png");
    let (fw, fh, x0, y0) = (pw + 100, ph + 40, 70usize, 13usize);
    let mut frame_px = vec![200u8; fw * fh * 3];
    for y in 0..ph {
        let dst = ((y0 + y) * fw + x0) * 3;
        frame_px[dst..dst + pw * 3].copy_from_slice(&part[y * pw * 3..(y + 1) * pw * 3]);
    }
    let spec = InputSpec {
        width: 128,
        height: 128,
        scale: 1.0 / 255.0,
        offset: 0.0,
        align: None,
    };
    let frame = |data: &[u8], w: usize, h: usize| -> Vec<f32> {
        let mut pre = Preprocessor::new(spec);
        if w == fw {
            pre.set_roi(Some(Roi {
                x: x0 as u32,
                y: y0 as u32,
                width: pw as u32,
                height: ph as u32,
            }));
        }
        let mut t = vec![0f32; 3 * 128 * 128];
        pre.fill_tensor_from(data, w as u32, h as u32, &mut t)
            .unwrap();
        t
    };
    let whole = frame(&part, pw, ph);
    let cropped = frame(&frame_px, fw, fh);
    assert_eq!(whole, cropped);
    // Without the ROI the frame's border changes the tensor: the test can fail.
    let mut pre = Preprocessor::new(spec);
    let mut t = vec![0f32; 3 * 128 * 128];
    pre.fill_tensor_from(&frame_px, fw as u32, fh as u32, &mut t)
        .unwrap();
    assert_ne!(t, whole);
}

#[test]
fn region_of_interest_outside_the_frame_is_an_error_naming_both() {
    let spec = InputSpec {
        width: 2,
        height: 2,
        scale: 1.0,
        offset: 0.0,
        align: None,
    };
    let mut pre = Preprocessor::new(spec);
    let roi = Roi {
        x: 3,
        y: 0,
        width: 2,
        height: 2,
    };
    pre.set_roi(Some(roi));
    let mut t = [0f32; 12];
    let err = pre
        .fill_tensor_from(&[0u8; 4 * 4 * 3], 4, 4, &mut t)
        .unwrap_err();
    assert!(matches!(
        err,
        CaptureError::RoiOutsideFrame {
            width: 4,
            height: 4,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("2x2 at (3, 0)") && msg.contains("4x4") && msg.contains("[roi]"),
        "{msg}"
    );
}

/// An input tensor of the wrong size (an engine that could not hand out its tensor) is a bad frame,
/// never a panic on the frame path.
#[test]
fn a_short_input_tensor_is_an_error_not_a_panic() {
    let spec = InputSpec {
        width: 8,
        height: 8,
        scale: 1.0 / 255.0,
        offset: 0.0,
        align: None,
    };
    let mut pre = Preprocessor::new(spec);
    let rgb = vec![128u8; 16 * 16 * 3];
    for len in [0, 8 * 8 * 3 - 1, 8 * 8 * 3 + 1] {
        let mut input = vec![0.0f32; len];
        let err = pre.fill_tensor_from(&rgb, 16, 16, &mut input).unwrap_err();
        assert!(
            matches!(err, CaptureError::InputSize { expected: 192, got } if got == len),
            "{err}"
        );
    }
    let mut input = vec![0.0f32; 8 * 8 * 3];
    pre.fill_tensor_from(&rgb, 16, 16, &mut input).unwrap();
    assert!(input.iter().all(|&v| (v - 128.0 / 255.0).abs() < 1e-6));
}

/// What the archive stores and the page shows of a part: the ROI's pixels, copied exactly at its
/// own size and shrunk by nearest neighbour for the page; never a panic on a short frame.
#[test]
fn a_roi_copy_takes_the_region_exactly_and_refuses_a_short_frame() {
    // 4x3 RGB frame whose pixel (x, y) holds (x, y, 7).
    let (fw, fh) = (4usize, 3usize);
    let frame: Vec<u8> = (0..fh)
        .flat_map(|y| (0..fw).flat_map(move |x| [x as u8, y as u8, 7]))
        .collect();
    let roi = Roi {
        x: 1,
        y: 1,
        width: 2,
        height: 2,
    };
    let mut out = Vec::new();
    assert!(roi.copy_rgb(&frame, (4, 3), (2, 2), &mut out));
    assert_eq!(out, [1, 1, 7, 2, 1, 7, 1, 2, 7, 2, 2, 7]);
    // Shrunk to one pixel: the region's top-left.
    assert!(roi.copy_rgb(&frame, (4, 3), (1, 1), &mut out));
    assert_eq!(out, [1, 1, 7]);
    // A frame shorter than its size says, or a region outside it: nothing copied.
    assert!(!roi.copy_rgb(&frame[..20], (4, 3), (2, 2), &mut out));
    assert!(out.is_empty());
    let outside = Roi { x: 3, ..roi };
    assert!(!outside.copy_rgb(&frame, (4, 3), (2, 2), &mut out));
    assert!(out.is_empty());
}

/// The part found, turned and cropped as `models/align.py` does in training (the fixtures are its
/// output: `align.apply` on the sample with the same alignment).
fn check_aligned(src: &str, align: Alignment, expected: &str) {
    let (s, sw, sh) = load(src);
    let (e, ew, eh) = load(expected);
    let spec = InputSpec {
        width: ew,
        height: eh,
        scale: 1.0,
        offset: 0.0,
        align: Some(align),
    };
    let mut pre = Preprocessor::new(spec);
    let mut input = vec![0f32; 3 * ew * eh];
    pre.fill_tensor_from(&s, sw as u32, sh as u32, &mut input)
        .unwrap();
    assert!(pre.pose().is_some(), "{src}: no part found");
    let out = pre.resized_rgb();
    let diff: Vec<i32> = out
        .iter()
        .zip(&e)
        .map(|(&a, &b)| a as i32 - b as i32)
        .filter(|d| *d != 0)
        .collect();
    // The pose's sums run in another order than numpy's: a sample point may land a hair to the
    // other side of a whole value, where Pillow's truncation turns it into one level more or less.
    assert!(
        diff.len() * 1000 <= out.len() && diff.iter().all(|d| d.abs() <= 1),
        "{src} -> {ew}x{eh}: {} of {} bytes differ from align.py (largest {:?})",
        diff.len(),
        out.len(),
        diff.iter().map(|d| d.abs()).max()
    );
    assert_eq!(input[0], out[0] as f32);
}

#[test]
fn aligned_parts_match_training_alignment() {
    let screw = Alignment {
        rotate: true,
        box_h: 69,
        box_w: 246,
    };
    check_aligned(
        "examples/samples/screw/good/000.png",
        screw,
        "tests/data/screw_good000_aligned_64x240.png",
    );
    check_aligned(
        "examples/samples/screw/defect/000.png",
        screw,
        "tests/data/screw_defect000_aligned_64x240.png",
    );
    let unturned = Alignment {
        rotate: false,
        box_h: 120,
        box_w: 200,
    };
    check_aligned(
        "examples/samples/screw/good/000.png",
        unturned,
        "tests/data/screw_good000_box120x200_48x80.png",
    );
}
