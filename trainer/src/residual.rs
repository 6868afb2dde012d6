//! The PDE residual R as tensor operations: the training loss, the evaluation metric and (later) the
//! exported graph all use this form. It is the same operator as `pde::darcy::residual`, written as
//! fixed-kernel convolutions so it is differentiable and exportable; a test ties the two to 1e-10.
//!
//! Darcy, with the flux-form stencil expanded:
//!   sum_nb (a_P + a_nb)(u_nb - u_P) / 2 = [a_P L(u) + S(a u) - u_P S(a)] / 2
//! where L is the 5-point Laplacian kernel and S the 4-neighbour sum (cross) kernel, so
//!   R = -[a_P L(u) + S(a u) - u_P S(a)] / (2 h^2) - f   on the interior.

use crate::pde::{Grid, PdeKind};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// 3x3 kernels, row-major.
pub const LAPLACE_KERNEL: [f64; 9] = [0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0];
pub const CROSS_KERNEL: [f64; 9] = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];

/// What R needs to know: the PDE, the grid, and the constant source.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResidualOp {
    pub pde: PdeKind,
    pub grid: Grid,
    pub source: f64,
}

fn kernel(k: &[f64; 9], like: &Tensor) -> Tensor {
    Tensor::from_slice(k).to_kind(like.kind()).to_device(like.device()).reshape([1, 1, 3, 3])
}

impl ResidualOp {
    /// R of physical fields `x` [B, C, H, W] (channel 0 = a, 1 = u): [B, 1, H, W], zero on the boundary.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        match self.pde {
            PdeKind::Darcy => {
                let a = x.narrow(1, 0, 1);
                let u = x.narrow(1, 1, 1);
                let lap = kernel(&LAPLACE_KERNEL, x);
                let cross = kernel(&CROSS_KERNEL, x);
                let none: Option<&Tensor> = None;
                let conv = |t: &Tensor, k: &Tensor| t.conv2d(k, none, [1, 1], [0, 0], [1, 1], 1);
                let n = self.grid.n as i64;
                let ap = a.narrow(2, 1, n - 2).narrow(3, 1, n - 2);
                let up = u.narrow(2, 1, n - 2).narrow(3, 1, n - 2);
                let h = self.grid.h();
                let div = ap * conv(&u, &lap) + conv(&(&a * &u), &cross) - up * conv(&a, &cross);
                let r = div * (-0.5 / (h * h)) - self.source;
                r.constant_pad_nd([1, 1, 1, 1])
            }
        }
    }

    /// Mean of R^2 over the interior, per sample: [B].
    pub fn mse_per_sample(&self, x: &Tensor) -> Tensor {
        let r = self.apply(x);
        let n = self.grid.n as i64;
        let interior = ((n - 2) * (n - 2)) as f64;
        r.square().sum_dim_intlist([1i64, 2, 3].as_slice(), false, r.kind()) / interior
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pde::darcy;
    use rand::{Rng, SeedableRng};

    /// The tensor form and the assembled stencil are one operator: 1e-10 in f64 on random fields.
    #[test]
    fn tensor_residual_matches_stencil() {
        let n = 17;
        let grid = Grid::new(n).unwrap();
        let op = ResidualOp { pde: PdeKind::Darcy, grid, source: 1.0 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let a: Vec<f64> = (0..n * n).map(|_| rng.random_range(1.0..12.0)).collect();
        let u: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let reference = darcy::residual(grid, &a, &u, &vec![1.0; n * n]);
        let x = Tensor::from_slice(&[a.clone(), u.clone()].concat()).reshape([1, 2, n as i64, n as i64]);
        let r = op.apply(&x);
        let got = Vec::<f64>::try_from(r.reshape([-1])).unwrap();
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, e) in got.iter().zip(&reference) {
            assert!((g - e).abs() <= 1e-10 * scale, "{g} vs {e}");
        }
        let mse = f64::try_from(op.mse_per_sample(&x)).unwrap();
        let expected = darcy::residual_mse(grid, &a, &u, &vec![1.0; n * n]);
        assert!((mse - expected).abs() <= 1e-10 * expected);
    }
}
