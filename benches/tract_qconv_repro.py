"""Minimal reproducers of tract's int8 costs (issue 24), small enough for the repo.

    .venv-models/bin/python benches/tract_qconv_repro.py   # writes tests/data/tract_{conv3x3,upsample,bilinear}_{f32,int8}.onnx
    cargo run --release --example profile_model -- tests/data/tract_conv3x3_int8.onnx 20
    cargo run --release --example profile_model -- tests/data/tract_conv3x3_f32.onnx 20

Two 3x3 convolutions at 128x128 (3 -> 32 -> 16 channels, ReLU), the shape of the shipped network's
largest layers, once in f32 (Conv) and once in the QOperator int8 form export.py produces
(QuantizeLinear -> QLinearConv -> QLinearConv -> DequantizeLinear, per-tensor 7-bit weights).
`tract_upsample_*` is a 1x1 convolution at stride 2 (3 -> 32 channels, 64x64) followed by a nearest
upsampling x2 (ONNX Resize, as torch exports `interpolate(mode="nearest")`), in f32 and on uint8:
tract runs the f32 one through a row-copying fast path and the uint8 one element by element.
`tract_bilinear_*` is the same with the shipped network's bilinear upsampling (`mode="linear"`,
half-pixel): tract resamples the last axis one value at a time, f32 and uint8 alike.
All four follow the partguard contract (input `image`, outputs `anomaly_map` and `score`, metadata), so
every partguard tool (bench, profile_model, eval) loads them. Weights are a fixed pseudo-random
draw: the cost does not depend on their values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = json.loads((ROOT / "models/contract.json").read_text())
H = W = 128
CHANNELS = [3, 32, 16]


def metadata(model: onnx.ModelProto, name: str, precision: str) -> None:
    meta = {
        "partguard.contract": CONTRACT["version"],
        "partguard.input_shape": f"1,3,{H},{W}",
        "partguard.pixel_scale": "0.00392156862745098",
        "partguard.pixel_offset": "0",
        "partguard.colour_order": CONTRACT["input"]["colour_order"],
        "partguard.model_name": f"{name}_{precision}",
        "partguard.precision": precision,
        "partguard.data_license": "none (synthetic weights)",
    }
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def heads(nodes: list, inits: list, x: str) -> None:
    """anomaly_map = mean over channels of x (f32), score = its max."""
    nodes.append(helper.make_node("ReduceMean", [x], ["anomaly_map"], axes=[1], keepdims=1))
    nodes.append(helper.make_node("ReduceMax", ["anomaly_map"], ["score_4d"], keepdims=0))
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "shape1"))
    nodes.append(helper.make_node("Reshape", ["score_4d", "shape1"], ["score"]))


def finish(nodes: list, inits: list, name: str, precision: str) -> onnx.ModelProto:
    """The graph with the contract's input, outputs and metadata, checked by onnx."""
    graph = helper.make_graph(
        nodes, f"{name}_{precision}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, H, W]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata(model, name, precision)
    onnx.checker.check_model(model)
    return model


def build(precision: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "image"
    if precision == "int8":
        inits += [numpy_helper.from_array(np.array(1 / 255, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(0, np.uint8), "x_zp")]
        nodes.append(helper.make_node("QuantizeLinear", [x, "x_scale", "x_zp"], ["x_q"]))
        x, x_scale = "x_q", "x_scale"
    for i, (cin, cout) in enumerate(zip(CHANNELS, CHANNELS[1:])):
        w = rng.normal(0, (2 / (cin * 9)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.01, cout).astype(np.float32)
        if precision == "f32":
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
            nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            x = f"r{i}"
            continue
        w_scale = float(np.abs(w).max() / 63)  # per-tensor, 7-bit (reduce_range), as export.py
        y_scale = 0.05
        inits += [
            numpy_helper.from_array(np.round(w / w_scale).astype(np.int8), f"w{i}"),
            numpy_helper.from_array(np.array(w_scale, np.float32), f"w{i}_scale"),
            numpy_helper.from_array(np.array(0, np.int8), f"w{i}_zp"),
            numpy_helper.from_array(np.array(y_scale, np.float32), f"y{i}_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), f"y{i}_zp"),
        ]
        in_scale = 1 / 255 if i == 0 else 0.05
        inits.append(numpy_helper.from_array(np.round(b / (in_scale * w_scale)).astype(np.int32), f"b{i}"))
        nodes.append(helper.make_node(
            "QLinearConv",
            [x, x_scale, "x_zp" if i == 0 else f"y{i - 1}_zp", f"w{i}", f"w{i}_scale", f"w{i}_zp",
             f"y{i}_scale", f"y{i}_zp", f"b{i}"],
            [f"q{i}"], pads=[1, 1, 1, 1]))  # ReLU fused: zero point 0, uint8 output
        x, x_scale = f"q{i}", f"y{i}_scale"
    if precision == "int8":
        nodes.append(helper.make_node("DequantizeLinear", [x, x_scale, f"y{len(CHANNELS) - 2}_zp"], ["deq"]))
        x = "deq"
    heads(nodes, inits, x)
    return finish(nodes, inits, "tract_conv3x3", precision)


def build_upsample(precision: str, bilinear: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    cout = 32
    w = rng.normal(0, (2 / 3) ** 0.5, (cout, 3, 1, 1)).astype(np.float32)
    b = rng.normal(0, 0.01, cout).astype(np.float32)
    nodes, inits = [], [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    resize = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    if bilinear:  # as torch exports interpolate(mode="bilinear", align_corners=False): the shipped network
        resize = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    if precision == "f32":
        inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        nodes.append(helper.make_node("Conv", ["image", "w", "b"], ["c"], strides=[2, 2]))
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        nodes.append(helper.make_node("Resize", ["r", "", "scales"], ["up"], **resize))
    else:
        w_scale = float(np.abs(w).max() / 63)
        inits += [
            numpy_helper.from_array(np.array(1 / 255, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
            numpy_helper.from_array(np.round(w / w_scale).astype(np.int8), "w"),
            numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
            numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "y_zp"),
            numpy_helper.from_array(np.round(b / (w_scale / 255)).astype(np.int32), "b"),
        ]
        nodes.append(helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zp"], ["x_q"]))
        nodes.append(helper.make_node(
            "QLinearConv", ["x_q", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
            ["q"], strides=[2, 2]))
        nodes.append(helper.make_node("Resize", ["q", "", "scales"], ["up_q"], **resize))
        nodes.append(helper.make_node("DequantizeLinear", ["up_q", "y_scale", "y_zp"], ["up"]))
    heads(nodes, inits, "up")
    return finish(nodes, inits, "tract_bilinear" if bilinear else "tract_upsample", precision)


def build_bilinear(precision: str) -> onnx.ModelProto:
    return build_upsample(precision, bilinear=True)


def main() -> None:
    out = ROOT / "tests/data"
    for name, make in (("tract_conv3x3", build), ("tract_upsample", build_upsample),
                       ("tract_bilinear", build_bilinear)):
        for precision in ("f32", "int8"):
            path = out / f"{name}_{precision}.onnx"
            onnx.save(make(precision), str(path))
            print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    sys.exit(main())
