//! int8 versions of exported graphs, in ONNX's QDQ form: each quantised tensor passes through a
//! QuantizeLinear / DequantizeLinear pair, which ONNX Runtime fuses with the operator between
//! them into its integer kernel (QLinearConv, QLinearAdd, ...). Only the nodes written inside a
//! network (`Graph::net_nodes`) are touched: the physics, the preconditioning and the settling
//! around them stay float32.
//!
//! Weights are int8 per output channel in 7 bits ([-63, 63]): without VNNI, the x86 integer dot
//! product adds pairs of uint8 x int8 products in int16, which 8-bit weights can overflow.
//! Activations are uint8 per tensor, their ranges the minimum and maximum over a calibration run
//! of the float32 graph.

use super::graph::{attr_int, tensor_f32};
use anyhow::{bail, Context, Result};
use onnx_protobuf::{
    tensor_proto::DataType, type_proto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto,
    ValueInfoProto,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The operators whose inputs and outputs are quantised (ONNX Runtime has a QLinear kernel or a
/// QDQ fusion for each).
const QUANTISED: [&str; 5] = ["Conv", "Add", "Mul", "Sigmoid", "Concat"];
/// Largest magnitude of a 7-bit weight.
const WEIGHT_MAX: f32 = 63.0;

/// One calibration batch: (input name, dims, values).
pub type Feed = Vec<(String, Vec<i64>, Vec<f32>)>;

/// The quantised nodes of `g`: in a network, of a quantised kind, and not writing the network's
/// result (a value read outside the network or a graph output): that stays float32, since the
/// step of an 8-bit result would reach the field as grid-scale noise, which the PDE residual
/// amplifies by 1 / h^2.
fn quantised_nodes<'a>(g: &'a GraphProto, net: &'a HashSet<String>) -> Vec<&'a NodeProto> {
    let mut leaves: HashSet<&String> = g.output.iter().map(|o| &o.name).collect();
    for n in g.node.iter().filter(|n| !net.contains(&n.name)) {
        leaves.extend(n.input.iter());
    }
    g.node
        .iter()
        .filter(|n| {
            net.contains(&n.name)
                && QUANTISED.contains(&n.op_type.as_str())
                && !n.output.iter().any(|o| leaves.contains(o))
        })
        .collect()
}

/// The inputs of node `n` that carry activations or per-tensor constants (Conv's weight and
/// bias are not).
fn data_inputs(n: &NodeProto) -> Vec<&String> {
    match n.op_type.as_str() {
        "Conv" => n.input.iter().take(1).collect(),
        _ => n.input.iter().filter(|i| !i.is_empty()).collect(),
    }
}

/// The float tensors of `m` whose ranges the quantisation needs: every data input and output of
/// a quantised node that is not an initializer.
pub fn calibrated_tensors(m: &ModelProto, net: &HashSet<String>) -> Vec<String> {
    let g = &m.graph;
    let inits: HashSet<&String> = g.initializer.iter().map(|t| &t.name).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for n in quantised_nodes(g, net) {
        for t in data_inputs(n).into_iter().chain(&n.output) {
            if !inits.contains(t) && seen.insert(t.clone()) {
                out.push(t.clone());
            }
        }
    }
    out
}

/// (min, max) of each tensor of `tensors` over a run of `m` on each batch of `feeds`.
pub fn calibrate(
    m: &ModelProto,
    tensors: &[String],
    feeds: &[Feed],
) -> Result<HashMap<String, (f32, f32)>> {
    let mut probe = m.clone();
    // A graph input's range is its feed's (ONNX Runtime does not return an input as an output).
    let inputs: HashSet<&String> = m.graph.input.iter().map(|i| &i.name).collect();
    let declared: HashSet<String> = probe.graph.output.iter().map(|o| o.name.clone()).collect();
    for t in tensors
        .iter()
        .filter(|t| !declared.contains(*t) && !inputs.contains(t))
    {
        probe
            .graph
            .mut_or_insert_default()
            .output
            .push(float_output(t));
    }
    let bytes = super::encode(&probe)?;
    let env = piddm::ort_environment(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut session = ort::session::Session::builder(env)?
        // The graph as written: a fused kernel would hide the tensors being measured.
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_memory(&bytes)
        .context("the calibration session")?;
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    for feed in feeds {
        let feeds: Vec<(String, ort::session::SessionInputValue)> = feed
            .iter()
            .map(|(name, dims, v)| {
                let t = ort::value::Tensor::from_array((dims.clone(), v.clone()))?;
                Ok((name.clone(), t.into()))
            })
            .collect::<Result<_>>()?;
        let outs = session.run(feeds)?;
        for t in tensors {
            let v = match feed.iter().find(|(n, _, _)| n == t) {
                Some((_, _, v)) => v.as_slice(),
                None => outs[t.as_str()].try_extract_tensor::<f32>()?.1,
            };
            if v.iter().any(|x| !x.is_finite()) {
                bail!("calibration: {t} is not finite");
            }
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            let r = ranges.entry(t.clone()).or_insert((lo, hi));
            *r = (r.0.min(lo), r.1.max(hi));
        }
    }
    Ok(ranges)
}

fn float_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// Asymmetric uint8 parameters of a range (widened to hold 0, as ONNX requires zero exactly).
fn uint8_params((lo, hi): (f32, f32)) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

fn tensor_raw(name: &str, dims: &[i64], dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn floats(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::FLOAT as i32 {
        bail!("initializer {} is not float32", t.name);
    }
    if !t.raw_data.is_empty() {
        return Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    Ok(t.float_data.clone())
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<onnx_protobuf::AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

/// The QDQ version of `m`: the quantised nodes of its networks read dequantised int8 weights and
/// dequantised uint8 activations whose ranges `ranges` gives (from [`calibrate`]).
pub fn quantise(
    m: &ModelProto,
    net: &HashSet<String>,
    ranges: &HashMap<String, (f32, f32)>,
) -> Result<ModelProto> {
    let g = &m.graph;
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    // activation tensor -> its (scale, zero point) and the name of its dequantised copy
    let mut act: BTreeMap<String, (f32, u8)> = BTreeMap::new();
    for t in calibrated_tensors(m, net) {
        let r = ranges
            .get(&t)
            .with_context(|| format!("no calibration range for {t}"))?;
        act.insert(t, uint8_params(*r));
    }
    let dq = |t: &str| format!("{t}_dq");
    let qdq_pair = |t: &str, (s, zp): (f32, u8), inits: &mut Vec<TensorProto>| -> Vec<NodeProto> {
        let sn = format!("{t}_scale");
        let zn = format!("{t}_zero");
        inits.push(tensor_f32(&sn, &[], &[s]));
        inits.push(tensor_raw(&zn, &[], DataType::UINT8, vec![zp]));
        let q = format!("{t}_q");
        vec![
            node("QuantizeLinear", &[t, &sn, &zn], &q, vec![]),
            node("DequantizeLinear", &[&q, &sn, &zn], &dq(t), vec![]),
        ]
    };

    // Constants read by quantised Add / Mul / Concat: uint8 per tensor.
    let mut const_dq: HashMap<String, String> = HashMap::new();
    for n in quantised_nodes(g, net) {
        if n.op_type == "Conv" {
            continue;
        }
        for i in data_inputs(n) {
            if let Some(t) = inits.get(i.as_str()) {
                if const_dq.contains_key(i) {
                    continue;
                }
                let v = floats(t)?;
                let r = v
                    .iter()
                    .fold((0f32, 0f32), |(a, b), &x| (a.min(x), b.max(x)));
                let (s, zp) = uint8_params(r);
                let q: Vec<u8> = v
                    .iter()
                    .map(|x| (x / s + zp as f32).round().clamp(0.0, 255.0) as u8)
                    .collect();
                let qn = format!("{i}_u8");
                let (sn, zn) = (format!("{i}_scale"), format!("{i}_zero"));
                new_inits.push(tensor_raw(&qn, &t.dims, DataType::UINT8, q));
                new_inits.push(tensor_f32(&sn, &[], &[s]));
                new_inits.push(tensor_raw(&zn, &[], DataType::UINT8, vec![zp]));
                const_dq.insert(i.clone(), dq(i));
            }
        }
    }

    // Conv weights (int8 per output channel) and biases (int32 at input scale x weight scale).
    let mut conv_params: HashMap<String, [String; 2]> = HashMap::new();
    let mut conv_nodes: Vec<NodeProto> = Vec::new();
    for n in quantised_nodes(g, net)
        .into_iter()
        .filter(|n| n.op_type == "Conv")
    {
        let (x, w) = (&n.input[0], &n.input[1]);
        let wt = inits
            .get(w.as_str())
            .with_context(|| format!("Conv {} weight {w} is not an initializer", n.name))?;
        let wv = floats(wt)?;
        let cout = wt.dims[0] as usize;
        let per = wv.len() / cout;
        let scales: Vec<f32> = wv
            .chunks_exact(per)
            .map(|c| {
                let m = c.iter().fold(0f32, |a, &x| a.max(x.abs()));
                if m > 0.0 {
                    m / WEIGHT_MAX
                } else {
                    1.0
                }
            })
            .collect();
        let wq: Vec<u8> = wv
            .chunks_exact(per)
            .zip(&scales)
            .flat_map(|(c, s)| {
                c.iter()
                    .map(move |x| (x / s).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8 as u8)
            })
            .collect();
        let tag = &n.name;
        let (wq_n, ws_n, wz_n, wd_n) = (
            format!("{tag}_w_i8"),
            format!("{tag}_w_scale"),
            format!("{tag}_w_zero"),
            format!("{tag}_w_dq"),
        );
        new_inits.push(tensor_raw(&wq_n, &wt.dims, DataType::INT8, wq));
        new_inits.push(tensor_f32(&ws_n, &[cout as i64], &scales));
        new_inits.push(tensor_raw(
            &wz_n,
            &[cout as i64],
            DataType::INT8,
            vec![0; cout],
        ));
        conv_nodes.push(node(
            "DequantizeLinear",
            &[&wq_n, &ws_n, &wz_n],
            &wd_n,
            vec![attr_int("axis", 0)],
        ));
        let mut names = [wd_n, String::new()];
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            let bt = inits
                .get(b.as_str())
                .with_context(|| format!("Conv {} bias {b} is not an initializer", n.name))?;
            let bv = floats(bt)?;
            let sx = act[x].0;
            let bs: Vec<f32> = scales.iter().map(|s| s * sx).collect();
            let bq: Vec<u8> = bv
                .iter()
                .zip(&bs)
                .flat_map(|(v, s)| {
                    ((v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32).to_le_bytes()
                })
                .collect();
            let (bq_n, bs_n, bz_n, bd_n) = (
                format!("{tag}_b_i32"),
                format!("{tag}_b_scale"),
                format!("{tag}_b_zero"),
                format!("{tag}_b_dq"),
            );
            new_inits.push(tensor_raw(&bq_n, &[cout as i64], DataType::INT32, bq));
            new_inits.push(tensor_f32(&bs_n, &[cout as i64], &bs));
            new_inits.push(tensor_raw(
                &bz_n,
                &[cout as i64],
                DataType::INT32,
                vec![0; 4 * cout],
            ));
            conv_nodes.push(node(
                "DequantizeLinear",
                &[&bq_n, &bs_n, &bz_n],
                &bd_n,
                vec![attr_int("axis", 0)],
            ));
            names[1] = bd_n;
        }
        conv_params.insert(n.name.clone(), names);
    }

    // The node list: constants' and weights' dequantisation first, then each node with its
    // inputs renamed to their dequantised copies and a Q/DQ pair after each quantised output.
    let quantised_names: HashSet<&String> = quantised_nodes(g, net)
        .into_iter()
        .map(|n| &n.name)
        .collect();
    let mut nodes: Vec<NodeProto> = Vec::new();
    for (c, d) in &const_dq {
        let s = format!("{c}_scale");
        let z = format!("{c}_zero");
        nodes.push(node(
            "DequantizeLinear",
            &[&format!("{c}_u8"), &s, &z],
            d,
            vec![],
        ));
    }
    nodes.extend(conv_nodes);
    for i in &g.input {
        if let Some(p) = act.get(&i.name) {
            nodes.extend(qdq_pair(&i.name, *p, &mut new_inits));
        }
    }
    for n in &g.node {
        let mut n = n.clone();
        let quantised = quantised_names.contains(&n.name);
        for (k, i) in n.input.iter_mut().enumerate() {
            if act.contains_key(i.as_str()) {
                *i = dq(i);
            } else if quantised
                && const_dq.contains_key(i.as_str())
                && data_inputs_index(&n.op_type, k)
            {
                *i = const_dq[i.as_str()].clone();
            }
        }
        if let Some([w, b]) = conv_params.get(&n.name) {
            n.input[1] = w.clone();
            if !b.is_empty() {
                n.input[2] = b.clone();
            }
        }
        let outs = n.output.clone();
        nodes.push(n);
        for o in &outs {
            if let Some(p) = act.get(o) {
                nodes.extend(qdq_pair(o, *p, &mut new_inits));
            }
        }
    }
    // A graph output that was quantised is read through its dequantised copy.
    let outputs: HashSet<&String> = g.output.iter().map(|o| &o.name).collect();
    if let Some(o) = outputs.iter().find(|o| act.contains_key(o.as_str())) {
        bail!("graph output {o} lies inside a network; only a network's interior is quantised");
    }

    let used: HashSet<&String> = nodes.iter().flat_map(|n| n.input.iter()).collect();
    let mut initializer: Vec<TensorProto> = g
        .initializer
        .iter()
        .filter(|t| used.contains(&t.name))
        .cloned()
        .collect();
    initializer.extend(new_inits);
    let mut out = m.clone();
    let og = out.graph.mut_or_insert_default();
    og.node = nodes;
    og.initializer = initializer;
    Ok(out)
}

/// Whether input `k` of an operator of type `op` carries data (as [`data_inputs`]).
fn data_inputs_index(op: &str, k: usize) -> bool {
    match op {
        "Conv" => k == 0,
        _ => true,
    }
}
