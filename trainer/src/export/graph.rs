//! An ONNX graph builder that also records, for every node on a path from a differentiable input,
//! what its adjoint needs, and emits the reverse pass as more ONNX nodes (ONNX Runtime's inference
//! build has no autograd). Each adjoint is the textbook one, tested alone against tch autograd:
//! Conv → ConvTranspose with the same weights; GroupNorm → the normalised-input formula; SiLU →
//! g (s + x s (1 - s)); nearest 2x upsampling → 2x2 sum pooling; Concat → Slice; Slice ↔ Pad;
//! Mul → g times the other factor; ReduceMean → Expand / N; Reshape → Reshape back; Transpose →
//! Transpose back; MatMul → g B^T and A^T g; Softmax → y (g - sum(g y)).

use anyhow::{bail, Result};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto,
    TensorProto,
};
use std::collections::{HashMap, HashSet};

/// Static (C, H, W) of a 4-D value; the batch is dynamic.
pub type Chw = [i64; 3];

#[derive(Clone, Debug)]
enum Entry {
    Conv {
        x: String,
        w: String,
        stride: i64,
        pad: i64,
        k: i64,
        hw_in: [i64; 2],
        y: String,
    },
    Add {
        a: String,
        b: String,
        y: String,
    },
    Sub {
        a: String,
        b: String,
        y: String,
    },
    Mul {
        a: String,
        b: String,
        y: String,
    },
    Silu {
        x: String,
        s: String,
        y: String,
    },
    GroupNorm {
        x: String,
        xh: String,
        inv: String,
        gamma: String,
        groups: i64,
        y: String,
    },
    Upsample2 {
        x: String,
        y: String,
    },
    Concat {
        parts: Vec<(String, i64)>,
        y: String,
    },
    Channels {
        x: String,
        start: i64,
        len: i64,
        c: i64,
        y: String,
    },
    Crop {
        x: String,
        border: i64,
        y: String,
    },
    Pad {
        x: String,
        border: i64,
        y: String,
    },
    Shift {
        x: String,
        axis: i64,
        by: i64,
        periodic: bool,
        y: String,
    },
    PadWrap {
        x: String,
        border: i64,
        y: String,
    },
    ReduceMean {
        x: String,
        axes: Vec<i64>,
        count: i64,
        y: String,
    },
    Reshape {
        x: String,
        y: String,
    },
    /// Swap of the last two axes of a 3-D value.
    Transpose {
        x: String,
        y: String,
    },
    /// Batched product of two 3-D values.
    MatMul {
        a: String,
        b: String,
        y: String,
    },
    /// Softmax over the last axis.
    Softmax {
        x: String,
        y: String,
    },
    /// A constant matrix applied along H (`left`: y = M x) or W (y = x M^T); `adjoint` holds the
    /// n x n values the reverse pass multiplies by on the same side (M^T or M).
    MatConst {
        x: String,
        left: bool,
        adjoint: Vec<f32>,
        n: i64,
        y: String,
    },
    /// A node whose adjoint this exporter does not know: differentiating through it is an error.
    Opaque {
        op: String,
        y: String,
    },
}

impl Entry {
    fn output(&self) -> &str {
        match self {
            Entry::Conv { y, .. }
            | Entry::Add { y, .. }
            | Entry::Sub { y, .. }
            | Entry::Mul { y, .. }
            | Entry::Silu { y, .. }
            | Entry::GroupNorm { y, .. }
            | Entry::Upsample2 { y, .. }
            | Entry::Concat { y, .. }
            | Entry::Channels { y, .. }
            | Entry::Crop { y, .. }
            | Entry::Pad { y, .. }
            | Entry::Shift { y, .. }
            | Entry::PadWrap { y, .. }
            | Entry::ReduceMean { y, .. }
            | Entry::Reshape { y, .. }
            | Entry::Transpose { y, .. }
            | Entry::MatMul { y, .. }
            | Entry::Softmax { y, .. }
            | Entry::MatConst { y, .. }
            | Entry::Opaque { y, .. } => y,
        }
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::FLOAT.into(),
        f: v,
        ..Default::default()
    }
}
pub fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::STRING.into(),
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}
pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::TENSOR.into(),
        t: Some(t).into(),
        ..Default::default()
    }
}

pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    assert_eq!(
        dims.iter().product::<i64>() as usize,
        data.len(),
        "initializer {name}"
    );
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::FLOAT as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn tensor_i64(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![data.len() as i64],
        data_type: DataType::INT64 as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Builds one ONNX graph. Values are named strings; `diff` holds the values that depend on a
/// differentiable input, and only nodes touching them are recorded for the reverse pass.
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    tape: Vec<Entry>,
    diff: HashSet<String>,
    pub chw: HashMap<String, Chw>,
    counter: usize,
    consts_i64: HashMap<Vec<i64>, String>,
    consts_f32: HashMap<(Vec<i64>, Vec<u32>), String>,
    /// Names of the nodes written inside a network (`NetOps::network`): what reduced precision
    /// may touch.
    pub net_nodes: HashSet<String>,
    net_depth: usize,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    pub fn new() -> Self {
        Graph {
            nodes: Vec::new(),
            inits: Vec::new(),
            tape: Vec::new(),
            diff: HashSet::new(),
            chw: HashMap::new(),
            counter: 0,
            consts_i64: HashMap::new(),
            consts_f32: HashMap::new(),
            net_nodes: HashSet::new(),
            net_depth: 0,
        }
    }

    /// Declares `name` a differentiable input of shape (batch, C, H, W).
    pub fn input_diff(&mut self, name: &str, chw: Chw) {
        self.diff.insert(name.to_string());
        self.chw.insert(name.to_string(), chw);
    }

    pub fn is_diff(&self, v: &str) -> bool {
        self.diff.contains(v)
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// A float32 initializer.
    pub fn constant(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        // a matrix or plane used again (a march applies the same few hundreds of times) is
        // stored once; scalars stay apart, so that quantising one use leaves the others
        let key = (
            dims.to_vec(),
            data.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(),
        );
        if data.len() >= 16 {
            if let Some(n) = self.consts_f32.get(&key) {
                return n.clone();
            }
        }
        let name = self.fresh(hint);
        self.inits.push(tensor_f32(&name, dims, data));
        if data.len() >= 16 {
            self.consts_f32.insert(key, name.clone());
        }
        name
    }

    pub fn scalar(&mut self, v: f32) -> String {
        self.constant("c", &[1], &[v])
    }

    /// An int64 vector initializer, shared between uses.
    pub fn ints(&mut self, v: &[i64]) -> String {
        if let Some(n) = self.consts_i64.get(v) {
            return n.clone();
        }
        let name = self.fresh("i");
        self.inits.push(tensor_i64(&name, v));
        self.consts_i64.insert(v.to_vec(), name.clone());
        name
    }

    /// Opens or closes a network's nodes (nested networks count once).
    pub fn network(&mut self, open: bool) {
        if open {
            self.net_depth += 1;
        } else {
            self.net_depth = self.net_depth.saturating_sub(1);
        }
    }

    /// Emits a raw node with one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let y = self.fresh(&op.to_lowercase());
        if self.net_depth > 0 {
            self.net_nodes.insert(y.clone());
        }
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: y.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![y.clone()],
            attribute: attrs,
            ..Default::default()
        });
        y
    }

    fn record(&mut self, e: Entry, inputs: &[&str]) {
        if inputs.iter().any(|i| self.diff.contains(*i)) {
            self.diff.insert(e.output().to_string());
            self.tape.push(e);
        }
    }

    fn set_chw(&mut self, y: &str, chw: Option<Chw>) {
        if let Some(c) = chw {
            self.chw.insert(y.to_string(), c);
        }
    }

    /// x's shape for a value of the same batch: static [batch, C, H, W] where x's is known, so
    /// the batch keeps its symbol (see `reshape`), else read from x by Shape. `batch` is 0 for a
    /// Reshape target (x's first dimension) and 1 for an Expand (broadcast along it).
    fn shape_of(&mut self, x: &str, batch: i64) -> String {
        match self.chw.get(x).copied() {
            Some([c, h, w]) => self.ints(&[batch, c, h, w]),
            None => self.node("Shape", &[x], vec![]),
        }
    }

    /// A node on the differentiable path whose adjoint is unknown: fine in a forward-only graph,
    /// an error naming the operator if the reverse pass reaches it.
    pub fn opaque(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let y = self.node(op, inputs, attrs);
        let chw = inputs.first().and_then(|i| self.chw.get(*i)).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::Opaque {
                op: op.into(),
                y: y.clone(),
            },
            inputs,
        );
        y
    }

    /// k x k convolution with the given stride and symmetric padding (mirrors ONNX Conv's attributes).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        w: &str,
        b: Option<&str>,
        k: i64,
        stride: i64,
        pad: i64,
        cout: i64,
    ) -> String {
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[stride, stride]),
            attr_ints("pads", &[pad; 4]),
        ];
        let y = self.node("Conv", &inputs, attrs);
        let [_, h, wd] = self.chw[x];
        let out = |n: i64| (n + 2 * pad - k) / stride + 1;
        self.set_chw(&y, Some([cout, out(h), out(wd)]));
        self.record(
            Entry::Conv {
                x: x.into(),
                w: w.into(),
                stride,
                pad,
                k,
                hw_in: [h, wd],
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        let y = self.node("Add", &[a, b], vec![]);
        let chw = self.chw.get(a).or(self.chw.get(b)).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::Add {
                a: a.into(),
                b: b.into(),
                y: y.clone(),
            },
            &[a, b],
        );
        y
    }

    pub fn sub(&mut self, a: &str, b: &str) -> String {
        let y = self.node("Sub", &[a, b], vec![]);
        let chw = self.chw.get(a).or(self.chw.get(b)).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::Sub {
                a: a.into(),
                b: b.into(),
                y: y.clone(),
            },
            &[a, b],
        );
        y
    }

    pub fn mul(&mut self, a: &str, b: &str) -> String {
        let y = self.node("Mul", &[a, b], vec![]);
        let chw = self.chw.get(a).or(self.chw.get(b)).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::Mul {
                a: a.into(),
                b: b.into(),
                y: y.clone(),
            },
            &[a, b],
        );
        y
    }

    /// x * k for a scalar constant k.
    pub fn scale(&mut self, x: &str, k: f32) -> String {
        let c = self.scalar(k);
        self.mul(x, &c)
    }

    pub fn silu(&mut self, x: &str) -> String {
        let s = self.node("Sigmoid", &[x], vec![]);
        let y = self.node("Mul", &[x, &s], vec![]);
        let chw = self.chw.get(x).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::Silu {
                x: x.into(),
                s,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// GroupNorm (biased variance, as PyTorch). Forward-only graphs use the fast
    /// Reshape → InstanceNormalization → Reshape form; differentiable ones the decomposed form, whose
    /// intermediates the adjoint reuses.
    pub fn group_norm(
        &mut self,
        x: &str,
        gamma: &[f32],
        beta: &[f32],
        groups: i64,
        eps: f32,
    ) -> String {
        let c = gamma.len() as i64;
        let shape = self.shape_of(x, 0);
        let grouped = self.ints(&[0, groups, -1]);
        let xr = self.node("Reshape", &[x, &grouped], vec![]);
        let g = self.constant("gn_gamma", &[1, c, 1, 1], gamma);
        let b = self.constant("gn_beta", &[1, c, 1, 1], beta);
        let y = if !self.diff.contains(x) {
            let ones = self.constant("gn_one", &[groups], &vec![1.0; groups as usize]);
            let zeros = self.constant("gn_zero", &[groups], &vec![0.0; groups as usize]);
            let n = self.node(
                "InstanceNormalization",
                &[&xr, &ones, &zeros],
                vec![attr_float("epsilon", eps)],
            );
            let n = self.node("Reshape", &[&n, &shape], vec![]);
            let n = self.node("Mul", &[&n, &g], vec![]);
            self.node("Add", &[&n, &b], vec![])
        } else {
            let mean = self.node(
                "ReduceMean",
                &[&xr],
                vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)],
            );
            let xc = self.node("Sub", &[&xr, &mean], vec![]);
            let sq = self.node("Mul", &[&xc, &xc], vec![]);
            let var = self.node(
                "ReduceMean",
                &[&sq],
                vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)],
            );
            let e = self.scalar(eps);
            let ve = self.node("Add", &[&var, &e], vec![]);
            let sd = self.node("Sqrt", &[&ve], vec![]);
            let inv = self.node("Reciprocal", &[&sd], vec![]);
            let xh = self.node("Mul", &[&xc, &inv], vec![]);
            let n = self.node("Reshape", &[&xh, &shape], vec![]);
            let n = self.node("Mul", &[&n, &g], vec![]);
            let y = self.node("Add", &[&n, &b], vec![]);
            self.tape.push(Entry::GroupNorm {
                x: x.into(),
                xh,
                inv,
                gamma: g,
                groups,
                y: y.clone(),
            });
            self.diff.insert(y.clone());
            y
        };
        let chw = self.chw.get(x).copied();
        self.set_chw(&y, chw);
        y
    }

    pub fn upsample2(&mut self, x: &str) -> String {
        // nearest-neighbour as a depthwise transposed convolution with a 2 x 2 kernel of ones:
        // the result keeps x's batch symbol (Resize's shape inference gives it a new one, see
        // `reshape`), at 1 to 3 ms more per batch of 64 (an Expand of the same costs 40)
        let [c, h, w] = self.chw[x];
        let ones = self.constant("up2x2", &[c, 1, 2, 2], &vec![1.0; 4 * c as usize]);
        let attrs = vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_int("group", c),
        ];
        let y = self.node("ConvTranspose", &[x, &ones], attrs);
        self.set_chw(&y, Some([c, 2 * h, 2 * w]));
        self.record(
            Entry::Upsample2 {
                x: x.into(),
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    pub fn concat(&mut self, parts: &[&str]) -> String {
        let y = self.node("Concat", parts, vec![attr_int("axis", 1)]);
        let chws: Vec<Chw> = parts.iter().map(|p| self.chw[*p]).collect();
        let c = chws.iter().map(|s| s[0]).sum();
        self.set_chw(&y, Some([c, chws[0][1], chws[0][2]]));
        let e = Entry::Concat {
            parts: parts
                .iter()
                .zip(&chws)
                .map(|(p, s)| (p.to_string(), s[0]))
                .collect(),
            y: y.clone(),
        };
        self.record(e, parts);
        y
    }

    /// Channels [start, start + len) of x.
    pub fn channels(&mut self, x: &str, start: i64, len: i64) -> String {
        let (s, e, ax) = (
            self.ints(&[start]),
            self.ints(&[start + len]),
            self.ints(&[1]),
        );
        let y = self.node("Slice", &[x, &s, &e, &ax], vec![]);
        let [_, h, w] = self.chw[x];
        self.set_chw(&y, Some([len, h, w]));
        let c = self.chw[x][0];
        self.record(
            Entry::Channels {
                x: x.into(),
                start,
                len,
                c,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// The interior: `border` points cropped from every side of H and W.
    pub fn crop(&mut self, x: &str, border: i64) -> String {
        let [c, h, w] = self.chw[x];
        let (s, e, ax) = (
            self.ints(&[border, border]),
            self.ints(&[h - border, w - border]),
            self.ints(&[2, 3]),
        );
        let y = self.node("Slice", &[x, &s, &e, &ax], vec![]);
        self.set_chw(&y, Some([c, h - 2 * border, w - 2 * border]));
        self.record(
            Entry::Crop {
                x: x.into(),
                border,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Zero padding of `border` points on every side of H and W.
    pub fn pad(&mut self, x: &str, border: i64) -> String {
        let [c, h, w] = self.chw[x];
        let pads = self.ints(&[0, 0, border, border, 0, 0, border, border]);
        let y = self.node("Pad", &[x, &pads], vec![attr_str("mode", "constant")]);
        self.set_chw(&y, Some([c, h + 2 * border, w + 2 * border]));
        self.record(
            Entry::Pad {
                x: x.into(),
                border,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Wrap-around padding of `border` points on every side of H and W (a periodic field's
    /// neighbours across its edges): the last `border` rows before the first and the first after
    /// the last, then the same for columns.
    pub fn pad_wrap(&mut self, x: &str, border: i64) -> String {
        let [c, h, w] = self.chw[x];
        assert!(
            border > 0 && border <= h && border <= w,
            "a border within the field"
        );
        let mut v = x.to_string();
        for (axis, n) in [(2, h), (3, w)] {
            let before = self.slice_along(&v, axis, n - border, n);
            let after = self.slice_along(&v, axis, 0, border);
            v = self.node(
                "Concat",
                &[&before, &v, &after],
                vec![attr_int("axis", axis)],
            );
        }
        self.set_chw(&v, Some([c, h + 2 * border, w + 2 * border]));
        self.record(
            Entry::PadWrap {
                x: x.into(),
                border,
                y: v.clone(),
            },
            &[x],
        );
        v
    }

    /// The Slice node of points start .. end of x along one axis (not recorded: a part of the
    /// operations that use it).
    fn slice_along(&mut self, x: &str, axis: i64, start: i64, end: i64) -> String {
        // the axis's constant first: the order the graphs' constants were always named in
        let ax = self.ints(&[axis]);
        let (s, e) = (self.ints(&[start]), self.ints(&[end]));
        self.node("Slice", &[x, &s, &e, &ax], vec![])
    }

    /// The ONNX nodes of a shift by +-1 along `axis` (2 or 3): the kept part of x, and at the other
    /// end the wrapped point or a zero.
    fn shift_nodes(&mut self, x: &str, axis: i64, by: i64, periodic: bool) -> String {
        let n = self.chw[x][(axis - 1) as usize];
        // by = 1: y = [x[n-1] or 0, x[0..n-1]]; by = -1: y = [x[1..n], x[0] or 0]
        let (kept, wrapped) = if by == 1 {
            (
                self.slice_along(x, axis, 0, n - 1),
                self.slice_along(x, axis, n - 1, n),
            )
        } else {
            (
                self.slice_along(x, axis, 1, n),
                self.slice_along(x, axis, 0, 1),
            )
        };
        let edge = if periodic {
            wrapped
        } else {
            let zero = self.scalar(0.0);
            self.node("Mul", &[&wrapped, &zero], vec![])
        };
        let parts = if by == 1 {
            [&edge, &kept]
        } else {
            [&kept, &edge]
        };
        self.node(
            "Concat",
            &[parts[0], parts[1]],
            vec![attr_int("axis", axis)],
        )
    }

    /// y[.., i] = x[.., i - by] along C (1), H (2) or W (3), periodic or zero-filled.
    pub fn shift(&mut self, x: &str, axis: i64, by: i64, periodic: bool) -> String {
        assert!((by == 1 || by == -1) && (1..=3).contains(&axis));
        let y = self.shift_nodes(x, axis, by, periodic);
        let chw = self.chw[x];
        self.set_chw(&y, Some(chw));
        self.record(
            Entry::Shift {
                x: x.into(),
                axis,
                by,
                periodic,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Mean over `axes` of a 4-D value, dropping them.
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64]) -> String {
        let y = self.node(
            "ReduceMean",
            &[x],
            vec![attr_ints("axes", axes), attr_int("keepdims", 0)],
        );
        let chw = self.chw[x];
        let count = axes.iter().map(|&a| chw[(a - 1) as usize]).product();
        self.record(
            Entry::ReduceMean {
                x: x.into(),
                axes: axes.to_vec(),
                count,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Reshape to `dims` (-1: the batch). A 4-D result gets its (C, H, W) recorded.
    pub fn reshape(&mut self, x: &str, dims: &[i64]) -> String {
        // A leading -1 that stands for the batch (the other dimensions hold all of x's other
        // entries) is written 0, "x's first dimension": ONNX Runtime then knows the result shares
        // x's batch, where -1 gives it a new symbol each time, and its memory planner, comparing
        // symbolic shapes, slows quadratically in their number (9 s to load a marched graph).
        let mut dims = dims.to_vec();
        if dims.first() == Some(&-1) {
            if let Some(c) = self.chw.get(x) {
                if c.iter().product::<i64>() == dims[1..].iter().product::<i64>() {
                    dims[0] = 0;
                }
            }
        }
        let dims = &dims[..];
        let shape = self.ints(dims);
        let y = self.node("Reshape", &[x, &shape], vec![]);
        if let [_, c, h, w] = dims {
            self.set_chw(&y, Some([*c, *h, *w]));
        }
        self.record(
            Entry::Reshape {
                x: x.into(),
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Swaps the last two axes of a 3-D value.
    pub fn transpose(&mut self, x: &str) -> String {
        let y = self.node("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 1])]);
        self.record(
            Entry::Transpose {
                x: x.into(),
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// A constant n x n matrix `m` (row-major) applied along H (`axis` 2) or W (3) of a 4-D value:
    /// [`FieldOps::matmul_axis`](crate::pde::FieldOps::matmul_axis).
    pub fn matmul_const(&mut self, x: &str, axis: i64, m: &[f64]) -> String {
        assert!(axis == 2 || axis == 3, "matmul along H (2) or W (3)");
        let n = crate::pde::ops::matrix_side(m.len());
        let at = |i: i64, j: i64| m[(i * n + j) as usize] as f32;
        let plain: Vec<f32> = (0..n * n).map(|p| at(p / n, p % n)).collect();
        let transposed: Vec<f32> = (0..n * n).map(|p| at(p % n, p / n)).collect();
        let left = axis == 2;
        let (fwd, adjoint) = if left {
            (plain, transposed)
        } else {
            (transposed, plain)
        };
        let c = self.constant("matrix", &[n, n], &fwd);
        let y = if left {
            self.node("MatMul", &[&c, x], vec![])
        } else {
            self.node("MatMul", &[x, &c], vec![])
        };
        let chw = self.chw.get(x).copied();
        self.set_chw(&y, chw);
        self.record(
            Entry::MatConst {
                x: x.into(),
                left,
                adjoint,
                n,
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Batched matrix product of two 3-D values.
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        let y = self.node("MatMul", &[a, b], vec![]);
        self.record(
            Entry::MatMul {
                a: a.into(),
                b: b.into(),
                y: y.clone(),
            },
            &[a, b],
        );
        y
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: &str) -> String {
        let y = self.node("Softmax", &[x], vec![attr_int("axis", -1)]);
        self.record(
            Entry::Softmax {
                x: x.into(),
                y: y.clone(),
            },
            &[x],
        );
        y
    }

    /// Emits the reverse pass from `y` (seed gradient `seed`) and returns the gradient of `wrt`.
    pub fn backward(&mut self, y: &str, seed: &str, wrt: &str) -> Result<String> {
        let mut grads: HashMap<String, Vec<String>> =
            HashMap::from([(y.to_string(), vec![seed.to_string()])]);
        let tape = std::mem::take(&mut self.tape);
        for e in tape.iter().rev() {
            let Some(gs) = grads.remove(e.output()) else {
                continue;
            };
            let g = self.sum(&gs);
            let mut push = |this: &mut Self, v: &str, gv: String| {
                if this.diff.contains(v) {
                    grads.entry(v.to_string()).or_default().push(gv);
                }
            };
            match e {
                Entry::Conv {
                    x,
                    w,
                    stride,
                    pad,
                    k,
                    hw_in,
                    ..
                } => {
                    let ho = (hw_in[0] + 2 * pad - k) / stride + 1;
                    let op = hw_in[0] - ((ho - 1) * stride - 2 * pad + k);
                    let attrs = vec![
                        attr_ints("kernel_shape", &[*k, *k]),
                        attr_ints("strides", &[*stride, *stride]),
                        attr_ints("pads", &[*pad; 4]),
                        attr_ints("output_padding", &[op, op]),
                    ];
                    let gx = self.node("ConvTranspose", &[&g, w], attrs);
                    push(self, x, gx);
                }
                Entry::Add { a, b, .. } => {
                    push(self, a, g.clone());
                    push(self, b, g);
                }
                Entry::Sub { a, b, .. } => {
                    push(self, a, g.clone());
                    if self.diff.contains(b) {
                        let n = self.node("Neg", &[&g], vec![]);
                        push(self, b, n);
                    }
                }
                Entry::Mul { a, b, .. } => {
                    if self.diff.contains(a) {
                        let ga = self.node("Mul", &[&g, b], vec![]);
                        push(self, a, ga);
                    }
                    if self.diff.contains(b) {
                        let gb = self.node("Mul", &[&g, a], vec![]);
                        push(self, b, gb);
                    }
                }
                Entry::Silu { x, s, .. } => {
                    // g * (s + x s (1 - s)) = g * s * (1 + x (1 - s))
                    let one = self.scalar(1.0);
                    let oms = self.node("Sub", &[&one, s], vec![]);
                    let t = self.node("Mul", &[x, &oms], vec![]);
                    let t = self.node("Add", &[&t, &one], vec![]);
                    let t = self.node("Mul", &[s, &t], vec![]);
                    let gx = self.node("Mul", &[&g, &t], vec![]);
                    push(self, x, gx);
                }
                Entry::GroupNorm {
                    x,
                    xh,
                    inv,
                    gamma,
                    groups,
                    ..
                } => {
                    let gh = self.node("Mul", &[&g, gamma], vec![]);
                    let grouped = self.ints(&[0, *groups, -1]);
                    let gh = self.node("Reshape", &[&gh, &grouped], vec![]);
                    let mean_attrs = || vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)];
                    let m1 = self.node("ReduceMean", &[&gh], mean_attrs());
                    let p = self.node("Mul", &[&gh, xh], vec![]);
                    let m2 = self.node("ReduceMean", &[&p], mean_attrs());
                    let t = self.node("Sub", &[&gh, &m1], vec![]);
                    let u = self.node("Mul", &[xh, &m2], vec![]);
                    let t = self.node("Sub", &[&t, &u], vec![]);
                    let t = self.node("Mul", &[&t, inv], vec![]);
                    let shape = self.shape_of(x, 0);
                    let gx = self.node("Reshape", &[&t, &shape], vec![]);
                    push(self, x, gx);
                }
                Entry::Upsample2 { x, .. } => {
                    let c = self.chw[x][0];
                    let ones = self.constant("sum2x2", &[c, 1, 2, 2], &vec![1.0; 4 * c as usize]);
                    let attrs = vec![
                        attr_ints("kernel_shape", &[2, 2]),
                        attr_ints("strides", &[2, 2]),
                        attr_int("group", c),
                    ];
                    let gx = self.node("Conv", &[&g, &ones], attrs);
                    push(self, x, gx);
                }
                Entry::Channels {
                    x, start, len, c, ..
                } => {
                    // Put g back in its place among zero channels.
                    let (start, len, c) = (*start, *len, *c);
                    let pads = self.ints(&[0, start, 0, 0, 0, c - start - len, 0, 0]);
                    let gx = self.node("Pad", &[&g, &pads], vec![attr_str("mode", "constant")]);
                    push(self, x, gx);
                }
                Entry::Concat { parts, .. } => {
                    let mut start = 0;
                    for (p, c) in parts {
                        let (s, en, ax) = (
                            self.ints(&[start]),
                            self.ints(&[start + c]),
                            self.ints(&[1]),
                        );
                        if self.diff.contains(p) {
                            let gp = self.node("Slice", &[&g, &s, &en, &ax], vec![]);
                            push(self, p, gp);
                        }
                        start += c;
                    }
                }
                Entry::Crop { x, border, .. } => {
                    let b = *border;
                    let pads = self.ints(&[0, 0, b, b, 0, 0, b, b]);
                    let gx = self.node("Pad", &[&g, &pads], vec![attr_str("mode", "constant")]);
                    push(self, x, gx);
                }
                Entry::Pad { x, border, .. } => {
                    let [_, h, w] = self.chw[x];
                    let b = *border;
                    let (s, en, ax) = (
                        self.ints(&[b, b]),
                        self.ints(&[h + b, w + b]),
                        self.ints(&[2, 3]),
                    );
                    let gx = self.node("Slice", &[&g, &s, &en, &ax], vec![]);
                    push(self, x, gx);
                }
                Entry::Shift {
                    x,
                    axis,
                    by,
                    periodic,
                    ..
                } => {
                    // a shift is a (partial) permutation: its adjoint is the opposite shift
                    self.chw.insert(g.clone(), self.chw[x]);
                    let gx = self.shift_nodes(&g, *axis, -by, *periodic);
                    push(self, x, gx);
                }
                Entry::PadWrap { x, border, .. } => {
                    // each padded point is a copy of one of x's: fold the borders' gradients back
                    // onto the rows (then columns) they copied, W first (the forward's last)
                    let [_, h, w] = self.chw[x];
                    let b = *border;
                    let mut gv = g;
                    for (axis, n) in [(3, w), (2, h)] {
                        let inner = self.slice_along(&gv, axis, b, n + b);
                        let before = self.slice_along(&gv, axis, 0, b);
                        let after = self.slice_along(&gv, axis, n + b, n + 2 * b);
                        // `before` copied x's last b points, `after` its first b
                        let place = |this: &mut Self, v: &str, lead: i64, trail: i64| {
                            let mut pads = [0i64; 8];
                            pads[axis as usize] = lead;
                            pads[4 + axis as usize] = trail;
                            let pads = this.ints(&pads);
                            this.node("Pad", &[v, &pads], vec![attr_str("mode", "constant")])
                        };
                        let before = place(self, &before, n - b, 0);
                        let after = place(self, &after, 0, n - b);
                        let sum = self.node("Add", &[&inner, &before], vec![]);
                        gv = self.node("Add", &[&sum, &after], vec![]);
                    }
                    push(self, x, gv);
                }
                Entry::ReduceMean { x, axes, count, .. } => {
                    let ax = self.ints(axes);
                    let un = self.node("Unsqueeze", &[&g, &ax], vec![]);
                    let shape = self.shape_of(x, 1);
                    let ex = self.node("Expand", &[&un, &shape], vec![]);
                    let k = self.scalar(1.0 / *count as f32);
                    let gx = self.node("Mul", &[&ex, &k], vec![]);
                    push(self, x, gx);
                }
                Entry::Reshape { x, .. } => {
                    let shape = self.shape_of(x, 0);
                    let gx = self.node("Reshape", &[&g, &shape], vec![]);
                    push(self, x, gx);
                }
                Entry::Transpose { x, .. } => {
                    let gx = self.node("Transpose", &[&g], vec![attr_ints("perm", &[0, 2, 1])]);
                    push(self, x, gx);
                }
                Entry::MatMul { a, b, .. } => {
                    let t = |this: &mut Self, v: &str| {
                        this.node("Transpose", &[v], vec![attr_ints("perm", &[0, 2, 1])])
                    };
                    if self.diff.contains(a) {
                        let bt = t(self, b);
                        let ga = self.node("MatMul", &[&g, &bt], vec![]);
                        push(self, a, ga);
                    }
                    if self.diff.contains(b) {
                        let at = t(self, a);
                        let gb = self.node("MatMul", &[&at, &g], vec![]);
                        push(self, b, gb);
                    }
                }
                Entry::MatConst {
                    x,
                    left,
                    adjoint,
                    n,
                    ..
                } => {
                    let c = self.constant("matrix_adjoint", &[*n, *n], adjoint);
                    let gx = if *left {
                        self.node("MatMul", &[&c, &g], vec![])
                    } else {
                        self.node("MatMul", &[&g, &c], vec![])
                    };
                    push(self, x, gx);
                }
                Entry::Softmax { x, y } => {
                    let gy = self.node("Mul", &[&g, y], vec![]);
                    let last = self.ints(&[-1]);
                    let s = self.node("ReduceSum", &[&gy, &last], vec![attr_int("keepdims", 1)]);
                    let d = self.node("Sub", &[&g, &s], vec![]);
                    let gx = self.node("Mul", &[y, &d], vec![]);
                    push(self, x, gx);
                }
                Entry::Opaque { op, .. } => {
                    bail!("cannot differentiate through ONNX operator '{op}': the exporter has no adjoint for it");
                }
            }
        }
        let gs = grads.remove(wrt).unwrap_or_default();
        if gs.is_empty() {
            bail!("'{wrt}' does not influence '{y}': no gradient");
        }
        Ok(self.sum(&gs))
    }

    fn sum(&mut self, gs: &[String]) -> String {
        if gs.len() == 1 {
            return gs[0].clone();
        }
        let refs: Vec<&str> = gs.iter().map(|s| s.as_str()).collect();
        self.node("Sum", &refs, vec![])
    }

    pub fn into_proto(self, name: &str) -> GraphProto {
        GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.inits,
            ..Default::default()
        }
    }

    /// Renames the value `from` to `to` everywhere (graph outputs need fixed names).
    pub fn rename(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for v in n.input.iter_mut().chain(n.output.iter_mut()) {
                if v == from {
                    *v = to.to_string();
                }
            }
        }
        if let Some(c) = self.chw.remove(from) {
            self.chw.insert(to.to_string(), c);
        }
    }
}
