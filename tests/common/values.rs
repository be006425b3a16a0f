//! A model's output values, run and compared bit for bit: the engine's ops against tract's own
//! (`tests/model.rs`) and one tile against another (`tests/tiles.rs`).

use tract_onnx::prelude::*;

/// Every output value of `model` on `image`: the anomaly map, then the score.
pub fn run_flat(model: TypedModel, image: &tract_ndarray::Array4<f32>) -> Vec<f32> {
    let out = model
        .into_runnable()
        .unwrap()
        .run(tvec![Tensor::from(image.clone()).into()])
        .unwrap();
    out.iter()
        .flat_map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `a` and `b` on `image`: both give the anomaly map (one value per pixel) and the score,
/// bit for bit.
pub fn assert_same_values(
    label: &str,
    a: TypedModel,
    b: TypedModel,
    image: &tract_ndarray::Array4<f32>,
) {
    let (h, w) = (image.shape()[2], image.shape()[3]);
    let (a, b) = (run_flat(a, image), run_flat(b, image));
    assert_eq!(a.len(), h * w + 1, "{label}");
    let differ = bits_differ(&a, &b);
    assert_eq!(differ, 0, "{label}: {differ} values differ");
}

/// How many values of `a` and `b`, side by side, differ bit for bit.
pub fn bits_differ(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// A varied `h x w` image: ramps and a 4-pixel checker pattern, different in each channel.
pub fn varied_image(h: usize, w: usize) -> tract_ndarray::Array4<f32> {
    tract_ndarray::Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
        ((x * 7 + y * 3 + c * 50 + ((x / 4 + y / 4) % 2) * 90) % 256) as f32 / 255.0
    })
}
