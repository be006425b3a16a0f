//! The partguard model contract: what a model file must hold to run here. It is defined once, in
//! `models/contract.json`; `models/export.py` writes models by it and this module checks them by it
//! (input name, layout and colour order, output names, required metadata), whatever the engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::Framework;

use super::{hex, ModelError, ModelInfo};
use crate::preprocess::{Alignment, InputSpec};

/// `models/contract.json`, compiled in.
pub const CONTRACT_JSON: &str = include_str!("../../models/contract.json");

/// The contract as `models/contract.json` states it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    #[allow(dead_code)]
    about: String,
    /// Written by export.py as metadata `partguard.contract`.
    pub version: String,
    pub input: ContractInput,
    /// Outputs the graph must have (it may have more).
    pub outputs: Vec<String>,
    /// Metadata keys every model must carry.
    pub required_metadata: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractInput {
    pub name: String,
    pub layout: String,
    pub channels: usize,
    pub colour_order: String,
}

/// The compiled-in contract. `models/contract.json` is part of the source and a unit test parses
/// it, so a broken file fails the build's tests, never a station.
pub fn contract() -> &'static Contract {
    static CONTRACT: LazyLock<Contract> = LazyLock::new(|| {
        serde_json::from_str(CONTRACT_JSON)
            .unwrap_or_else(|e| panic!("models/contract.json (compiled in) is invalid: {e}"))
    });
    &CONTRACT
}

fn meta_f32(path: &Path, meta: &BTreeMap<String, String>, key: &str) -> Result<f32, ModelError> {
    let v = meta.get(key).ok_or_else(|| ModelError::Contract {
        path: path.to_owned(),
        problem: format!("metadata `{key}` is missing"),
    })?;
    v.trim().parse::<f32>().map_err(|_| ModelError::Contract {
        path: path.to_owned(),
        problem: format!("metadata `{key}` = \"{v}\" is not a number"),
    })
}

/// Reads the model's bytes, metadata and I/O names, and checks them against the contract.
pub(crate) fn read_contract(
    path: &Path,
) -> Result<(Vec<u8>, tract_onnx::pb::ModelProto, ModelInfo), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_owned(),
        source,
    })?;
    contract_of(path, bytes)
}

/// The model's metadata and contract from its file's bytes (`path` names it in errors). Never
/// panics on any input (fuzzed: tests/fuzz).
pub fn model_info_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<ModelInfo, ModelError> {
    contract_of(path, bytes).map(|(_, _, info)| info)
}

fn contract_of(
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(Vec<u8>, tract_onnx::pb::ModelProto, ModelInfo), ModelError> {
    let want = contract();
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ModelError::Corrupt {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })?;
    let broken = |problem: String| ModelError::Contract {
        path: path.to_owned(),
        problem,
    };
    let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Corrupt {
        path: path.to_owned(),
        reason: "no graph".into(),
    })?;
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| !inits.contains(n))
        .collect();
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    if inputs != [want.input.name.as_str()] {
        return Err(broken(format!(
            "it has inputs {inputs:?}, expected exactly [{:?}]",
            want.input.name
        )));
    }
    if let Some(missing) = want.outputs.iter().find(|o| !outputs.contains(&o.as_str())) {
        return Err(broken(format!(
            "it has outputs {outputs:?}, expected {:?} (missing {missing:?})",
            want.outputs
        )));
    }
    let metadata: BTreeMap<String, String> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    if let Some(key) = want
        .required_metadata
        .iter()
        .find(|k| !metadata.contains_key(*k))
    {
        return Err(broken(format!("metadata `{key}` is missing")));
    }
    let shape = metadata
        .get("partguard.input_shape")
        .ok_or_else(|| broken("metadata `partguard.input_shape` is missing".into()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    if dims.len() != 4
        || dims[0] != 1
        || dims[1] != want.input.channels
        || dims[2] == 0
        || dims[3] == 0
    {
        return Err(broken(format!(
            "metadata `partguard.input_shape` = \"{shape}\", expected 1,{},H,W",
            want.input.channels
        )));
    }
    for (key, wanted) in [
        ("partguard.colour_order", &want.input.colour_order),
        ("partguard.input_layout", &want.input.layout),
    ] {
        if let Some(found) = metadata.get(key) {
            if found != wanted {
                return Err(broken(format!(
                    "metadata `{key}` = \"{found}\"; partguard feeds {wanted}"
                )));
            }
        }
    }
    let input = InputSpec {
        width: dims[3],
        height: dims[2],
        scale: meta_f32(path, &metadata, "partguard.pixel_scale")?,
        offset: meta_f32(path, &metadata, "partguard.pixel_offset")?,
        align: match metadata.get("partguard.alignment") {
            None => None,
            Some(v) => Some(Alignment::parse(v).map_err(|e| {
                broken(format!(
                    "metadata `partguard.alignment` = \"{v}\": {e} (export.py writes it from the run's `alignment`; re-export the model)"
                ))
            })?),
        },
    };
    let file_sha256 = hex(&Sha256::digest(&bytes));
    let info = ModelInfo {
        path: path.to_owned(),
        file_sha256,
        input,
        metadata,
    };
    Ok((bytes, proto, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_contract_parses_and_names_what_the_pipeline_feeds() {
        let c = contract();
        assert_eq!(c.input.channels, 3);
        assert_eq!(c.input.layout, "NCHW");
        assert_eq!(c.input.colour_order, "RGB");
        assert!(c.outputs.iter().any(|o| o == "score"));
        assert!(c.outputs.iter().any(|o| o == "anomaly_map"));
        // contract_of indexes these after checking they are required.
        for key in [
            "partguard.input_shape",
            "partguard.pixel_scale",
            "partguard.pixel_offset",
        ] {
            assert!(c.required_metadata.iter().any(|k| k == key), "{key}");
        }
    }
}
