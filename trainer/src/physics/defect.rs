//! A residual mapped back to the solved field's own units ([`Defect`], the family's approximate
//! inverse of its operator): e ~ u - S(input), S the family's solver. The students' training loss
//! weighs it beside R itself: a loss on R alone weighs grid-scale noise by 1 / h^2 and lets a
//! smooth field stay a few percent away from the solve of its own input, which is what a forward
//! answer then inherits.

use super::ResidualOp;
use crate::pde::{Defect, Grid, Pde, Task};
use tch::{Kind, Tensor};

/// The defect u - S(input) of fields on one grid, from their residual; its mean square in units
/// of the solved channel's normalisation scale.
pub struct DefectOp {
    op: ResidualOp,
    defect: Defect,
    solved: i64,
    /// The solved channel's Dirichlet points, [1, C, n, n], 1 where the PDE fixes u = 0.
    fixed: Tensor,
    /// Dirichlet: the orthonormal sine basis of the interior [m, m] and scale / (mu_i + mu_j +
    /// shift) [m, m], in f64 (converted to the residual's kind at use).
    basis: Option<(Tensor, Tensor)>,
    /// 1 / (the solved channel's normalisation scale)^2.
    unit: f64,
}

/// The channel the forward task solves for (Darcy's and Poisson's u, Burgers' only channel).
pub fn solved_channel(pde: &Pde, grid: Grid) -> usize {
    let mask = pde.family().task_mask(Task::Forward, grid);
    (0..pde.channels().len())
        .find(|&c| mask[c * grid.len()..(c + 1) * grid.len()].contains(&0.0))
        .unwrap_or(0)
}

/// The orthonormal sine basis of a Dirichlet grid's interior (m x m, m = n - 2, symmetric: it is
/// its own inverse) and scale / (mu_i + mu_j + shift), mu the eigenvalues of the 1-D second
/// difference with Dirichlet ends: (Lap + shift)^(-1) scale = V diag(that) V in two dimensions.
pub fn dirichlet_basis(grid: Grid, shift: f64, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let m = grid.n - 2;
    let (h, l) = (grid.h(), (m + 1) as f64);
    let pi = std::f64::consts::PI;
    let v: Vec<f64> = (0..m * m)
        .map(|p| {
            let (i, j) = ((p / m + 1) as f64, (p % m + 1) as f64);
            (2.0 / l).sqrt() * (pi * i * j / l).sin()
        })
        .collect();
    let mu: Vec<f64> = (1..=m)
        .map(|i| -4.0 / (h * h) * (pi * i as f64 / (2.0 * l)).sin().powi(2))
        .collect();
    let inv: Vec<f64> = (0..m * m)
        .map(|p| scale / (mu[p / m] + mu[p % m] + shift))
        .collect();
    (v, inv)
}

impl DefectOp {
    /// `scale`: the normalisation scale of the solved channel (e is divided by it).
    pub fn new(op: &ResidualOp, scale: f64) -> Self {
        let defect = op.pde.family().defect(op.grid);
        let basis = match defect {
            Defect::Dirichlet { shift, scale } => {
                let m = (op.grid.n - 2) as i64;
                let (v, inv) = dirichlet_basis(op.grid, shift, scale);
                let t = |v: &[f64]| Tensor::from_slice(v).reshape([m, m]);
                Some((t(&v), t(&inv)))
            }
            Defect::TimeIntegral { .. } => None,
        };
        let (grid, c) = (op.grid, op.pde.channels().len());
        let solved = solved_channel(&op.pde, grid);
        let mut fixed = op.pde.family().fixed_zero(grid);
        for (k, v) in fixed.iter_mut().enumerate() {
            if k / grid.len() != solved {
                *v = 0.0;
            }
        }
        let n = grid.n as i64;
        DefectOp {
            op: *op,
            defect,
            solved: solved as i64,
            fixed: Tensor::from_slice(&fixed).reshape([1, c as i64, n, n]),
            basis,
            unit: 1.0 / (scale * scale),
        }
    }

    /// e = u - S(input) of physical fields `x` [B, C, n, n]: [B, 1, n, n]. The residual of x with
    /// the solved channel's Dirichlet values imposed, mapped back ([`Defect`]), plus those values'
    /// own error: a field cannot pass for consistent by bending its boundary ring, which the
    /// interior residual weighs by 1 / h^2.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let fixed = self.fixed.to_kind(x.kind()).to_device(x.device());
        let inner = x * (fixed.ones_like() - &fixed);
        let ring = (x * &fixed).narrow(1, self.solved, 1);
        self.of_residual(&self.op.apply(&inner)) + ring
    }

    /// The defect of residuals `r` [B, Cr, n, n] of fields that hold their Dirichlet values.
    fn of_residual(&self, r: &Tensor) -> Tensor {
        match (self.defect, &self.basis) {
            (Defect::Dirichlet { .. }, Some((v, inv))) => {
                let (v, inv) = (
                    v.to_kind(r.kind()).to_device(r.device()),
                    inv.to_kind(r.kind()).to_device(r.device()),
                );
                let m = v.size()[0];
                let ri = r.narrow(2, 1, m).narrow(3, 1, m);
                let spectral = v.matmul(&ri).matmul(&v) * inv;
                v.matmul(&spectral).matmul(&v).constant_pad_nd([1, 1, 1, 1])
            }
            (Defect::TimeIntegral { dt, axis }, _) => r.cumsum(axis, r.kind()) * dt,
            _ => unreachable!("a Dirichlet defect always has its basis"),
        }
    }

    /// Per-sample mean of (e / scale)^2 over the grid of physical fields `x`: [B].
    pub fn mse_per_sample(&self, x: &Tensor) -> Tensor {
        (self.apply(x).square() * self.unit).mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn tensor(fields: &[f64], c: usize, n: usize) -> Tensor {
        Tensor::from_slice(fields).reshape([1, c as i64, n as i64, n as i64])
    }

    /// For the linear families the defect is exactly u - S(input) at every point, S their sparse
    /// Cholesky solver (a second implementation), for u the solve plus a random perturbation of
    /// the interior and of the boundary ring; for Darcy with a constant permeability too.
    #[test]
    fn dirichlet_defect_is_the_distance_to_the_solve() {
        let n = 20;
        let grid = Grid::new(n).unwrap();
        let darcy = Pde::Darcy(crate::pde::darcy::DarcyParams {
            a_hi: 5.0,
            a_lo: 5.0,
            ..Default::default()
        });
        for pde in [
            Pde::parse("poisson").unwrap(),
            Pde::parse("helmholtz").unwrap(),
            darcy,
        ] {
            let fam = pde.family();
            let op = ResidualOp { pde, grid };
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let mut x = fam.sampler(grid).unwrap().sample(&mut rng).unwrap().fields;
            for p in 0..grid.len() {
                x[grid.len() + p] += 0.01 * (rng.random::<f64>() - 0.5);
            }
            let solved = fam.resolver(grid).unwrap().resolve(&x).unwrap();
            let want: Vec<f64> = (0..grid.len())
                .map(|p| x[grid.len() + p] - solved[grid.len() + p])
                .collect();
            let e = DefectOp::new(&op, 1.0).apply(&tensor(&x, 2, n));
            let got = Vec::<f64>::try_from(e.reshape([-1])).unwrap();
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 1e-4, "{}: nothing was perturbed", pde.name());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9 * scale, "{}: {g} vs {w}", pde.name());
            }
        }
    }

    /// Burgers: e_k = dt * sum_{j <= k} R_j of the pointwise reference residual, and the mean of
    /// (e / scale)^2 its square over the grid.
    #[test]
    fn time_integral_defect_sums_the_steps_residuals() {
        let n = 12;
        let grid = Grid::new(n).unwrap();
        let pde = Pde::parse("burgers").unwrap();
        let fam = pde.family();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut x = fam.sampler(grid).unwrap().sample(&mut rng).unwrap().fields;
        for v in x.iter_mut().skip(n) {
            *v += 0.01 * (rng.random::<f64>() - 0.5);
        }
        let r = fam.reference_residual(grid, &x);
        let dt = match fam.defect(grid) {
            Defect::TimeIntegral { dt, axis: 2 } => dt,
            d => panic!("{d:?}"),
        };
        let op = ResidualOp { pde, grid };
        let d = DefectOp::new(&op, 0.5);
        let got = Vec::<f64>::try_from(d.apply(&tensor(&x, 1, n)).reshape([-1])).unwrap();
        let mut sum2 = 0.0;
        for i in 0..n {
            let mut acc = 0.0;
            for k in 0..n {
                acc += dt * r[k * n + i];
                assert!((got[k * n + i] - acc).abs() < 1e-10, "row {k}, point {i}");
                sum2 += acc * acc;
            }
        }
        let mse = f64::try_from(d.mse_per_sample(&tensor(&x, 1, n))).unwrap();
        let want = sum2 / (n * n) as f64 / 0.25;
        assert!((mse - want).abs() < 1e-5 * want, "{mse} vs {want}");
        assert!(want > 0.0);
        assert_eq!(solved_channel(&Pde::parse("darcy").unwrap(), grid), 1);
        assert_eq!(solved_channel(&op.pde, grid), 0);
    }
}
