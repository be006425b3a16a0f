//! The resize must match Pillow's bilinear resize (the model was trained on it) exactly.

use partguard::preprocess::{InputSpec, Preprocessor, Resizer};

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
    };
    let mut t = [0f32; 6];
    pre.run(&frame, &mut t).unwrap();
    assert_eq!(t, [4.0, 19.0, 9.0, 24.0, 14.0, 29.0]);
}
