//! 2-D incompressible Navier-Stokes in vorticity form on the periodic unit square:
//!   w_t + v . grad w = nu Lap w + f,   v = (psi_y, -psi_x),   Lap psi = -w,
//! DiffusionPDE's set-up (nu = 1e-3, f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)), w0 = GRF(2.5, 7),
//! T = 1) on an n x n grid (spacing 1/n), the field being `levels` time levels of w, t_k = k T / (levels - 1).
//!
//! Discretisation (the one definition; the residual over `FieldOps` is tied to it by a test):
//! L the 5-point periodic Laplacian, D_x, D_y central differences, psi = -L^+ w exactly (the
//! periodic inverse on zero-mean fields: w keeps the zero mean of w0 and f), and
//!   N(w) = (D_y psi) D_x w - (D_x psi) D_y w - nu L w - f,
//!   R_k = (w_k - w_{k-1}) / dt + (N(w_k) + N(w_{k-1})) / 2   for levels k >= 1; level 0 carries none.
//! Crank-Nicolson, one step per level: the data solver takes each by fixed-point iterations on
//! R_k = 0 (the implicit diffusion inverted exactly in Fourier space, the advection lagged) to
//! 1e-12, so the data's residual sits at that tolerance. For a single eigenmode of L, psi is
//! proportional to w and the discrete advection vanishes identically: a Taylor-Green vortex decays
//! at exactly the scheme's rate, which the tests check.

use super::grf::{GrfParams, GrfSampler};
use super::ops::FieldOps;
use super::{
    Boundary, Defect, Family, Geometry, Grid, Metric, Residual, Resolver, Sampler, Scored, Solved,
    Stepping, Task,
};
use anyhow::{bail, Result};
use rustfft::{num_complex::Complex, Fft, FftPlanner};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use std::sync::Arc;

/// The fewest time levels a field may have (the initial one and three more).
pub const MIN_LEVELS: usize = 4;
/// The most time levels (channels) a field may have.
pub const MAX_LEVELS: usize = 32;
/// The smallest grid a side.
pub const MIN_GRID: usize = 8;
const UNITS: &str = "vorticity (1/s); channel k is the level t = k t_end / (levels - 1)";
/// The channels of the most levels; a field of `levels` levels has the first `levels`.
static CHANNELS: [(&str, &str); MAX_LEVELS] = [
    ("w0", UNITS),
    ("w1", UNITS),
    ("w2", UNITS),
    ("w3", UNITS),
    ("w4", UNITS),
    ("w5", UNITS),
    ("w6", UNITS),
    ("w7", UNITS),
    ("w8", UNITS),
    ("w9", UNITS),
    ("w10", UNITS),
    ("w11", UNITS),
    ("w12", UNITS),
    ("w13", UNITS),
    ("w14", UNITS),
    ("w15", UNITS),
    ("w16", UNITS),
    ("w17", UNITS),
    ("w18", UNITS),
    ("w19", UNITS),
    ("w20", UNITS),
    ("w21", UNITS),
    ("w22", UNITS),
    ("w23", UNITS),
    ("w24", UNITS),
    ("w25", UNITS),
    ("w26", UNITS),
    ("w27", UNITS),
    ("w28", UNITS),
    ("w29", UNITS),
    ("w30", UNITS),
    ("w31", UNITS),
];
/// Fixed-point iterations per step before the solver gives up.
const MAX_ITERATIONS: usize = 200;
/// Relative change of w at which a step's iterations stop.
const TOLERANCE: f64 = 1e-12;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NavierStokesParams {
    /// Kinematic viscosity.
    pub nu: f64,
    /// Final time: the last level.
    pub t_end: f64,
    /// Time levels of w, the field's channels; level 0 is the initial condition.
    pub levels: usize,
    /// The initial vorticity's GRF (its mean mode zero).
    pub grf: GrfParams,
    /// Amplitude of the forcing f = forcing (sin 2 pi (x + y) + cos 2 pi (x + y)).
    pub forcing: f64,
}

impl Default for NavierStokesParams {
    fn default() -> Self {
        NavierStokesParams {
            nu: 1e-3,
            t_end: 1.0,
            levels: 11,
            grf: GrfParams {
                alpha: 2.5,
                tau: 7.0,
            },
            forcing: 0.1,
        }
    }
}

impl NavierStokesParams {
    pub fn h(&self, grid: Grid) -> f64 {
        1.0 / grid.n as f64
    }
    pub fn dt(&self) -> f64 {
        self.t_end / (self.levels as f64 - 1.0)
    }

    /// Refuses parameters out of range, naming them.
    pub fn check(&self) -> Result<()> {
        if !(self.nu.is_finite() && self.nu > 0.0) {
            bail!(
                "Navier-Stokes viscosity nu must be finite and positive, got {}",
                self.nu
            );
        }
        if !(self.t_end.is_finite() && self.t_end > 0.0) {
            bail!(
                "Navier-Stokes final time t_end must be finite and positive, got {}",
                self.t_end
            );
        }
        if !(MIN_LEVELS..=MAX_LEVELS).contains(&self.levels) {
            bail!(
                "Navier-Stokes levels (time levels of w) must be {MIN_LEVELS} to {MAX_LEVELS}, got {}",
                self.levels
            );
        }
        if !(self.grf.alpha.is_finite() && self.grf.alpha > 1.0) {
            bail!(
                "Navier-Stokes GRF alpha must be finite and > 1, got {}",
                self.grf.alpha
            );
        }
        if !(self.grf.tau.is_finite() && self.grf.tau > 0.0) {
            bail!(
                "Navier-Stokes GRF tau must be finite and positive, got {}",
                self.grf.tau
            );
        }
        if !self.forcing.is_finite() {
            bail!("Navier-Stokes forcing must be finite, got {}", self.forcing);
        }
        Ok(())
    }

    /// The forcing on an n x n grid, row-major [y][x].
    pub fn force(&self, n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|p| {
                let (x, y) = ((p % n) as f64 / n as f64, (p / n) as f64 / n as f64);
                let s = 2.0 * PI * (x + y);
                self.forcing * (s.sin() + s.cos())
            })
            .collect()
    }
}

/// Eigenvalues of the 1-D periodic second difference on `n` points of spacing 1/n, by FFT index:
/// -4 n^2 sin^2(pi k / n).
pub fn second_difference_eigenvalues(n: usize) -> Vec<f64> {
    let nn = (n * n) as f64;
    (0..n)
        .map(|k| -4.0 * nn * (PI * k as f64 / n as f64).sin().powi(2))
        .collect()
}

/// The periodic grid's operators: stencils, and the exact inverses the solver needs, in Fourier
/// space (2-D FFTs planned once).
pub struct Periodic {
    n: usize,
    /// The 2-D Laplacian's eigenvalue of each FFT index, row-major.
    lap: Vec<f64>,
    fwd: Arc<dyn Fft<f64>>,
    inv: Arc<dyn Fft<f64>>,
}

impl Periodic {
    pub fn new(n: usize) -> Self {
        let mu = second_difference_eigenvalues(n);
        let lap = (0..n * n).map(|p| mu[p / n] + mu[p % n]).collect();
        let mut planner = FftPlanner::new();
        Periodic {
            n,
            lap,
            fwd: planner.plan_fft_forward(n),
            inv: planner.plan_fft_inverse(n),
        }
    }

    fn fft2(&self, f: &[f64], forward: bool) -> Vec<Complex<f64>> {
        let c: Vec<Complex<f64>> = f.iter().map(|&v| Complex::new(v, 0.0)).collect();
        self.fft2c(c, forward)
    }

    fn fft2c(&self, mut c: Vec<Complex<f64>>, forward: bool) -> Vec<Complex<f64>> {
        let plan = if forward { &self.fwd } else { &self.inv };
        super::grf::fft2(plan.as_ref(), &mut c, self.n);
        c
    }

    /// The field whose Fourier coefficients are those of `f` times `symbol` (real, by FFT index).
    fn multiply(&self, f: &[f64], symbol: impl Fn(usize) -> f64) -> Vec<f64> {
        let mut c = self.fft2(f, true);
        for (p, z) in c.iter_mut().enumerate() {
            *z *= symbol(p);
        }
        let norm = 1.0 / (self.n * self.n) as f64;
        self.fft2c(c, false).iter().map(|z| z.re * norm).collect()
    }

    /// psi = -L^+ w: the stream function of zero-mean w (its mean mode dropped).
    pub fn stream(&self, w: &[f64]) -> Vec<f64> {
        self.multiply(w, |p| if p == 0 { 0.0 } else { -1.0 / self.lap[p] })
    }

    /// The 5-point Laplacian.
    pub fn laplacian(&self, w: &[f64]) -> Vec<f64> {
        let (n, nn) = (self.n, (self.n * self.n) as f64);
        (0..n * n)
            .map(|p| {
                let (i, j) = (p % n, p / n);
                let at = |i: usize, j: usize| w[j * n + i];
                (at((i + 1) % n, j)
                    + at((i + n - 1) % n, j)
                    + at(i, (j + 1) % n)
                    + at(i, (j + n - 1) % n)
                    - 4.0 * w[p])
                    * nn
            })
            .collect()
    }

    /// Central differences along x (`axis` 0) or y (1).
    pub fn central(&self, w: &[f64], axis: usize) -> Vec<f64> {
        let n = self.n;
        let half_inv_h = 0.5 * n as f64;
        (0..n * n)
            .map(|p| {
                let (i, j) = (p % n, p / n);
                let (e, west) = if axis == 0 {
                    (j * n + (i + 1) % n, j * n + (i + n - 1) % n)
                } else {
                    (((j + 1) % n) * n + i, ((j + n - 1) % n) * n + i)
                };
                (w[e] - w[west]) * half_inv_h
            })
            .collect()
    }

    /// (D_y psi) D_x w - (D_x psi) D_y w, psi the stream function of w.
    pub fn advection(&self, w: &[f64]) -> Vec<f64> {
        let psi = self.stream(w);
        let (u, v) = (self.central(&psi, 1), self.central(&psi, 0));
        let (wx, wy) = (self.central(w, 0), self.central(w, 1));
        (0..w.len()).map(|p| u[p] * wx[p] - v[p] * wy[p]).collect()
    }
}

/// N(w) = advection - nu L w - f.
fn operator(ops: &Periodic, nu: f64, f: &[f64], w: &[f64]) -> Vec<f64> {
    let (a, l) = (ops.advection(w), ops.laplacian(w));
    (0..w.len()).map(|p| a[p] - nu * l[p] - f[p]).collect()
}

/// R of `levels` levels of w on an n x n grid (concatenated planes), level 0 zero.
pub fn residual_levels(p: &NavierStokesParams, ops: &Periodic, w: &[f64]) -> Vec<f64> {
    let plane = ops.n * ops.n;
    let (dt, f) = (p.dt(), p.force(ops.n));
    let mut r = vec![0.0; w.len()];
    let mut prev_n = operator(ops, p.nu, &f, &w[..plane]);
    for k in 1..w.len() / plane {
        let (prev, cur) = (
            &w[(k - 1) * plane..k * plane],
            &w[k * plane..(k + 1) * plane],
        );
        let cur_n = operator(ops, p.nu, &f, cur);
        for q in 0..plane {
            r[k * plane + q] = (cur[q] - prev[q]) / dt + 0.5 * (cur_n[q] + prev_n[q]);
        }
        prev_n = cur_n;
    }
    r
}

/// Integrates from `w0` over `steps` Crank-Nicolson steps of `dt` (n x n from w0's length) with
/// parameters `p` (its `levels` and `t_end` not used); returns the steps + 1 levels and the
/// largest relative residual of a step, ||R_k|| / (||w_{k-1}|| / dt).
pub fn integrate(
    p: &NavierStokesParams,
    ops: &Periodic,
    dt: f64,
    steps: usize,
    w0: &[f64],
) -> Result<(Vec<f64>, f64)> {
    if w0.iter().any(|v| !v.is_finite()) {
        bail!("initial vorticity must be finite");
    }
    let (n, nu) = (ops.n, p.nu);
    let f = p.force(n);
    // Crank-Nicolson's implicit diffusion, inverted exactly: 1 / (1/dt - nu/2 lambda)
    let implicit: Vec<f64> = ops
        .lap
        .iter()
        .map(|l| 1.0 / (1.0 / dt - 0.5 * nu * l))
        .collect();
    let mut out = w0.to_vec();
    let mut prev = w0.to_vec();
    let mut worst: f64 = 0.0;
    for step in 1..=steps {
        let prev_n = operator(ops, nu, &f, &prev);
        let explicit: Vec<f64> = (0..n * n)
            .map(|q| prev[q] / dt - 0.5 * prev_n[q] + 0.5 * f[q])
            .collect();
        let mut w = prev.clone();
        let scale = prev.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        let mut converged = false;
        for _ in 0..MAX_ITERATIONS {
            let a = ops.advection(&w);
            let rhs: Vec<f64> = (0..n * n).map(|q| explicit[q] - 0.5 * a[q]).collect();
            let next = ops.multiply(&rhs, |q| implicit[q]);
            let change = next
                .iter()
                .zip(&w)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            w = next;
            if change <= TOLERANCE * scale {
                converged = true;
                break;
            }
        }
        if !converged {
            bail!("the fixed-point iterations of step {step} did not converge in {MAX_ITERATIONS} (nu = {nu}, dt = {dt}, n = {n}): take more levels");
        }
        let cur_n = operator(ops, nu, &f, &w);
        let r = (0..n * n)
            .map(|q| ((w[q] - prev[q]) / dt + 0.5 * (cur_n[q] + prev_n[q])).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = prev.iter().map(|v| v * v).sum::<f64>().sqrt() / dt;
        worst = worst.max(r / norm.max(1e-300));
        out.extend_from_slice(&w);
        prev = w;
    }
    Ok((out, worst))
}

/// Draws and solves fields of one grid: the GRF and the FFT plans made once.
pub struct NavierStokesSampler {
    params: NavierStokesParams,
    ops: Periodic,
    grf: GrfSampler,
}

impl NavierStokesSampler {
    pub fn new(params: NavierStokesParams, grid: Grid) -> Result<Self> {
        params.check()?;
        if grid.n < MIN_GRID {
            bail!(
                "Navier-Stokes needs a grid of at least {MIN_GRID} points a side, got {}",
                grid.n
            );
        }
        Ok(NavierStokesSampler {
            params,
            ops: Periodic::new(grid.n),
            grf: GrfSampler::new(params.grf, grid.n),
        })
    }

    /// The levels that follow `w0`.
    pub fn solve(&self, w0: &[f64]) -> Result<(Vec<f64>, f64)> {
        let p = &self.params;
        integrate(p, &self.ops, p.dt(), p.levels - 1, w0)
    }
}

impl Sampler for NavierStokesSampler {
    /// One field ([levels][n][n]) from a draw of w0, and the solver's relative residual.
    fn sample(&self, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Solved> {
        let w0 = self.grf.sample(rng);
        let (fields, solver_residual) = self.solve(&w0)?;
        Ok(Solved {
            fields,
            solver_residual,
        })
    }
}

/// The integration of a sample's own first level.
impl Resolver for NavierStokesSampler {
    fn resolve(&self, fields: &[f64]) -> Result<Vec<f64>> {
        Ok(self.solve(&fields[..self.ops.n * self.ops.n])?.0)
    }
}

/// The real orthonormal Fourier basis of `n` periodic points (columns: the constant, then cos and
/// sin of each wavenumber 1 .. (n-1)/2, then (-1)^j for even n; row-major [point][column]) and the
/// periodic second difference's eigenvalue of each column: Q diag(mu) Q^T is that difference.
pub fn fourier_basis(n: usize) -> (Vec<f64>, Vec<f64>) {
    let nf = n as f64;
    let mu_of = |k: usize| -4.0 * nf * nf * (PI * k as f64 / nf).sin().powi(2);
    let mut cols: Vec<(Vec<f64>, f64)> = vec![(vec![1.0 / nf.sqrt(); n], 0.0)];
    for k in 1..n.div_ceil(2) {
        let a = (2.0 / nf).sqrt();
        let w = |j: usize| 2.0 * PI * (k * j) as f64 / nf;
        cols.push(((0..n).map(|j| a * w(j).cos()).collect(), mu_of(k)));
        cols.push(((0..n).map(|j| a * w(j).sin()).collect(), mu_of(k)));
    }
    if n.is_multiple_of(2) {
        let v = (0..n)
            .map(|j| if j.is_multiple_of(2) { 1.0 } else { -1.0 } / nf.sqrt())
            .collect();
        cols.push((v, mu_of(n / 2)));
    }
    let q = (0..n * n).map(|p| cols[p % n].0[p / n]).collect();
    (q, cols.iter().map(|c| c.1).collect())
}

impl Family for NavierStokesParams {
    fn name(&self) -> &'static str {
        "navier_stokes"
    }
    fn channels(&self) -> &'static [(&'static str, &'static str)] {
        &CHANNELS[..self.levels.clamp(1, MAX_LEVELS)]
    }
    fn equation(&self) -> String {
        format!(
            "w_t + v . grad w = nu Lap w + f, v = (psi_y, -psi_x), Lap psi = -w on the periodic unit square, \
             t in [0,{}] ({} levels), nu = {}, f = {} (sin 2 pi (x + y) + cos 2 pi (x + y))",
            self.t_end, self.levels, self.nu, self.forcing
        )
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
    fn sampler(&self, grid: Grid) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(NavierStokesSampler::new(*self, grid)?))
    }
    fn resolver(&self, grid: Grid) -> Result<Box<dyn Resolver>> {
        Ok(Box::new(NavierStokesSampler::new(*self, grid)?))
    }
    /// ||(w_k - w_{k-1}) / dt|| over levels k >= 1: the time derivative the residual balances.
    fn source_norm(&self, grid: Grid, fields: &[f64]) -> f64 {
        let (plane, dt) = (grid.len(), self.dt());
        (plane..fields.len())
            .map(|p| ((fields[p] - fields[p - plane]) / dt).powi(2))
            .sum::<f64>()
            .sqrt()
    }
    fn defect(&self, _grid: Grid) -> Defect {
        Defect::TimeIntegral {
            dt: self.dt(),
            axis: 1,
        }
    }
    fn residual_channels(&self) -> usize {
        self.levels
    }
    /// Forward: the first level given; inverse: the last.
    fn task_mask(&self, task: Task, grid: Grid) -> Vec<f32> {
        let seen = match task {
            Task::Forward => 0,
            Task::Inverse => self.levels - 1,
        };
        super::channel_mask(self.levels, &[seen], grid)
    }
    fn given(&self, task: Task) -> String {
        match task {
            Task::Forward => "w at t = 0".into(),
            Task::Inverse => format!("w at t = {}", self.t_end),
        }
    }
    /// Forward: every later level as one; inverse: the first level.
    fn scored(&self, task: Task, grid: Grid) -> Vec<Scored> {
        let (channel, count, label) = match task {
            Task::Forward => (1, self.levels - 1, "w for t > 0"),
            Task::Inverse => (0, 1, "w at t = 0"),
        };
        vec![Scored {
            channel,
            count,
            label: label.into(),
            region: vec![true; grid.len()],
            lowpass: None,
        }]
    }
    /// The sparse task observes a share of the points of every level.
    fn sparse_source(&self, grid: Grid) -> Vec<f32> {
        vec![1.0; self.levels * grid.len()]
    }
    /// Levels that leave the same points unobserved are scored as one field ("w"), the others
    /// level by level.
    fn unobserved_parts(&self, mask: &[f32], plane: usize) -> Vec<Scored> {
        let first = &mask[..plane];
        if first.contains(&0.0) && mask.chunks(plane).all(|m| m == first) {
            return vec![Scored {
                channel: 0,
                count: self.levels,
                label: "w".into(),
                region: first.iter().map(|&v| v == 0.0).collect(),
                lowpass: None,
            }];
        }
        super::unobserved(self.channels(), mask, plane)
    }
    fn figure_channels(&self) -> Vec<usize> {
        vec![0, self.levels / 2, self.levels - 1]
    }
    fn signed(&self, _channel: usize) -> bool {
        true
    }
    fn metric(&self, _channel: usize) -> Metric {
        Metric::RelL2
    }
    /// (s, -s): w0 a stationary GRF on the periodic square, and the forcing a function of x + y
    /// only, which the translation keeps.
    fn translation(&self) -> Option<super::Translation> {
        Some(super::Translation { dy: 1, dx: -1 })
    }
    fn geometry(&self, grid: Grid) -> Geometry {
        let h = self.h(grid);
        Geometry {
            domain: [[0.0, 1.0], [0.0, 1.0]],
            spacing: [h, h],
            boundary: [Boundary::Periodic, Boundary::Periodic],
        }
    }
    fn equation_points(&self, grid: Grid) -> usize {
        (self.levels - 1) * grid.len()
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain parameters serialise")
    }
    fn reference_residual(&self, grid: Grid, fields: &[f64]) -> Vec<f64> {
        residual_levels(self, &Periodic::new(grid.n), fields)
    }
    fn preset(&self) -> (&'static str, &'static str) {
        (
            "navier_stokes",
            include_str!("../../presets/navier_stokes.toml"),
        )
    }
}

/// R of every level at once ([B, levels, n, n]; level 0 zero), the levels as channels: psi by
/// the exact periodic inverse in the real Fourier basis (four constant matrix products and a
/// pointwise scaling), derivatives by shifts, the time difference by a shift across channels.
/// The periodic n x n matrix of a three-point stencil (west, centre, east weights).
fn periodic_stencil(n: usize, w: [f64; 3]) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + (i + n - 1) % n] += w[0];
        m[i * n + i] += w[1];
        m[i * n + (i + 1) % n] += w[2];
    }
    m
}

impl NavierStokesParams {
    /// The plane of Q^T . Q coefficients a diagonal operator of the periodic Laplacian's
    /// eigenvalues multiplies by, applied to w: Q (d * (Q^T w Q)) Q^T, d(lambda) per mode.
    fn emit_fourier_diagonal<O: FieldOps>(
        grid: Grid,
        o: &mut O,
        w: &O::V,
        d: impl Fn(usize, f64) -> f64,
    ) -> O::V {
        let n = grid.n;
        let (q, mu) = fourier_basis(n);
        let qt: Vec<f64> = (0..n * n).map(|p| q[(p % n) * n + p / n]).collect();
        let plane: Vec<f64> = (0..n * n).map(|p| d(p, mu[p / n] + mu[p % n])).collect();
        let zero = vec![0.0; n * n];
        let a = o.matmul_axis(w, 2, &qt);
        let a = o.matmul_axis(&a, 3, &qt);
        let a = o.affine_plane(&a, &plane, &zero);
        let a = o.matmul_axis(&a, 2, &q);
        o.matmul_axis(&a, 3, &q)
    }
}

impl Residual for NavierStokesParams {
    fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, w: &O::V) -> O::V {
        let dt = self.dt();
        // F(w) = N(w) + L w on every level
        let adv = self.emit_nonlinear(grid, o, w);
        let diffusion = self.emit_linear(grid, o, w);
        let op = o.add(&adv, &diffusion);
        // Crank-Nicolson between each level and the one before (zero enters before level 0)
        let w_prev = o.shift(w, 1, 1, false);
        let op_prev = o.shift(&op, 1, 1, false);
        let dw = o.sub(w, &w_prev);
        let dwdt = o.affine(&dw, 1.0 / dt, 0.0);
        let ops = o.add(&op, &op_prev);
        let r = o.affine(&ops, 0.5, 0.0);
        let r = o.add(&dwdt, &r);
        // level 0 carries no equation: shift across channels up then down zeroes it
        let up = o.shift(&r, 1, -1, false);
        o.shift(&up, 1, 1, false)
    }

    fn stepping(&self, _grid: Grid) -> Option<Stepping> {
        Some(Stepping {
            dt: self.dt(),
            axis: 1,
        })
    }

    /// N(w) = (D_y psi) D_x w - (D_x psi) D_y w - f, psi = -L^+ w in the Fourier basis (zero for
    /// the mean mode).
    fn emit_nonlinear<O: FieldOps>(&self, grid: Grid, o: &mut O, w: &O::V) -> O::V {
        let psi =
            Self::emit_fourier_diagonal(grid, o, w, |p, l| if p == 0 { 0.0 } else { -1.0 / l });
        // central differences as periodic matrices: one graph node each where shifts take nine
        // (the march evaluates N fifty times)
        let nf = grid.n as f64;
        let d = periodic_stencil(grid.n, [-0.5 * nf, 0.0, 0.5 * nf]);
        let (wx, wy) = (o.matmul_axis(w, 3, &d), o.matmul_axis(w, 2, &d));
        let (px, py) = (o.matmul_axis(&psi, 3, &d), o.matmul_axis(&psi, 2, &d));
        let t1 = o.mul(&py, &wx);
        let t2 = o.mul(&px, &wy);
        let adv = o.sub(&t1, &t2);
        let n = grid.n;
        let minus_f: Vec<f64> = self.force(n).iter().map(|v| -v).collect();
        o.affine_plane(&adv, &vec![1.0; n * n], &minus_f)
    }

    /// L w = -nu (5-point periodic Laplacian of w).
    fn emit_linear<O: FieldOps>(&self, grid: Grid, o: &mut O, w: &O::V) -> O::V {
        let k = (grid.n * grid.n) as f64;
        let d2 = periodic_stencil(grid.n, [k, -2.0 * k, k]);
        let (a, b) = (o.matmul_axis(w, 3, &d2), o.matmul_axis(w, 2, &d2));
        let sum = o.add(&a, &b);
        o.affine(&sum, -self.nu, 0.0)
    }

    /// (I / dt - nu L / 2)^-1, diagonal in the Laplacian's Fourier basis.
    fn emit_implicit<O: FieldOps>(&self, grid: Grid, o: &mut O, r: &O::V) -> O::V {
        let (dt, nu) = (self.dt(), self.nu);
        Self::emit_fourier_diagonal(grid, o, r, |_, l| 1.0 / (1.0 / dt - 0.5 * nu * l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    /// The stencils on analytic fields: the Laplacian and central differences of sin(2 pi k x)
    /// cos(2 pi m y) are their symbols times the field (exactly), and converge at second order
    /// to the continuous derivatives; psi inverts L exactly.
    #[test]
    fn stencils_on_analytic_fields() {
        let mut errs = Vec::new();
        for n in [16usize, 32, 64] {
            let ops = Periodic::new(n);
            let (k, m) = (1.0, 2.0);
            let field = |g: &dyn Fn(f64, f64) -> f64| -> Vec<f64> {
                (0..n * n)
                    .map(|p| g((p % n) as f64 / n as f64, (p / n) as f64 / n as f64))
                    .collect()
            };
            let w = field(&|x, y| (2.0 * PI * k * x).sin() * (2.0 * PI * m * y).cos());
            let exact_lap: Vec<f64> = w
                .iter()
                .map(|v| -4.0 * PI * PI * (k * k + m * m) * v)
                .collect();
            let dx =
                field(&|x, y| 2.0 * PI * k * (2.0 * PI * k * x).cos() * (2.0 * PI * m * y).cos());
            let lap = ops.laplacian(&w);
            // the discrete symbol exactly
            let mu = |q: f64| -4.0 * (n * n) as f64 * (PI * q / n as f64).sin().powi(2);
            for (l, v) in lap.iter().zip(&w) {
                assert!((l - (mu(k) + mu(m)) * v).abs() < 1e-9 * (n * n) as f64);
            }
            errs.push((rel(&lap, &exact_lap), rel(&ops.central(&w, 0), &dx)));
            // psi: L psi = -w exactly on zero-mean fields
            let psi = ops.stream(&w);
            let back: Vec<f64> = ops.laplacian(&psi).iter().map(|v| -v).collect();
            assert!(rel(&back, &w) < 1e-12, "n {n}: {}", rel(&back, &w));
        }
        for pair in errs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!((a.0 / b.0 - 4.0).abs() < 0.1, "Laplacian order {errs:?}");
            assert!(
                (a.1 / b.1 - 4.0).abs() < 0.1,
                "central difference order {errs:?}"
            );
        }
    }

    /// A Taylor-Green vortex w = A cos(2 pi x) cos(2 pi y) is an eigenmode of L: its advection
    /// vanishes identically and, unforced, it decays by Crank-Nicolson's factor each step.
    #[test]
    fn taylor_green_vortex_decays_at_the_scheme_rate() {
        let (n, a) = (32usize, 2.0);
        let p = NavierStokesParams {
            nu: 1e-2,
            forcing: 0.0,
            ..Default::default()
        };
        let ops = Periodic::new(n);
        let w0: Vec<f64> = (0..n * n)
            .map(|q| {
                let (x, y) = ((q % n) as f64 / n as f64, (q / n) as f64 / n as f64);
                a * (2.0 * PI * x).cos() * (2.0 * PI * y).cos()
            })
            .collect();
        assert!(ops.advection(&w0).iter().all(|v| v.abs() < 1e-12));
        let dt = 0.1;
        let (w, rel_res) = integrate(&p, &ops, dt, 10, &w0).unwrap();
        assert!(rel_res < 1e-12, "{rel_res}");
        let lam = 2.0 * second_difference_eigenvalues(n)[1];
        let g = (1.0 + 0.5 * dt * p.nu * lam) / (1.0 - 0.5 * dt * p.nu * lam);
        for k in 0..=10 {
            for q in 0..n * n {
                let want = w0[q] * g.powi(k as i32);
                assert!((w[k * n * n + q] - want).abs() < 1e-12, "level {k}");
            }
        }
        // and the continuous decay exp(-8 pi^2 nu t), to the scheme's accuracy
        let t = 10.0 * dt;
        let cont = (-8.0 * PI * PI * p.nu * t).exp();
        assert!((g.powi(10) - cont).abs() < 1e-2 * cont);
    }

    /// The coarse data against a solve with 4x the points and 4x the steps from the same initial
    /// vorticity (the fine draw's modes that the coarse grid resolves), at the coarse points and
    /// levels: the data are resolved (<= 3 % relative L2 at 32 points) and the difference falls
    /// with the resolution.
    #[test]
    fn data_are_resolved_against_a_finer_solve() {
        let p = NavierStokesParams::default();
        println!("{:>5} {:>14}", "n", "rel. L2 vs 4x");
        let mut worst_of = Vec::new();
        for n in [16usize, 32] {
            let (coarse, fine) = (Periodic::new(n), Periodic::new(4 * n));
            let grf = GrfSampler::new(p.grf, 4 * n);
            let mut worst: f64 = 0.0;
            for seed in 0..3 {
                let w0f = grf.sample(&mut ChaCha8Rng::seed_from_u64(seed));
                // keep the modes |k| < n/2 a side, so the coarse grid samples the same function
                let half = (n / 2) as f64;
                let w0f = fine.multiply(&w0f, |q| {
                    let (i, j) = (q % (4 * n), q / (4 * n));
                    let k = |i: usize| super::super::grf::wavenumber(i, 4 * n).abs();
                    (k(i) < half && k(j) < half) as u8 as f64
                });
                let w0: Vec<f64> = (0..n * n)
                    .map(|q| w0f[(4 * (q / n)) * 4 * n + 4 * (q % n)])
                    .collect();
                let steps = p.levels - 1;
                let (c, r) = integrate(&p, &coarse, p.dt(), steps, &w0).unwrap();
                assert!(r < 1e-10, "{r}");
                let (f, _) = integrate(&p, &fine, p.dt() / 4.0, 4 * steps, &w0f).unwrap();
                let plane = 16 * n * n;
                let at: Vec<f64> = (0..p.levels * n * n)
                    .map(|q| {
                        let (k, r) = (q / (n * n), q % (n * n));
                        f[4 * k * plane + (4 * (r / n)) * 4 * n + 4 * (r % n)]
                    })
                    .collect();
                worst = worst.max(rel(&c, &at));
            }
            println!("{n:>5} {worst:>14.4e}");
            worst_of.push(worst);
        }
        assert!(
            worst_of[1] <= 0.03,
            "32 points: {:.2} % off the finer solve",
            100.0 * worst_of[1]
        );
        assert!(worst_of[0] > 2.0 * worst_of[1], "convergence {worst_of:?}");
    }

    /// The data's residual sits at the solver's tolerance, the mean of w stays zero, and
    /// parameters out of range are refused by name.
    #[test]
    fn samples_meet_tolerance_and_bad_parameters_are_named() {
        let p = NavierStokesParams::default();
        let grid = Grid::new(32).unwrap();
        let s = NavierStokesSampler::new(p, grid).unwrap();
        let Solved {
            fields: w,
            solver_residual: rel_res,
        } = s.sample(&mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(w.len(), p.levels * grid.len());
        assert!(rel_res < 1e-10, "{rel_res}");
        let ops = Periodic::new(32);
        let r = residual_levels(&p, &ops, &w);
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs())) / p.dt();
        assert!(r.iter().all(|v| v.abs() <= 1e-10 * scale));
        assert!(r[..grid.len()].iter().all(|&v| v == 0.0));
        for k in 0..p.levels {
            let mean: f64 = w[k * 1024..(k + 1) * 1024].iter().sum::<f64>() / 1024.0;
            assert!(mean.abs() < 1e-12, "level {k} mean {mean}");
        }
        // the flow moves: advection changes the last level by more than 1 % against diffusion alone
        let linear = NavierStokesParams { ..p };
        let ops = Periodic::new(32);
        let w0 = &w[..1024];
        let (lin, _) = integrate_linear(&linear, &ops, w0);
        let last = (p.levels - 1) * 1024..p.levels * 1024;
        assert!(rel(&lin[last.clone()], &w[last]) > 0.01);

        for (bad, name) in [
            (NavierStokesParams { nu: 0.0, ..p }, "viscosity nu"),
            (NavierStokesParams { levels: 3, ..p }, "levels"),
            (
                NavierStokesParams {
                    t_end: f64::NAN,
                    ..p
                },
                "t_end",
            ),
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
        let e = NavierStokesSampler::new(p, Grid::new(6).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at least 8"), "{e}");
    }

    /// The same steps without advection (the Stokes limit), for comparison.
    fn integrate_linear(p: &NavierStokesParams, ops: &Periodic, w0: &[f64]) -> (Vec<f64>, ()) {
        let (n, dt) = (ops.n, p.dt());
        let f = p.force(n);
        let mut out = w0.to_vec();
        let mut w = w0.to_vec();
        for _ in 1..p.levels {
            let l = ops.laplacian(&w);
            let rhs: Vec<f64> = (0..n * n)
                .map(|q| w[q] / dt + 0.5 * p.nu * l[q] + f[q])
                .collect();
            w = ops.multiply(&rhs, |q| 1.0 / (1.0 / dt - 0.5 * p.nu * ops.lap[q]));
            out.extend_from_slice(&w);
        }
        (out, ())
    }
}
