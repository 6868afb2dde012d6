//! The PDE residual R, written once over [`FieldOps`]: the training loss and evaluation run it on tch
//! tensors, the exported ONNX graphs run the same code emitted as fixed-kernel convolutions. It is the
//! operator of `pde::darcy::residual` (the data's solver); a test ties the two to 1e-10.
//!
//! Darcy, with the flux-form stencil expanded:
//!   sum_nb (a_P + a_nb)(u_nb - u_P) / 2 = [a_P L(u) + S(a u) - u_P S(a)] / 2
//! where L is the 5-point Laplacian kernel and S the 4-neighbour sum (cross) kernel, so
//!   R = -[a_P L(u) + S(a u) - u_P S(a)] / (2 h^2) - f   on the interior, 0 on the boundary ring.

use crate::ops::{FieldOps, Tch};
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

impl ResidualOp {
    /// R of physical fields `x` [B, C, H, W] (Darcy: channel 0 = a, 1 = u): [B, 1, H, W].
    pub fn emit<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        match self.pde {
            PdeKind::Darcy => {
                let a = o.channel(x, 0);
                let u = o.channel(x, 1);
                let lap_u = o.conv3(&u, &LAPLACE_KERNEL);
                let s_a = o.conv3(&a, &CROSS_KERNEL);
                let au = o.mul(&a, &u);
                let s_au = o.conv3(&au, &CROSS_KERNEL);
                let (ap, up) = (o.crop1(&a), o.crop1(&u));
                let t1 = o.mul(&ap, &lap_u);
                let t2 = o.mul(&up, &s_a);
                let t = o.add(&t1, &s_au);
                let div = o.sub(&t, &t2);
                let h = self.grid.h();
                let r = o.affine(&div, -0.5 / (h * h), -self.source);
                o.pad1(&r)
            }
        }
    }

    /// Factor turning a mean over all n^2 points of R^2 (zero on the boundary) into the mean over
    /// the interior.
    pub fn interior_factor(&self) -> f64 {
        let n = self.grid.n as f64;
        n * n / ((n - 2.0) * (n - 2.0))
    }

    /// Per-sample mean of R^2 over the interior: [B].
    pub fn emit_mse<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        let r = self.emit(o, x);
        let r2 = o.mul(&r, &r);
        let m = o.mean_chw(&r2);
        o.affine(&m, self.interior_factor(), 0.0)
    }

    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.emit(&mut Tch, x)
    }

    pub fn mse_per_sample(&self, x: &Tensor) -> Tensor {
        self.emit_mse(&mut Tch, x)
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
        let op = ResidualOp {
            pde: PdeKind::Darcy,
            grid,
            source: 1.0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let a: Vec<f64> = (0..n * n).map(|_| rng.random_range(1.0..12.0)).collect();
        let u: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let reference = darcy::residual(grid, &a, &u, &vec![1.0; n * n]);
        let x = Tensor::from_slice(&[a.clone(), u.clone()].concat())
            .reshape([1, 2, n as i64, n as i64]);
        let r = op.apply(&x);
        let got = Vec::<f64>::try_from(r.reshape([-1])).unwrap();
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, e) in got.iter().zip(&reference) {
            assert!((g - e).abs() <= 1e-10 * scale, "{g} vs {e}");
        }
        let mse = f64::try_from(op.mse_per_sample(&x)).unwrap();
        let expected = darcy::residual_mse(grid, &a, &u, &vec![1.0; n * n]);
        assert!(
            (mse - expected).abs() <= 1e-10 * expected,
            "{mse} vs {expected}"
        );
    }
}
