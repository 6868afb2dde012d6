//! The PDE residual R of a family on a grid, as the training loss, the evaluation and the exported
//! graphs use it: the family's residual (written once over [`FieldOps`], in its `pde` module) and
//! its per-sample interior mean of R^2. A test ties every registered family's tensor form to its
//! pointwise reference (`Family::reference_residual`, the operator its data solver inverts) to 1e-10.

use crate::pde::ops::{FieldOps, Tch};
use crate::pde::{Grid, Pde};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// What R needs to know: the PDE with its parameters, and the grid.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResidualOp {
    pub pde: Pde,
    pub grid: Grid,
}

impl ResidualOp {
    /// R of physical fields `x` [B, C, H, W]: [B, Cr, H, W], Cr the family's residual channels.
    pub fn emit<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        self.pde.emit_residual(self.grid, o, x)
    }

    /// Factor turning a mean over all points of R^2 (zero where no equation holds) into the mean
    /// over the points that carry one.
    pub fn interior_factor(&self) -> f64 {
        let family = self.pde.family();
        (family.residual_channels() * self.grid.len()) as f64
            / family.equation_points(self.grid) as f64
    }

    /// Per-sample mean of R^2 over the interior: [B].
    pub fn emit_mse<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        self.emit_with_mse(o, x).1
    }

    /// R and its per-sample interior mean of R^2.
    pub fn emit_with_mse<O: FieldOps>(&self, o: &mut O, x: &O::V) -> (O::V, O::V) {
        let r = self.emit(o, x);
        let r2 = o.mul(&r, &r);
        let m = o.mean_chw(&r2);
        let mse = o.affine(&m, self.interior_factor(), 0.0);
        (r, mse)
    }

    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.emit(&mut Tch, x)
    }

    pub fn mse_per_sample(&self, x: &Tensor) -> Tensor {
        self.emit_mse(&mut Tch, x)
    }

    /// The scale that float32 rounding of R(x) is measured on: the largest |R|, |source term| or
    /// |R with the solved channel halved|, the source term being R of `x` with its solved channel
    /// zeroed. R of a corrected student is rounding noise whose size is set by the terms that
    /// cancel, not by R itself; halving the solved channel unbalances them, which measures them
    /// where there is no source (Burgers: the time derivative against the flux).
    pub fn rounding_scale(&self, x: &Tensor) -> f64 {
        let solved = super::defect::solved_channel(&self.pde, self.grid) as i64;
        let index = Tensor::from_slice(&[solved]).to_device(x.device());
        let zeroed = x.index_fill(1, &index, 0.0);
        let halved = x.index_copy(1, &index, &(x.index_select(1, &index) * 0.5));
        let worst = [self.apply(x), self.apply(&zeroed), self.apply(&halved)]
            .iter()
            .map(|r| r.abs().max())
            .reduce(|a, b| a.max_other(&b))
            .expect("three residuals");
        f64::try_from(worst).unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `op` applied to one sample's channels against its family's pointwise reference, pointwise
    /// and as the interior mean: 1e-10 in f64.
    fn check(op: ResidualOp, fields: &[f64]) {
        let n = op.grid.n as i64;
        let c = (fields.len() / op.grid.len()) as i64;
        let reference = op.pde.family().reference_residual(op.grid, fields);
        let x = Tensor::from_slice(fields).reshape([1, c, n, n]);
        let got = Vec::<f64>::try_from(op.apply(&x).reshape([-1])).unwrap();
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.0,
            "{}: a zero reference proves nothing",
            op.pde.name()
        );
        for (g, e) in got.iter().zip(&reference) {
            assert!(
                (g - e).abs() <= 1e-10 * scale,
                "{}: {g} vs {e}",
                op.pde.name()
            );
        }
        let mse = f64::try_from(op.mse_per_sample(&x)).unwrap();
        let m = op.pde.family().equation_points(op.grid);
        let expected = reference.iter().map(|v| v * v).sum::<f64>() / m as f64;
        assert!(
            (mse - expected).abs() <= 1e-10 * expected,
            "{mse} vs {expected}"
        );
    }

    /// The tensor form and the assembled stencil are one operator, for every registered family
    /// (and Helmholtz at a second wavenumber). The first channel is drawn positive (a coefficient
    /// where a family has one), the others of either sign.
    #[test]
    fn tensor_residual_matches_stencil() {
        let n = 17;
        let grid = Grid::new(n).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let k3 = Pde::from_parts("helmholtz", &serde_json::json!({"k": 3.0})).unwrap();
        for pde in Pde::all().into_iter().chain([k3]) {
            let c = pde.channels().len();
            let fields: Vec<f64> = (0..c * n * n)
                .map(|i| {
                    if i < n * n {
                        rng.random_range(1.0..12.0)
                    } else {
                        rng.random_range(-1.0..1.0)
                    }
                })
                .collect();
            check(ResidualOp { pde, grid }, &fields);
        }
    }

    /// `Family::source_channel`: R = L(the rest) - f pointwise, so f + R balances the rest and R
    /// of the fields so settled is 0 (1e-10 of R's scale) where the equation holds.
    #[test]
    fn source_channel_balances_the_residual() {
        let n = 13;
        let grid = Grid::new(n).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut settled = 0;
        for pde in Pde::all() {
            let Some(src) = pde.family().source_channel() else {
                continue;
            };
            let c = pde.channels().len() as i64;
            let fields: Vec<f64> = (0..c as usize * n * n)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let op = ResidualOp { pde, grid };
            let x = Tensor::from_slice(&fields).reshape([1, c, n as i64, n as i64]);
            let r = op.apply(&x);
            let f = x.narrow(1, src as i64, 1) + &r;
            let y = x.index_copy(1, &Tensor::from_slice(&[src as i64]), &f);
            let scale = f64::try_from(r.abs().max()).unwrap();
            let left = f64::try_from(op.apply(&y).abs().max()).unwrap();
            assert!(
                scale > 1.0 && left <= 1e-10 * scale,
                "{}: {left}",
                pde.name()
            );
            settled += 1;
        }
        assert!(settled >= 2, "Poisson and Helmholtz have a source channel");
    }
}
