//! What the network needs of a backend beyond the field operations ([`FieldOps`]: sums, products,
//! affine maps). The U-Net (`UNet::apply`), the EDM preconditioning (`Edm::precondition`) and the
//! amortised encoder are written once over [`NetOps`]; [`Tch`] runs them on tch tensors (training,
//! sampling, distillation) and the exporter's folding graph builder (`export::fold::Folding`)
//! writes them as ONNX nodes, so the exported student cannot drift from the trained one.

use crate::pde::ops::{FieldOps, Tch};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Elementwise functions the preconditioning and the noise embedding use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Square,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Log,
    Exp,
    Cos,
    Sin,
    /// -1, 0 or 1: where a two-phase field is projected onto its phases (`physics::phases`).
    Sign,
}

pub trait NetOps: FieldOps {
    /// Another reference to `x` (no copy of the data).
    fn dup(&mut self, x: &Self::V) -> Self::V;
    /// A constant of the network (frequencies of the embedding, a noise level).
    fn constant(&mut self, t: &Tensor) -> Self::V;
    /// (C, H, W) of a 4-D value, or the trailing dimensions of a lower-rank one.
    fn chw(&mut self, x: &Self::V) -> Vec<i64>;
    /// k x k convolution with "same" padding (k / 2) at `stride`.
    fn conv(&mut self, x: &Self::V, c: &nn::Conv2D, stride: i64) -> Self::V;
    /// The same convolution of a field periodic in H and W: padded by wrapping round its edges,
    /// not with zeros.
    fn conv_wrapped(&mut self, x: &Self::V, c: &nn::Conv2D, stride: i64) -> Self::V;
    fn linear(&mut self, x: &Self::V, l: &nn::Linear) -> Self::V;
    fn group_norm(&mut self, x: &Self::V, n: &nn::GroupNorm) -> Self::V;
    fn silu(&mut self, x: &Self::V) -> Self::V;
    fn unary(&mut self, x: &Self::V, f: Unary) -> Self::V;
    /// Concatenation along axis 1 (channels).
    fn concat(&mut self, parts: &[&Self::V]) -> Self::V;
    /// Channels start .. start + len of a 4-D value.
    fn channels(&mut self, x: &Self::V, start: i64, len: i64) -> Self::V;
    /// Nearest-neighbour 2x upsampling of a 4-D value.
    fn upsample2(&mut self, x: &Self::V) -> Self::V;
    /// Reshape; -1 in `dims` stands for the batch.
    fn reshape(&mut self, x: &Self::V, dims: &[i64]) -> Self::V;
    /// Batched matrix product of 3-D values.
    fn matmul(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// Swaps the last two axes of a 3-D value.
    fn transpose(&mut self, x: &Self::V) -> Self::V;
    /// Softmax over the last axis.
    fn softmax(&mut self, x: &Self::V) -> Self::V;
    /// Opens (`true`) or closes the nodes of one network (`UNet::apply`). A backend that writes
    /// graphs records them, so that a reduced-precision export touches the networks only, never
    /// the physics or the preconditioning around them; the others ignore it.
    fn network(&mut self, _open: bool) {}
}

/// The network on tch tensors.
impl NetOps for Tch {
    fn dup(&mut self, x: &Tensor) -> Tensor {
        x.shallow_clone()
    }
    fn constant(&mut self, t: &Tensor) -> Tensor {
        t.shallow_clone()
    }
    fn chw(&mut self, x: &Tensor) -> Vec<i64> {
        x.size()[1..].to_vec()
    }
    fn conv(&mut self, x: &Tensor, c: &nn::Conv2D, stride: i64) -> Tensor {
        let k = c.ws.size()[2];
        x.conv2d(
            &c.ws,
            c.bs.as_ref(),
            [stride, stride],
            [k / 2, k / 2],
            [1, 1],
            1,
        )
    }
    fn conv_wrapped(&mut self, x: &Tensor, c: &nn::Conv2D, stride: i64) -> Tensor {
        let p = c.ws.size()[2] / 2;
        let x = x.pad([p, p, p, p], "circular", None);
        x.conv2d(&c.ws, c.bs.as_ref(), [stride, stride], [0, 0], [1, 1], 1)
    }
    fn linear(&mut self, x: &Tensor, l: &nn::Linear) -> Tensor {
        l.forward(x)
    }
    fn group_norm(&mut self, x: &Tensor, n: &nn::GroupNorm) -> Tensor {
        n.forward(x)
    }
    fn silu(&mut self, x: &Tensor) -> Tensor {
        x.silu()
    }
    fn unary(&mut self, x: &Tensor, f: Unary) -> Tensor {
        match f {
            Unary::Square => x.square(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => x.rsqrt(),
            Unary::Reciprocal => x.reciprocal(),
            Unary::Log => x.log(),
            Unary::Exp => x.exp(),
            Unary::Cos => x.cos(),
            Unary::Sin => x.sin(),
            Unary::Sign => x.sign(),
        }
    }
    fn concat(&mut self, parts: &[&Tensor]) -> Tensor {
        Tensor::cat(parts, 1)
    }
    fn channels(&mut self, x: &Tensor, start: i64, len: i64) -> Tensor {
        x.narrow(1, start, len)
    }
    fn upsample2(&mut self, x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.size4().expect("a 4-D field");
        x.upsample_nearest2d([2 * h, 2 * w], None, None)
    }
    fn reshape(&mut self, x: &Tensor, dims: &[i64]) -> Tensor {
        x.reshape(dims)
    }
    fn matmul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a.matmul(b)
    }
    fn transpose(&mut self, x: &Tensor) -> Tensor {
        x.transpose(-2, -1)
    }
    fn softmax(&mut self, x: &Tensor) -> Tensor {
        x.softmax(-1, Kind::Float)
    }
}
