//! Darcy flow: -div(a grad u) = f on the unit square, u = 0 on the boundary.
//!
//! Discretisation (the one definition; the training loss in `crate::physics::residual` is tied to it by a test):
//! cell-centred five-point flux form on the `n x n` grid that includes the boundary, with face
//! permeabilities the arithmetic mean of the two neighbours,
//!   R_P = -(1/h^2) [ a_e (u_E - u_P) - a_w (u_P - u_W) + a_n (u_N - u_P) - a_s (u_P - u_S) ] - f_P,
//!   a_e = (a_P + a_E) / 2, ...
//! defined on interior points; the boundary rows and columns hold u = 0. Fields are row-major `[y][x]`.

use super::{
    grf::GrfParams, grf::GrfSampler, Family, Grid, Metric, Defect, Residual, Resolver, Sampler, Solved, Task,
};
use super::ops::{FieldOps, CROSS_KERNEL, LAPLACE_KERNEL};
use anyhow::{bail, Context, Result};
use faer::sparse::linalg::solvers::{Llt, SymbolicLlt};
use faer::sparse::{SparseColMat, Triplet};
use faer::{linalg::solvers::Solve, Mat, Side};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// DiffusionPDE's Darcy set-up: a = hi where GRF(alpha, tau) >= 0, else lo; f constant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DarcyParams {
    pub grf: GrfParams,
    pub a_hi: f64,
    pub a_lo: f64,
    pub source: f64,
}

impl Default for DarcyParams {
    fn default() -> Self {
        DarcyParams {
            grf: GrfParams {
                alpha: 2.0,
                tau: 3.0,
            },
            a_hi: 12.0,
            a_lo: 3.0,
            source: 1.0,
        }
    }
}

impl DarcyParams {
    /// The threshold that separates the two permeabilities (7.5 for 3 / 12).
    pub fn threshold(&self) -> f64 {
        0.5 * (self.a_hi + self.a_lo)
    }
}

/// Stencil weights at interior point (i, j): the four face permeabilities (east, west, north, south).
#[inline]
fn faces(a: &[f64], n: usize, i: usize, j: usize) -> [f64; 4] {
    let p = a[j * n + i];
    [
        0.5 * (p + a[j * n + i + 1]),
        0.5 * (p + a[j * n + i - 1]),
        0.5 * (p + a[(j + 1) * n + i]),
        0.5 * (p + a[(j - 1) * n + i]),
    ]
}

/// R(a, u) - the discrete residual, zero on the boundary ring.
pub fn residual(grid: Grid, a: &[f64], u: &[f64], f: &[f64]) -> Vec<f64> {
    let n = grid.n;
    let ih2 = 1.0 / (grid.h() * grid.h());
    let mut r = vec![0.0; n * n];
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let [ae, aw, an, as_] = faces(a, n, i, j);
            let p = j * n + i;
            let up = u[p];
            let div = ae * (u[p + 1] - up) - aw * (up - u[p - 1]) + an * (u[p + n] - up)
                - as_ * (up - u[p - n]);
            r[p] = -ih2 * div - f[p];
        }
    }
    r
}

/// Mean of R^2 over the interior points.
pub fn residual_mse(grid: Grid, a: &[f64], u: &[f64], f: &[f64]) -> f64 {
    let n = grid.n;
    let r = residual(grid, a, u, f);
    r.iter().map(|v| v * v).sum::<f64>() / ((n - 2) * (n - 2)) as f64
}

/// Index of interior point (i, j) among the unknowns.
#[inline]
fn unknown(n: usize, i: usize, j: usize) -> usize {
    (j - 1) * (n - 2) + (i - 1)
}

/// The SPD matrix of the interior unknowns: A u_int = f_int is R = 0 with u = 0 on the boundary.
/// Only the lower triangle is stored, which is all the Cholesky factorisation reads.
pub fn assemble(grid: Grid, a: &[f64]) -> Result<SparseColMat<usize, f64>> {
    let n = grid.n;
    let m = (n - 2) * (n - 2);
    let ih2 = 1.0 / (grid.h() * grid.h());
    let mut t = Vec::with_capacity(3 * m);
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let [ae, aw, an, as_] = faces(a, n, i, j);
            let row = unknown(n, i, j);
            t.push(Triplet::new(row, row, ih2 * (ae + aw + an + as_)));
            // Lower triangle: west and south neighbours have smaller indices.
            if i > 1 {
                t.push(Triplet::new(row, unknown(n, i - 1, j), -ih2 * aw));
            }
            if j > 1 {
                t.push(Triplet::new(row, unknown(n, i, j - 1), -ih2 * as_));
            }
        }
    }
    SparseColMat::try_new_from_triplets(m, m, &t).context("assembling the Darcy matrix")
}

/// Solves R(a, u) = 0 for u (u = 0 on the boundary) with a sparse Cholesky factorisation.
/// Returns u on the full grid and the relative residual ||A u - f|| / ||f|| over the interior.
pub struct DarcySolver {
    grid: Grid,
    symbolic: SymbolicLlt<usize>,
}

impl DarcySolver {
    pub fn new(grid: Grid) -> Result<Self> {
        // The sparsity pattern depends on the grid only: analyse it once.
        let a = vec![1.0; grid.len()];
        let mat = assemble(grid, &a)?;
        let symbolic = SymbolicLlt::try_new(mat.symbolic(), Side::Lower)
            .map_err(|e| anyhow::anyhow!("symbolic Cholesky failed: {e:?}"))?;
        Ok(DarcySolver { grid, symbolic })
    }

    pub fn solve(&self, a: &[f64], f: &[f64]) -> Result<(Vec<f64>, f64)> {
        let (grid, n) = (self.grid, self.grid.n);
        if a.len() != grid.len() || f.len() != grid.len() {
            bail!(
                "field length {} / {} does not match the {n}x{n} grid",
                a.len(),
                f.len()
            );
        }
        if a.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            bail!("permeability must be finite and positive");
        }
        let mat = assemble(grid, a)?;
        let llt = Llt::try_new_with_symbolic(self.symbolic.clone(), mat.as_ref(), Side::Lower)
            .map_err(|e| anyhow::anyhow!("Cholesky factorisation failed: {e:?}"))?;
        let m = (n - 2) * (n - 2);
        let mut rhs = Mat::<f64>::zeros(m, 1);
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                rhs[(unknown(n, i, j), 0)] = f[j * n + i];
            }
        }
        let sol = llt.solve(&rhs);
        let mut u = vec![0.0; grid.len()];
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                u[j * n + i] = sol[(unknown(n, i, j), 0)];
            }
        }
        let r = residual(grid, a, &u, &vec![0.0; grid.len()]);
        let (mut num, mut den) = (0.0, 0.0);
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                let p = j * n + i;
                num += (r[p] - f[p]).powi(2);
                den += f[p] * f[p];
            }
        }
        Ok((u, (num / den.max(f64::MIN_POSITIVE)).sqrt()))
    }
}

/// One Darcy sample: thresholded GRF permeability and its solution.
pub fn sample<R: Rng>(
    params: &DarcyParams,
    grf: &GrfSampler,
    solver: &DarcySolver,
    rng: &mut R,
) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    let g = grf.sample(rng);
    let a: Vec<f64> = g
        .iter()
        .map(|&v| if v >= 0.0 { params.a_hi } else { params.a_lo })
        .collect();
    let f = vec![params.source; a.len()];
    let (u, rel) = solver.solve(&a, &f)?;
    Ok((a, u, rel))
}

/// The solve of a sample's own permeability, clamped into [a_lo, a_hi]: a generated a is not
/// binary, and the solver needs it positive; inside the range it is the residual's own a.
struct DarcyResolver {
    params: DarcyParams,
    solver: DarcySolver,
}

impl Resolver for DarcyResolver {
    fn resolve(&self, fields: &[f64]) -> Result<Vec<f64>> {
        let n = fields.len() / 2;
        let (lo, hi) = (self.params.a_lo.min(self.params.a_hi), self.params.a_lo.max(self.params.a_hi));
        if fields[..n].iter().any(|v| !v.is_finite()) {
            bail!("permeability must be finite");
        }
        let a: Vec<f64> = fields[..n].iter().map(|v| v.clamp(lo, hi)).collect();
        let (u, _) = self.solver.solve(&a, &vec![self.params.source; n])?;
        Ok([fields[..n].to_vec(), u].concat())
    }
}

struct DarcySampler {
    params: DarcyParams,
    grf: GrfSampler,
    solver: DarcySolver,
}

impl Sampler for DarcySampler {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Result<Solved> {
        let (a, u, rel) = sample(&self.params, &self.grf, &self.solver, rng)?;
        Ok(Solved {
            fields: [a, u].concat(),
            solver_residual: rel,
        })
    }
}

impl Family for DarcyParams {
    fn name(&self) -> &'static str {
        "darcy"
    }
    fn channels(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("a", "permeability (dimensionless)"),
            ("u", "pressure (dimensionless)"),
        ]
    }
    fn equation(&self) -> String {
        "-div(a grad u) = f on (0,1)^2, u = 0 on the boundary".into()
    }
    fn validate(&self) -> Result<()> {
        super::helmholtz::validate_grf(&self.grf)?;
        for (name, v) in [("a_hi", self.a_hi), ("a_lo", self.a_lo)] {
            if !(v.is_finite() && v > 0.0) {
                bail!("Darcy permeability {name} must be finite and positive, got {v}");
            }
        }
        if !self.source.is_finite() {
            bail!("Darcy source must be finite, got {}", self.source);
        }
        Ok(())
    }
    fn sampler(&self, grid: Grid) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DarcySampler {
            params: *self,
            grf: GrfSampler::new(self.grf, grid.n),
            solver: DarcySolver::new(grid)?,
        }))
    }
    fn resolver(&self, grid: Grid) -> Result<Box<dyn Resolver>> {
        Ok(Box::new(DarcyResolver {
            params: *self,
            solver: DarcySolver::new(grid)?,
        }))
    }
    /// The constant source over the interior.
    fn source_norm(&self, grid: Grid, _fields: &[f64]) -> f64 {
        self.source.abs() * ((grid.n - 2) as f64)
    }
    /// -div(a grad e) = R with a at the two phases' mean.
    fn defect(&self, _grid: Grid) -> Defect {
        Defect::Dirichlet {
            shift: 0.0,
            scale: -2.0 / (self.a_hi + self.a_lo),
        }
    }
    /// Forward: a given, u wanted; inverse: u given, a wanted.
    fn task_mask(&self, task: Task, grid: Grid) -> Vec<f32> {
        super::channel_mask(2, super::helmholtz::observed(task), grid)
    }
    fn given(&self, task: Task) -> String {
        super::channel_words(self.channels(), super::helmholtz::observed(task))
    }
    /// u = 0 on the boundary.
    fn fixed_zero(&self, grid: Grid) -> Vec<f32> {
        super::ring_mask(2, 1, grid)
    }
    /// a is binary: scored by the fraction of points in the wrong phase; u by relative L2.
    fn metric(&self, channel: usize) -> Metric {
        match channel {
            0 => Metric::ErrorRate {
                threshold: self.threshold(),
            },
            _ => Metric::RelL2,
        }
    }
    fn threshold(&self) -> Option<f64> {
        Some(DarcyParams::threshold(self))
    }
    fn phases(&self) -> Option<super::Phases> {
        Some(super::Phases {
            channel: 0,
            lo: self.a_lo.min(self.a_hi),
            hi: self.a_lo.max(self.a_hi),
        })
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain parameters serialise")
    }
    fn reference_residual(&self, grid: Grid, fields: &[f64]) -> Vec<f64> {
        let (a, u) = fields.split_at(grid.len());
        residual(grid, a, u, &vec![self.source; grid.len()])
    }
    fn preset(&self) -> (&'static str, &'static str) {
        ("cpu", include_str!("../../presets/cpu.toml"))
    }
}

/// The residual over [`FieldOps`], with the flux-form stencil expanded:
///   sum_nb (a_P + a_nb)(u_nb - u_P) / 2 = [a_P L(u) + S(a u) - u_P S(a)] / 2
/// where L is the 5-point Laplacian kernel and S the 4-neighbour sum (cross) kernel, so
///   R = -[a_P L(u) + S(a u) - u_P S(a)] / (2 h^2) - f   on the interior, 0 on the boundary ring.
impl Residual for DarcyParams {
    fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, x: &O::V) -> O::V {
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
        let h = grid.h();
        let r = o.affine(&div, -0.5 / (h * h), -self.source);
        o.pad1(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn coords(n: usize) -> impl Iterator<Item = (usize, usize, f64, f64)> {
        Grid::new(n).unwrap().points()
    }

    /// Manufactured solution u = sin(pi x) sin(pi y), a = 1 + x^2 + y: second-order convergence.
    #[test]
    fn manufactured_solution_converges_at_second_order() {
        let mut prev: Option<f64> = None;
        println!("{:>5} {:>12} {:>6}", "n", "max error", "order");
        for &n in &[16, 32, 64, 128] {
            let grid = Grid::new(n).unwrap();
            let (mut a, mut f, mut exact) = (vec![0.0; n * n], vec![0.0; n * n], vec![0.0; n * n]);
            for (i, j, x, y) in coords(n) {
                let p = j * n + i;
                let (s, c) = ((PI * x).sin(), (PI * x).cos());
                let (sy, cy) = ((PI * y).sin(), (PI * y).cos());
                a[p] = 1.0 + x * x + y;
                exact[p] = s * sy;
                // f = -(a_x u_x + a_y u_y + a Lap u)
                let (ux, uy) = (PI * c * sy, PI * s * cy);
                f[p] = -(2.0 * x * ux + 1.0 * uy - a[p] * 2.0 * PI * PI * s * sy);
            }
            let (u, rel) = DarcySolver::new(grid).unwrap().solve(&a, &f).unwrap();
            assert!(rel <= 1e-10, "relative residual {rel}");
            let err = u
                .iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let order = prev.map(|p| (p / err).log2());
            println!(
                "{n:>5} {err:>12.4e} {:>6}",
                order.map_or("-".into(), |o| format!("{o:.2}"))
            );
            if let Some(o) = order {
                assert!((o - 2.0).abs() < 0.15, "observed order {o} at n = {n}");
            }
            prev = Some(err);
        }
    }

    /// Stencil signs on analytic fields: for a = 1 and u = x^2 + y^2, -Lap u = -4 exactly;
    /// for a = 1 + x, u = x^2: -(a u_x)_x = -(2 + 4x), exact for the flux form on a quadratic.
    #[test]
    fn stencil_signs_on_analytic_fields() {
        let n = 9;
        let grid = Grid::new(n).unwrap();
        let zero = vec![0.0; n * n];
        let ones = vec![1.0; n * n];
        let u: Vec<f64> = coords(n).map(|(_, _, x, y)| x * x + y * y).collect();
        let r = residual(grid, &ones, &u, &zero);
        for (i, j, _, _) in
            coords(n).filter(|&(i, j, _, _)| i > 0 && j > 0 && i < n - 1 && j < n - 1)
        {
            assert!(
                (r[j * n + i] + 4.0).abs() < 1e-10,
                "({i},{j}) {}",
                r[j * n + i]
            );
        }
        let a: Vec<f64> = coords(n).map(|(_, _, x, _)| 1.0 + x).collect();
        let u: Vec<f64> = coords(n).map(|(_, _, x, _)| x * x).collect();
        let r = residual(grid, &a, &u, &zero);
        for (i, j, x, _) in
            coords(n).filter(|&(i, j, _, _)| i > 0 && j > 0 && i < n - 1 && j < n - 1)
        {
            assert!(
                (r[j * n + i] + 2.0 + 4.0 * x).abs() < 1e-10,
                "({i},{j}) {}",
                r[j * n + i]
            );
        }
        // The boundary ring carries no residual, and a positive source gives a positive solution.
        assert!(coords(n)
            .filter(|&(i, j, _, _)| i == 0 || j == 0 || i == n - 1 || j == n - 1)
            .all(|(i, j, _, _)| r[j * n + i] == 0.0));
        let (u, _) = DarcySolver::new(grid).unwrap().solve(&ones, &ones).unwrap();
        assert!(coords(n)
            .filter(|&(i, j, _, _)| i > 0 && j > 0 && i < n - 1 && j < n - 1)
            .all(|(i, j, _, _)| u[j * n + i] > 0.0));
    }

    #[test]
    fn darcy_sample_meets_solver_tolerance() {
        use rand::SeedableRng;
        let p = DarcyParams::default();
        let grid = Grid::new(32).unwrap();
        let grf = GrfSampler::new(p.grf, 32);
        let solver = DarcySolver::new(grid).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (a, u, rel) = sample(&p, &grf, &solver, &mut rng).unwrap();
        assert!(rel <= 1e-10, "{rel}");
        assert!(a.iter().all(|&v| v == 3.0 || v == 12.0));
        assert!(a.contains(&3.0) && a.contains(&12.0));
        let f = vec![1.0; a.len()];
        assert!(residual_mse(grid, &a, &u, &f) < 1e-18);
    }

    #[test]
    fn rejects_bad_permeability() {
        let grid = Grid::new(8).unwrap();
        let s = DarcySolver::new(grid).unwrap();
        let mut a = vec![1.0; 64];
        a[10] = f64::NAN;
        assert!(s.solve(&a, &vec![1.0; 64]).is_err());
        assert!(s.solve(&[1.0; 10], &[1.0; 10]).is_err());
    }
}
