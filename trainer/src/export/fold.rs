//! The network written as ONNX nodes: [`NetOps`] over the graph builder, folding constants.
//! A value is either a graph value or a tch tensor known at export time; an operation whose inputs
//! are all known is computed by [`Tch`] (the same code that trains), the rest become nodes with
//! the known inputs as initializers. The student's noise level is fixed, so its preconditioning
//! coefficients and noise embedding fold to constants and only the field path reaches the graph.

use super::graph::Graph;
use crate::nets::{NetOps, Unary};
use crate::pde::ops::{FieldOps, Tch};
use crate::util::tensor::to_f32 as values;
use tch::{nn, Tensor};

pub enum Gv {
    /// A value of the graph, by name.
    Node(String),
    /// A value known at export time.
    Const(Tensor),
}

pub struct Folding<'a> {
    pub g: &'a mut Graph,
    /// GroupNorm's epsilon (tch's default).
    pub gn_eps: f32,
}

impl<'a> Folding<'a> {
    pub fn new(g: &'a mut Graph) -> Self {
        Folding { g, gn_eps: 1e-5 }
    }

    /// The graph name of a value, writing a known one as an initializer.
    pub fn name(&mut self, v: &Gv) -> String {
        match v {
            Gv::Node(n) => n.clone(),
            Gv::Const(t) => self.g.constant("k", &t.size(), &values(t)),
        }
    }

    fn unary_node(&mut self, x: &str, f: Unary) -> String {
        match f {
            Unary::Square => self.g.opaque("Mul", &[x, x], vec![]),
            Unary::Sqrt => self.g.opaque("Sqrt", &[x], vec![]),
            Unary::Rsqrt => {
                let s = self.g.opaque("Sqrt", &[x], vec![]);
                self.g.opaque("Reciprocal", &[&s], vec![])
            }
            Unary::Reciprocal => self.g.opaque("Reciprocal", &[x], vec![]),
            Unary::Log => self.g.opaque("Log", &[x], vec![]),
            Unary::Exp => self.g.opaque("Exp", &[x], vec![]),
            Unary::Cos => self.g.opaque("Cos", &[x], vec![]),
            Unary::Sin => self.g.opaque("Sin", &[x], vec![]),
            Unary::Sign => self.g.opaque("Sign", &[x], vec![]),
        }
    }
}

fn known(v: &Gv) -> Option<&Tensor> {
    match v {
        Gv::Const(t) => Some(t),
        Gv::Node(_) => None,
    }
}

/// The field operations, folding known values; on graph values, the graph's own ([`Graph`]'s
/// [`FieldOps`]), so a function written over [`FieldOps`] emits the same nodes through either.
impl FieldOps for Folding<'_> {
    type V = Gv;

    fn channel(&mut self, x: &Gv, c: i64) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.channel(t, c)),
            Gv::Node(n) => Gv::Node(FieldOps::channel(self.g, n, c)),
        }
    }
    fn conv3(&mut self, x: &Gv, k: &[f64; 9]) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.conv3(t, k)),
            Gv::Node(n) => Gv::Node(self.g.conv3(n, k)),
        }
    }
    fn crop1(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.crop1(t)),
            Gv::Node(n) => Gv::Node(self.g.crop1(n)),
        }
    }
    fn pad1(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.pad1(t)),
            Gv::Node(n) => Gv::Node(self.g.pad1(n)),
        }
    }
    fn matmul_axis(&mut self, x: &Gv, axis: i64, m: &[f64]) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.matmul_axis(t, axis, m)),
            Gv::Node(n) => Gv::Node(self.g.matmul_axis(n, axis, m)),
        }
    }
    fn affine_plane(&mut self, x: &Gv, k: &[f64], b: &[f64]) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.affine_plane(t, k, b)),
            Gv::Node(n) => Gv::Node(self.g.affine_plane(n, k, b)),
        }
    }
    fn shift(&mut self, x: &Gv, axis: i64, by: i64, periodic: bool) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.shift(t, axis, by, periodic)),
            Gv::Node(n) => Gv::Node(FieldOps::shift(self.g, n, axis, by, periodic)),
        }
    }

    fn add(&mut self, a: &Gv, b: &Gv) -> Gv {
        if let (Some(x), Some(y)) = (known(a), known(b)) {
            return Gv::Const(Tch.add(x, y));
        }
        let (a, b) = (self.name(a), self.name(b));
        Gv::Node(self.g.add(&a, &b))
    }
    fn mul(&mut self, a: &Gv, b: &Gv) -> Gv {
        if let (Some(x), Some(y)) = (known(a), known(b)) {
            return Gv::Const(Tch.mul(x, y));
        }
        // a known factor of one element is a scalar: one initializer of shape [1]
        let (node, other) = match (a, b) {
            (Gv::Node(n), o) | (o, Gv::Node(n)) => (n, o),
            _ => unreachable!("both known: folded above"),
        };
        if let Some(k) = known(other).filter(|t| t.numel() == 1) {
            let k = values(k)[0];
            return Gv::Node(self.g.scale(node, k));
        }
        let (a, b) = (self.name(a), self.name(b));
        Gv::Node(self.g.mul(&a, &b))
    }
    fn affine(&mut self, x: &Gv, k: f64, c: f64) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.affine(t, k, c)),
            Gv::Node(n) => {
                let y = if k == 1.0 {
                    n.clone()
                } else {
                    self.g.scale(n, k as f32)
                };
                if c == 0.0 {
                    return Gv::Node(y);
                }
                let c = self.g.scalar(c as f32);
                Gv::Node(self.g.add(&y, &c))
            }
        }
    }
    fn sub(&mut self, a: &Gv, b: &Gv) -> Gv {
        if let (Some(x), Some(y)) = (known(a), known(b)) {
            return Gv::Const(Tch.sub(x, y));
        }
        let (a, b) = (self.name(a), self.name(b));
        Gv::Node(FieldOps::sub(self.g, &a, &b))
    }
    fn affine_channels(&mut self, x: &Gv, k: &[f64], b: &[f64]) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.affine_channels(t, k, b)),
            Gv::Node(n) => Gv::Node(self.g.affine_channels(n, k, b)),
        }
    }
    fn mean_chw(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.mean_chw(t)),
            Gv::Node(n) => Gv::Node(self.g.mean_chw(n)),
        }
    }
}

impl Folding<'_> {
    /// A Conv node of `c`'s weights on the named value `x`, padded by `pad` zeros on every side.
    fn conv_node(&mut self, x: &str, c: &nn::Conv2D, stride: i64, pad: i64) -> Gv {
        let ws = c.ws.size();
        let (cout, k) = (ws[0], ws[2]);
        let w = self.g.constant("w", &ws, &values(&c.ws));
        let b =
            c.bs.as_ref()
                .map(values)
                .unwrap_or_else(|| vec![0.0; cout as usize]);
        let b = self.g.constant("b", &[cout], &b);
        Gv::Node(self.g.conv(x, &w, Some(&b), k, stride, pad, cout))
    }
}

/// The network's operations, folding known values.
impl NetOps for Folding<'_> {
    fn network(&mut self, open: bool) {
        self.g.network(open);
    }
    fn dup(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Node(n) => Gv::Node(n.clone()),
            Gv::Const(t) => Gv::Const(t.shallow_clone()),
        }
    }
    fn constant(&mut self, t: &Tensor) -> Gv {
        Gv::Const(t.shallow_clone())
    }
    fn chw(&mut self, x: &Gv) -> Vec<i64> {
        match x {
            Gv::Const(t) => t.size()[1..].to_vec(),
            Gv::Node(n) => self.g.chw[n].to_vec(),
        }
    }
    fn conv(&mut self, x: &Gv, c: &nn::Conv2D, stride: i64) -> Gv {
        if let Some(t) = known(x) {
            return Gv::Const(Tch.conv(t, c, stride));
        }
        let x = self.name(x);
        self.conv_node(&x, c, stride, c.ws.size()[2] / 2)
    }
    fn conv_wrapped(&mut self, x: &Gv, c: &nn::Conv2D, stride: i64) -> Gv {
        if let Some(t) = known(x) {
            return Gv::Const(Tch.conv_wrapped(t, c, stride));
        }
        let (x, p) = (self.name(x), c.ws.size()[2] / 2);
        let padded = if p > 0 { self.g.pad_wrap(&x, p) } else { x };
        self.conv_node(&padded, c, stride, 0)
    }
    fn linear(&mut self, x: &Gv, l: &nn::Linear) -> Gv {
        if let Some(t) = known(x) {
            return Gv::Const(Tch.linear(t, l));
        }
        // Not on any exported path (the embedding folds): forward-only if it ever is.
        let x = self.name(x);
        let w = self.g.constant("w", &l.ws.size(), &values(&l.ws));
        let mut ins = vec![x.as_str(), w.as_str()];
        let b =
            l.bs.as_ref()
                .map(|b| self.g.constant("b", &b.size(), &values(b)));
        if let Some(b) = &b {
            ins.push(b);
        }
        Gv::Node(
            self.g
                .opaque("Gemm", &ins, vec![super::graph::attr_int("transB", 1)]),
        )
    }
    fn group_norm(&mut self, x: &Gv, n: &nn::GroupNorm) -> Gv {
        if let Some(t) = known(x) {
            return Gv::Const(Tch.group_norm(t, n));
        }
        let gamma = values(n.ws.as_ref().expect("GroupNorm with affine weights"));
        let beta = values(n.bs.as_ref().expect("GroupNorm with affine bias"));
        let x = self.name(x);
        Gv::Node(
            self.g
                .group_norm(&x, &gamma, &beta, n.num_groups, self.gn_eps),
        )
    }
    fn silu(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.silu(t)),
            Gv::Node(n) => Gv::Node(self.g.silu(n)),
        }
    }
    fn unary(&mut self, x: &Gv, f: Unary) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.unary(t, f)),
            Gv::Node(n) => Gv::Node(self.unary_node(n, f)),
        }
    }
    fn concat(&mut self, parts: &[&Gv]) -> Gv {
        if let Some(ts) = parts.iter().map(|p| known(p)).collect::<Option<Vec<_>>>() {
            return Gv::Const(Tch.concat(&ts));
        }
        let names: Vec<String> = parts.iter().map(|p| self.name(p)).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        Gv::Node(self.g.concat(&refs))
    }
    fn channels(&mut self, x: &Gv, start: i64, len: i64) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.channels(t, start, len)),
            Gv::Node(n) => Gv::Node(self.g.channels(n, start, len)),
        }
    }
    fn upsample2(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.upsample2(t)),
            Gv::Node(n) => Gv::Node(self.g.upsample2(n)),
        }
    }
    fn reshape(&mut self, x: &Gv, dims: &[i64]) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.reshape(t, dims)),
            Gv::Node(n) => Gv::Node(self.g.reshape(n, dims)),
        }
    }
    fn matmul(&mut self, a: &Gv, b: &Gv) -> Gv {
        if let (Some(x), Some(y)) = (known(a), known(b)) {
            return Gv::Const(Tch.matmul(x, y));
        }
        let (a, b) = (self.name(a), self.name(b));
        Gv::Node(self.g.matmul(&a, &b))
    }
    fn transpose(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.transpose(t)),
            Gv::Node(n) => Gv::Node(self.g.transpose(n)),
        }
    }
    fn softmax(&mut self, x: &Gv) -> Gv {
        match x {
            Gv::Const(t) => Gv::Const(Tch.softmax(t)),
            Gv::Node(n) => Gv::Node(self.g.softmax(n)),
        }
    }
}
