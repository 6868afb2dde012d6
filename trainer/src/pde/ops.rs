//! The field operations that the PDE residual and the inference loss are written in, once, for two
//! back-ends: tch tensors ([`Tch`], training and evaluation) and ONNX graph emission (export). A
//! function generic over [`FieldOps`] is one definition that both the trainer and the exported
//! artifact execute. [`Tch`] is the trainer's one tch back-end: the network's operations
//! (`nets::ops::NetOps`) are implemented for it too.

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
    /// y[.., i] = x[.., i - by] along `axis` (1: C, 2: H, 3: W), by = +-1: the point that leaves
    /// one end enters at the other when `periodic`, else zero enters.
    fn shift(&mut self, x: &Self::V, axis: i64, by: i64, periodic: bool) -> Self::V;
    fn add(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    fn sub(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    fn mul(&mut self, a: &Self::V, b: &Self::V) -> Self::V;
    /// x * k + c for scalars.
    fn affine(&mut self, x: &Self::V, k: f64, c: f64) -> Self::V;
    /// x * k[c] + b[c] per channel.
    fn affine_channels(&mut self, x: &Self::V, k: &[f64], b: &[f64]) -> Self::V;
    /// Per-sample mean over C, H and W: [B].
    fn mean_chw(&mut self, x: &Self::V) -> Self::V;
    /// A constant n x n matrix `m` (row-major) applied along `axis` (2: H, 3: W):
    /// y[.., i, ..] = sum_j m[i][j] x[.., j, ..]. Separable linear maps of a plane, such as a
    /// periodic grid's exact inverse Laplacian in its real Fourier basis.
    fn matmul_axis(&mut self, x: &Self::V, axis: i64, m: &[f64]) -> Self::V;
    /// x * k[p] + b[p] per point p of the H x W plane (row-major), the same for every sample and
    /// channel: a field-dependent constant such as a forcing term.
    fn affine_plane(&mut self, x: &Self::V, k: &[f64], b: &[f64]) -> Self::V;
}

/// The side of the square matrix with `len` entries.
pub fn matrix_side(len: usize) -> i64 {
    let n = (len as f64).sqrt().round() as usize;
    assert_eq!(n * n, len, "a square matrix");
    n as i64
}

/// The tch back-end (stateless).
#[derive(Clone, Copy, Debug, Default)]
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
    fn shift(&mut self, x: &Tensor, axis: i64, by: i64, periodic: bool) -> Tensor {
        assert!(by == 1 || by == -1, "shift by one point");
        let rolled = x.roll([by], [axis]);
        if periodic {
            return rolled;
        }
        // the point that wrapped round becomes zero
        let n = x.size()[axis as usize];
        let edge = if by == 1 { 0 } else { n - 1 };
        let keep = Tensor::ones([n], (x.kind(), x.device())).index_fill(
            0,
            &Tensor::from_slice(&[edge]).to_device(x.device()),
            0.0,
        );
        let mut shape = vec![1i64; 4];
        shape[axis as usize] = n;
        rolled * keep.reshape(shape)
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
        if c == 0.0 {
            x * k
        } else {
            x * k + c
        }
    }
    fn affine_channels(&mut self, x: &Tensor, k: &[f64], b: &[f64]) -> Tensor {
        x * per_channel(k, x) + per_channel(b, x)
    }
    fn mean_chw(&mut self, x: &Tensor) -> Tensor {
        x.mean_dim([1i64, 2, 3].as_slice(), false, x.kind())
    }
    fn matmul_axis(&mut self, x: &Tensor, axis: i64, m: &[f64]) -> Tensor {
        let n = matrix_side(m.len());
        let mt = Tensor::from_slice(m)
            .to_kind(x.kind())
            .to_device(x.device())
            .reshape([n, n]);
        match axis {
            2 => mt.matmul(x),
            3 => x.matmul(&mt.tr()),
            _ => panic!("matmul_axis along H (2) or W (3), not {axis}"),
        }
    }
    fn affine_plane(&mut self, x: &Tensor, k: &[f64], b: &[f64]) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let plane = |v: &[f64]| {
            Tensor::from_slice(v)
                .to_kind(x.kind())
                .to_device(x.device())
                .reshape([1, 1, h, w])
        };
        x * plane(k) + plane(b)
    }
}
