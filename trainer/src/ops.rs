//! The field operations that the PDE residual and the inference loss are written in, once, for two
//! back-ends: tch tensors (training, evaluation) and ONNX graph emission (export). A function generic
//! over [`FieldOps`] is one definition that both the trainer and the exported artifact execute.

use tch::Tensor;

/// 3x3 stencils, row-major: the 5-point Laplacian and the 4-neighbour sum.
pub const LAPLACE_KERNEL: [f64; 9] = [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0];
pub const CROSS_KERNEL: [f64; 9] = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];

pub trait FieldOps {
    type V;
    /// Channel `c` of x [B, C, H, W] as [B, 1, H, W].
    fn channel(&mut self, x: &Self::V, c: i64) -> Self::V;
    /// Valid (unpadded) 3x3 convolution of a one-channel field with a fixed row-major kernel.
    fn conv3(&mut self, x: &Self::V, k: &[f64; 9]) -> Self::V;
    /// Drops one point from each side of H and W.
    fn crop1(&mut self, x: &Self::V) -> Self::V;
    /// Adds one zero point on each side of H and W.
    fn pad1(&mut self, x: &Self::V) -> Self::V;
    fn add(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    fn sub(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    fn mul(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// x * k + c for scalars.
    fn affine(&mut self, x: &Self::V, k: f64, c: f64) -> Self::V;
    /// x * k[c] + b[c] per channel.
    fn affine_channels(&mut self, x: &Self::V, k: &[f64], b: &[f64]) -> Self::V;
    /// Per-sample mean over C, H and W: [B].
    fn mean_chw(&mut self, x: &Self::V) -> Self::V;
}

/// The tch back-end (stateless).
pub struct Tch;

fn kernel3(k: &[f64; 9], like: &Tensor) -> Tensor {
    Tensor::from_slice(k)
        .to_kind(like.kind())
        .to_device(like.device())
        .reshape([1, 1, 3, 3])
}

fn per_channel(v: &[f64], like: &Tensor) -> Tensor {
    Tensor::from_slice(v)
        .to_kind(like.kind())
        .to_device(like.device())
        .reshape([1, -1, 1, 1])
}

impl FieldOps for Tch {
    type V = Tensor;
    fn channel(&mut self, x: &Tensor, c: i64) -> Tensor {
        x.narrow(1, c, 1)
    }
    fn conv3(&mut self, x: &Tensor, k: &[f64; 9]) -> Tensor {
        x.conv2d(&kernel3(k, x), None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)
    }
    fn crop1(&mut self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        x.narrow(2, 1, h - 2).narrow(3, 1, w - 2)
    }
    fn pad1(&mut self, x: &Tensor) -> Tensor {
        x.constant_pad_nd([1, 1, 1, 1])
    }
    fn add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a + b
    }
    fn sub(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a - b
    }
    fn mul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        a * b
    }
    fn affine(&mut self, x: &Tensor, k: f64, c: f64) -> Tensor {
        x * k + c
    }
    fn affine_channels(&mut self, x: &Tensor, k: &[f64], b: &[f64]) -> Tensor {
        x * per_channel(k, x) + per_channel(b, x)
    }
    fn mean_chw(&mut self, x: &Tensor) -> Tensor {
        x.mean_dim([1i64, 2, 3].as_slice(), false, x.kind())
    }
}
