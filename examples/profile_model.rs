//! Per-node profile of a model in tract: which operators take the time.
//!
//!     cargo run --release --example profile_model -- models/bottle_sspcab_int8.onnx [runs] [plain]
//!
//! Prints the optimized graph's nodes grouped by operator, with their share of the run time. The
//! graph is the one `TractEngine` runs (`partguard::infer::prepare_for_tract`); with `plain`,
//! tract's own `into_optimized` (for reports upstream). `PROFILE_NODES=N` lists the N slowest
//! nodes (12 by default).

use std::collections::BTreeMap;
use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("models/bottle_sspcab_int8.onnx");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let info = partguard::infer::read_model_info(std::path::Path::new(path))?;
    let (w, h) = (info.input.width, info.input.height);
    let model = tract_onnx::onnx().model_for_path(path)?;
    let model = if args.get(3).map(String::as_str) == Some("plain") {
        // tract's own pipeline, as an upstream report would run it
        partguard::infer::typed_for_contract(model, (h, w))?.into_optimized()?
    } else {
        partguard::infer::prepare_for_tract(model, (h, w))?
    };
    let plan = model.into_runnable()?;
    let mut state = plan.spawn()?;
    let input = Arc::new(Tensor::zero::<f32>(&[1, 3, h, w])?);
    state.run(tvec![TValue::from_const(input.clone())])?; // warm-up
    let mut per_node: BTreeMap<usize, (String, String, f64)> = BTreeMap::new();
    let t0 = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(
            tvec![TValue::from_const(input.clone())],
            |ctx, st, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                let e = per_node.entry(node.id).or_insert_with(|| {
                    let info = node.op().info().unwrap_or_default().join("; ");
                    (
                        node.op().name().to_string(),
                        format!("{} [{info}]", node.name),
                        0.0,
                    )
                });
                e.2 += t.elapsed().as_secs_f64();
                r
            },
        )?;
    }
    let total = t0.elapsed().as_secs_f64() / runs as f64;
    let mut by_op: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (op, _, t) in per_node.values() {
        let e = by_op.entry(op.clone()).or_default();
        e.0 += 1;
        e.1 += t / runs as f64;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    println!("{path}: {:.1} ms per run ({} runs)", total * 1e3, runs);
    println!(
        "{:<40} {:>6} {:>10} {:>7}",
        "operator", "nodes", "ms", "share"
    );
    for (op, (n, t)) in &ops {
        println!(
            "{:<40} {:>6} {:>10.2} {:>6.1}%",
            op,
            n,
            t * 1e3,
            100.0 * t / total
        );
    }
    let mut nodes: Vec<_> = per_node.values().collect();
    nodes.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("\nslowest nodes:");
    let shown = std::env::var("PROFILE_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    for (op, name, t) in nodes.iter().take(shown) {
        println!("{:>10.2} ms  {:<28} {}", t / runs as f64 * 1e3, op, name);
    }
    Ok(())
}
