//! Helmholtz: Lap u + k^2 u = f on the unit square, u = 0 on the boundary, f a GRF; channels (f, u).
//! With k = 0 it is Poisson's equation, which [`super::poisson`] reuses.
//!
//! Discretisation (the one definition; the residual over `FieldOps` is tied to it by a test): the
//! five-point Laplacian on the `n x n` grid that includes the boundary,
//!   R_P = (u_E + u_W + u_N + u_S - 4 u_P) / h^2 + k^2 u_P - f_P
//! on interior points; the boundary rows and columns hold u = 0. Fields are row-major `[y][x]`.
//! The data solver factorises -(Lap + k^2), which is symmetric positive definite while k^2 is below
//! the discrete Laplacian's smallest eigenvalue 8 sin^2(pi h / 2) / h^2 (about 2 pi^2): larger k are
//! refused rather than solved by a method that could fail silently.

use super::{
    grf::GrfParams, grf::GrfSampler, Family, Grid, Metric, Defect, Residual, Resolver, Sampler, Solved, Task,
};
use super::ops::{FieldOps, LAPLACE_KERNEL};
use anyhow::{bail, Context, Result};
use faer::sparse::linalg::solvers::{Llt, SymbolicLlt};
use faer::sparse::{SparseColMat, Triplet};
use faer::{linalg::solvers::Solve, Mat, Side};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelmholtzParams {
    /// The source's GRF.
    pub grf: GrfParams,
    /// Wavenumber (DiffusionPDE's Helmholtz set uses 1).
    pub k: f64,
}

impl Default for HelmholtzParams {
    fn default() -> Self {
        HelmholtzParams {
            grf: GrfParams {
                alpha: 2.0,
                tau: 3.0,
            },
            k: 1.0,
        }
    }
}

pub const CHANNELS: &[(&str, &str); 2] = &[
    ("f", "source (dimensionless)"),
    ("u", "solution (dimensionless)"),
];

/// Smallest eigenvalue of the discrete -Lap with Dirichlet boundaries on `grid`.
pub fn smallest_eigenvalue(grid: Grid) -> f64 {
    let h = grid.h();
    8.0 * (std::f64::consts::PI * h / 2.0).sin().powi(2) / (h * h)
}

pub fn validate_grf(g: &GrfParams) -> Result<()> {
    if !(g.alpha.is_finite() && g.alpha > 1.0) {
        bail!(
            "GRF alpha must be finite and > 1 (a field with finite variance), got {}",
            g.alpha
        );
    }
    if !(g.tau.is_finite() && g.tau > 0.0) {
        bail!("GRF tau must be finite and positive, got {}", g.tau);
    }
    Ok(())
}

/// R(f, u) with wavenumber k: zero on the boundary ring.
pub fn residual(grid: Grid, k: f64, f: &[f64], u: &[f64]) -> Vec<f64> {
    let n = grid.n;
    let ih2 = 1.0 / (grid.h() * grid.h());
    let mut r = vec![0.0; n * n];
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let p = j * n + i;
            let lap = u[p + 1] + u[p - 1] + u[p + n] + u[p - n] - 4.0 * u[p];
            r[p] = ih2 * lap + k * k * u[p] - f[p];
        }
    }
    r
}

/// The residual over [`FieldOps`], for any k (Poisson: 0).
pub fn emit<O: FieldOps>(k: f64, grid: Grid, o: &mut O, x: &O::V) -> O::V {
    let f = o.channel(x, 0);
    let u = o.channel(x, 1);
    let h = grid.h();
    let lap = o.conv3(&u, &LAPLACE_KERNEL);
    let lap = o.affine(&lap, 1.0 / (h * h), 0.0);
    let up = o.crop1(&u);
    let fp = o.crop1(&f);
    let ku = o.affine(&up, k * k, 0.0);
    let t = o.add(&lap, &ku);
    let r = o.sub(&t, &fp);
    o.pad1(&r)
}

#[inline]
fn unknown(n: usize, i: usize, j: usize) -> usize {
    (j - 1) * (n - 2) + (i - 1)
}

/// -(Lap + k^2) on the interior unknowns, lower triangle (what the Cholesky factorisation reads).
pub fn assemble(grid: Grid, k: f64) -> Result<SparseColMat<usize, f64>> {
    let n = grid.n;
    let m = (n - 2) * (n - 2);
    let ih2 = 1.0 / (grid.h() * grid.h());
    let mut t = Vec::with_capacity(3 * m);
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let row = unknown(n, i, j);
            t.push(Triplet::new(row, row, 4.0 * ih2 - k * k));
            if i > 1 {
                t.push(Triplet::new(row, unknown(n, i - 1, j), -ih2));
            }
            if j > 1 {
                t.push(Triplet::new(row, unknown(n, i, j - 1), -ih2));
            }
        }
    }
    SparseColMat::try_new_from_triplets(m, m, &t).context("assembling the Helmholtz matrix")
}

/// Solves R(f, u) = 0 for u with u = 0 on the boundary: the operator is factorised once.
pub struct Solver {
    grid: Grid,
    k: f64,
    llt: Llt<usize, f64>,
}

impl Solver {
    pub fn new(grid: Grid, k: f64) -> Result<Self> {
        let lmin = smallest_eigenvalue(grid);
        if k * k >= lmin {
            bail!(
                "k = {k} is too large for a {n}x{n} grid: k^2 must stay below the Laplacian's smallest \
                 eigenvalue {lmin:.3} (k < {:.3}) for the solver's positive-definite factorisation",
                lmin.sqrt(),
                n = grid.n
            );
        }
        let mat = assemble(grid, k)?;
        let symbolic = SymbolicLlt::try_new(mat.symbolic(), Side::Lower)
            .map_err(|e| anyhow::anyhow!("symbolic Cholesky failed: {e:?}"))?;
        let llt = Llt::try_new_with_symbolic(symbolic, mat.as_ref(), Side::Lower)
            .map_err(|e| anyhow::anyhow!("Cholesky factorisation failed: {e:?}"))?;
        Ok(Solver { grid, k, llt })
    }

    /// u for source f, and the relative residual ||R|| / ||f|| over the interior.
    pub fn solve(&self, f: &[f64]) -> Result<(Vec<f64>, f64)> {
        let (grid, n) = (self.grid, self.grid.n);
        if f.len() != grid.len() {
            bail!(
                "source has {} values, the {n}x{n} grid {}",
                f.len(),
                grid.len()
            );
        }
        if f.iter().any(|v| !v.is_finite()) {
            bail!("source must be finite");
        }
        let mut rhs = Mat::<f64>::zeros((n - 2) * (n - 2), 1);
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                rhs[(unknown(n, i, j), 0)] = -f[j * n + i];
            }
        }
        let sol = self.llt.solve(&rhs);
        let mut u = vec![0.0; grid.len()];
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                u[j * n + i] = sol[(unknown(n, i, j), 0)];
            }
        }
        let r = residual(grid, self.k, f, &u);
        let num: f64 = r.iter().map(|v| v * v).sum();
        let den: f64 = f.iter().map(|v| v * v).sum();
        Ok((u, (num / den.max(f64::MIN_POSITIVE)).sqrt()))
    }
}

/// Draws f from the GRF and solves for u.
pub struct SourceSampler {
    grf: GrfSampler,
    solver: Solver,
}

impl SourceSampler {
    pub fn new(grf: GrfParams, grid: Grid, k: f64) -> Result<Self> {
        Ok(SourceSampler {
            grf: GrfSampler::new(grf, grid.n),
            solver: Solver::new(grid, k)?,
        })
    }
}

impl Sampler for SourceSampler {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Result<Solved> {
        let f = self.grf.sample(rng);
        let (u, rel) = self.solver.solve(&f)?;
        Ok(Solved {
            fields: [f, u].concat(),
            solver_residual: rel,
        })
    }
}

impl Resolver for Solver {
    fn resolve(&self, fields: &[f64]) -> Result<Vec<f64>> {
        let f = &fields[..self.grid.len()];
        let (u, _) = self.solve(f)?;
        Ok([f.to_vec(), u].concat())
    }
}

/// ||f|| over the interior of a sample's (f, u) channels: the scale of the residual Lap u + k^2 u - f.
pub fn source_norm(grid: Grid, fields: &[f64]) -> f64 {
    let n = grid.n;
    let mut s = 0.0;
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            s += fields[j * n + i].powi(2);
        }
    }
    s.sqrt()
}

/// Forward: f given, u wanted; inverse: u given, f wanted (both channels scored by relative L2).
pub fn observed(task: Task) -> &'static [usize] {
    match task {
        Task::Forward => &[0],
        Task::Inverse => &[1],
    }
}

impl Family for HelmholtzParams {
    fn name(&self) -> &'static str {
        "helmholtz"
    }
    fn channels(&self) -> &'static [(&'static str, &'static str)] {
        CHANNELS
    }
    fn equation(&self) -> String {
        format!(
            "Lap u + k^2 u = f on (0,1)^2, u = 0 on the boundary, k = {}",
            self.k
        )
    }
    fn validate(&self) -> Result<()> {
        validate_grf(&self.grf)?;
        if !(self.k.is_finite() && self.k >= 0.0) {
            bail!(
                "Helmholtz wavenumber k must be finite and >= 0, got {}",
                self.k
            );
        }
        Ok(())
    }
    fn sampler(&self, grid: Grid) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(SourceSampler::new(self.grf, grid, self.k)?))
    }
    fn resolver(&self, grid: Grid) -> Result<Box<dyn Resolver>> {
        Ok(Box::new(Solver::new(grid, self.k)?))
    }
    fn source_norm(&self, grid: Grid, fields: &[f64]) -> f64 {
        source_norm(grid, fields)
    }
    fn source_channel(&self) -> Option<usize> {
        Some(0)
    }
    fn defect(&self, _grid: Grid) -> Defect {
        Defect::Dirichlet {
            shift: self.k * self.k,
            scale: 1.0,
        }
    }
    fn task_mask(&self, task: Task, grid: Grid) -> Vec<f32> {
        super::channel_mask(2, observed(task), grid)
    }
    fn given(&self, task: Task) -> String {
        super::channel_words(self.channels(), observed(task))
    }
    /// u = 0 on the boundary.
    fn fixed_zero(&self, grid: Grid) -> Vec<f32> {
        super::ring_mask(2, 1, grid)
    }
    fn metric(&self, _channel: usize) -> Metric {
        Metric::RelL2
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain parameters serialise")
    }
    fn reference_residual(&self, grid: Grid, fields: &[f64]) -> Vec<f64> {
        let (f, u) = fields.split_at(grid.len());
        residual(grid, self.k, f, u)
    }
    fn preset(&self) -> (&'static str, &'static str) {
        ("helmholtz", include_str!("../../presets/helmholtz.toml"))
    }
}

impl Residual for HelmholtzParams {
    fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, x: &O::V) -> O::V {
        emit(self.k, grid, o, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::f64::consts::PI;

    fn coords(n: usize) -> impl Iterator<Item = (usize, usize, f64, f64)> {
        Grid::new(n).unwrap().points()
    }

    /// u = sin(pi x) sin(2 pi y) x, f = Lap u + k^2 u: second-order convergence of the solver's
    /// answer, for Poisson (k = 0) and Helmholtz (k = 1, 3).
    #[test]
    fn manufactured_solution_converges_at_second_order() {
        for k in [0.0, 1.0, 3.0] {
            let mut prev: Option<f64> = None;
            println!("k = {k}\n{:>5} {:>12} {:>6}", "n", "max error", "order");
            for &n in &[16, 32, 64, 128] {
                let grid = Grid::new(n).unwrap();
                let (mut f, mut exact) = (vec![0.0; n * n], vec![0.0; n * n]);
                for (i, j, x, y) in coords(n) {
                    let p = j * n + i;
                    let (sx, cx) = ((PI * x).sin(), (PI * x).cos());
                    let s2 = (2.0 * PI * y).sin();
                    exact[p] = x * sx * s2;
                    // Lap(x sin(pi x) sin(2 pi y)) = (2 pi cos(pi x) - pi^2 x sin(pi x)) s2 - 4 pi^2 x sx s2
                    let lap = (2.0 * PI * cx - PI * PI * x * sx) * s2 - 4.0 * PI * PI * x * sx * s2;
                    f[p] = lap + k * k * exact[p];
                }
                let (u, rel) = Solver::new(grid, k).unwrap().solve(&f).unwrap();
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
                    assert!(
                        (o - 2.0).abs() < 0.15,
                        "observed order {o} at n = {n}, k = {k}"
                    );
                }
                prev = Some(err);
            }
        }
    }

    /// The stencil is exact on quadratics: Lap(x^2 + 3 y^2) = 8.
    #[test]
    fn stencil_exact_on_quadratics() {
        let n = 9;
        let grid = Grid::new(n).unwrap();
        let u: Vec<f64> = coords(n).map(|(_, _, x, y)| x * x + 3.0 * y * y).collect();
        let f = vec![0.0; n * n];
        for k in [0.0, 2.0] {
            let r = residual(grid, k, &f, &u);
            for (i, j, _, _) in
                coords(n).filter(|&(i, j, _, _)| i > 0 && j > 0 && i < n - 1 && j < n - 1)
            {
                let p = j * n + i;
                assert!(
                    (r[p] - 8.0 - k * k * u[p]).abs() < 1e-9,
                    "({i},{j}) {}",
                    r[p]
                );
            }
            assert!(coords(n)
                .filter(|&(i, j, _, _)| i == 0 || j == 0 || i == n - 1 || j == n - 1)
                .all(|(i, j, _, _)| r[j * n + i] == 0.0));
        }
    }

    #[test]
    fn samples_meet_solver_tolerance_and_large_k_is_refused() {
        let grid = Grid::new(32).unwrap();
        let s = HelmholtzParams::default().sampler(grid).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = s.sample(&mut rng).unwrap();
        assert!(x.solver_residual <= 1e-10, "{}", x.solver_residual);
        let (f, u) = x.fields.split_at(grid.len());
        let r = residual(grid, 1.0, f, u);
        let scale = f.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(r.iter().all(|v| v.abs() <= 1e-9 * scale));
        assert!(u.iter().any(|v| *v != 0.0));
        let big = HelmholtzParams {
            k: 4.5,
            ..Default::default()
        };
        let e = big.sampler(grid).err().unwrap().to_string();
        assert!(e.contains("k = 4.5 is too large"), "{e}");
        assert!(Solver::new(grid, 1.0)
            .unwrap()
            .solve(&[f64::NAN; 1024])
            .is_err());
    }
}
