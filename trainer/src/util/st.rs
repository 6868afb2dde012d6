//! safetensors files of float32 tensors plus one JSON metadata entry: the format of data sets and
//! checkpoints. Reading validates everything a truncated or foreign file could get wrong.

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

/// Writes `tensors` (converted to float32) and `meta_json` under `meta_key`, atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta_key: &str,
    meta_json: String,
) -> Result<()> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = super::tensor::to_f32(t)
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            Ok((
                name.clone(),
                t.size().iter().map(|&d| d as usize).collect(),
                bytes,
            ))
        })
        .collect::<Result<_>>()?;
    let views = data
        .iter()
        .map(|(n, s, b)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(meta_key.to_string(), meta_json)]);
    let buf = safetensors::serialize(views, Some(meta))?;
    crate::util::fs::write_atomic(path, &buf)
}

/// Reads a file written by [`write`]: its tensors by name and the JSON under `meta_key`.
/// `what` names the kind of file in error messages ("data set", "checkpoint").
pub fn read(path: &Path, meta_key: &str, what: &str) -> Result<(BTreeMap<String, Tensor>, String)> {
    let buf =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let corrupt =
        |why: &str| anyhow::anyhow!("{} is not a valid piddm {what}: {why}", path.display());
    let (_, header) =
        SafeTensors::read_metadata(&buf).map_err(|_| corrupt("unreadable safetensors header"))?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(meta_key))
        .ok_or_else(|| corrupt(&format!("no {meta_key} metadata")))?
        .clone();
    let st = SafeTensors::deserialize(&buf)
        .map_err(|_| corrupt("truncated or malformed tensor data"))?;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        if t.dtype() != Dtype::F32 {
            bail!(corrupt(&format!(
                "tensor {name} is {:?}, expected F32",
                t.dtype()
            )));
        }
        let vals: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if vals.iter().any(|v| !v.is_finite()) {
            bail!(corrupt(&format!("tensor {name} holds non-finite values")));
        }
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        out.insert(name, Tensor::from_slice(&vals).reshape(shape));
    }
    Ok((out, meta))
}
