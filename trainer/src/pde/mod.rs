//! The PDE families the trainer knows. A family is one module: its parameters, channels, data
//! solver, residual (written once over [`FieldOps`]), pointwise reference residual, tasks, metrics
//! and shipped preset. Adding one means writing its module and one line in [`register!`]'s list at
//! the bottom of this file; every test over families (residual against its reference, presets,
//! parsing, the tiny pipeline) then covers it.

pub mod grf;
pub mod ops;

use anyhow::{bail, Result};
pub use ops::FieldOps;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A uniform grid of `n x n` points on the unit square, boundary included: spacing 1 / (n - 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub n: usize,
}

impl Grid {
    pub fn new(n: usize) -> Result<Self> {
        if n < 4 {
            bail!("grid must have at least 4 points a side, got {n}");
        }
        Ok(Grid { n })
    }
    pub fn h(self) -> f64 {
        1.0 / (self.n as f64 - 1.0)
    }
    pub fn len(self) -> usize {
        self.n * self.n
    }
    pub fn is_empty(self) -> bool {
        self.n == 0
    }
    /// Every point as (i, j, x, y), row-major (`j` is the row, y = j h).
    pub fn points(self) -> impl Iterator<Item = (usize, usize, f64, f64)> {
        let (n, h) = (self.n, self.h());
        (0..n).flat_map(move |j| (0..n).map(move |i| (i, j, i as f64 * h, j as f64 * h)))
    }
}

/// A conditional problem of a family: which channels are observed, which are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The input (coefficient or source) given, the solution wanted.
    Forward,
    /// The solution given, the input wanted.
    Inverse,
}

impl Task {
    /// "forward", "inverse": the task's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Task::Forward => "forward",
            Task::Inverse => "inverse",
        }
    }
}

/// The share of points a sparse-observation task observes (3 %, as in the paper's sparse problems).
pub const SPARSE_FRACTION: f64 = 0.03;

/// `count` points, each observed (1) with probability `fraction`, drawn in order from `rng`: the
/// sparse observations of every report, so that reports drawn from one seed observe the same points.
pub fn sparse_points(rng: &mut impl rand::Rng, count: usize, fraction: f64) -> Vec<f32> {
    (0..count)
        .map(|_| (rng.random::<f64>() < fraction) as u8 as f32)
        .collect()
}

/// How an answer's channel is scored against the truth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// ||x - y|| / ||y|| per sample.
    RelL2,
    /// Fraction of points on the other side of a threshold (binary coefficient fields).
    ErrorRate { threshold: f64 },
}

impl Metric {
    /// Short name for reports ("rel. L2", "error rate").
    pub fn label(self) -> &'static str {
        match self {
            Metric::RelL2 => "rel. L2",
            Metric::ErrorRate { .. } => "error rate",
        }
    }

    /// The metric of one sample's channel (slices of equal length).
    pub fn of(self, got: &[f32], truth: &[f32]) -> f64 {
        match self {
            Metric::RelL2 => {
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (g, t) in got.iter().zip(truth) {
                    num += (*g as f64 - *t as f64).powi(2);
                    den += (*t as f64).powi(2);
                }
                (num / den.max(f64::MIN_POSITIVE)).sqrt()
            }
            Metric::ErrorRate { threshold } => {
                let wrong = got
                    .iter()
                    .zip(truth)
                    .filter(|(g, t)| (**g as f64 >= threshold) != (**t as f64 >= threshold))
                    .count();
                wrong as f64 / truth.len().max(1) as f64
            }
        }
    }
}

/// A part of an answer that is scored: `count` consecutive channels from `channel` (time levels
/// scored as one), its label, and the points of each ([n * n]) counted.
pub struct Scored {
    pub channel: usize,
    pub count: usize,
    pub label: String,
    pub region: Vec<bool>,
    /// Scored on its coarse scales only: the picked values are periodic rows of this many points,
    /// each row's Fourier modes above `.1` removed (answer and truth alike) before the metric.
    pub lowpass: Option<(usize, usize)>,
}

/// The noise, relative to the signal, below which an observation is taken to say nothing about
/// a scale: 1 % (the sensors' noise of the posterior example). A direction of the input whose
/// gain through the linearised forward map is under it (a singular value, not a mode's gain on
/// its own: `BurgersParams::observed_gains`) is left to the prior.
pub const DETERMINED_GAIN: f64 = 0.01;

/// Each periodic row of `n` values of `v` with its Fourier modes above `keep` removed (the
/// projection onto modes |k| <= keep, written out: rows are short).
pub fn lowpass_rows(v: &[f32], n: usize, keep: usize) -> Vec<f32> {
    let tau = std::f64::consts::TAU;
    v.chunks(n)
        .flat_map(|row| {
            let coef: Vec<(f64, f64)> = (0..=keep.min(n / 2))
                .map(|k| {
                    row.iter().enumerate().fold((0.0, 0.0), |(c, s), (j, &x)| {
                        let a = tau * (k * j) as f64 / n as f64;
                        (c + f64::from(x) * a.cos(), s + f64::from(x) * a.sin())
                    })
                })
                .collect();
            (0..n).map(move |j| {
                let mut y = 0.0;
                for (k, &(c, s)) in coef.iter().enumerate() {
                    let a = tau * (k * j) as f64 / n as f64;
                    // modes k and n - k together, once for 0 and the Nyquist mode
                    let w = if k == 0 || 2 * k == n { 1.0 } else { 2.0 };
                    y += w * (c * a.cos() + s * a.sin()) / n as f64;
                }
                y as f32
            })
        })
        .collect()
}

impl Scored {
    /// The scored values of one sample's channels (`sample`, [C, plane]): each scored channel's
    /// region, in order.
    pub fn pick<T: Copy>(&self, sample: &[T], plane: usize) -> Vec<T> {
        self.channels()
            .flat_map(|k| {
                sample[k * plane..(k + 1) * plane]
                    .iter()
                    .zip(&self.region)
                    .filter(|(_, &r)| r)
                    .map(|(v, _)| *v)
            })
            .collect()
    }
    /// [`Scored::pick`], through the low-pass where the part has one.
    pub fn pick_scored(&self, sample: &[f32], plane: usize) -> Vec<f32> {
        let v = self.pick(sample, plane);
        match self.lowpass {
            Some((n, keep)) => lowpass_rows(&v, n, keep),
            None => v,
        }
    }
    /// The channels scored.
    pub fn channels(&self) -> std::ops::Range<usize> {
        self.channel..self.channel + self.count
    }
}

/// Every channel of `mask` (one sample, [C, plane]) with unobserved points, on those points.
pub fn unobserved(channels: &[(&str, &str)], mask: &[f32], plane: usize) -> Vec<Scored> {
    mask.chunks(plane)
        .enumerate()
        .filter(|(_, m)| m.contains(&0.0))
        .map(|(k, m)| Scored {
            channel: k,
            count: 1,
            label: channels[k].0.to_string(),
            region: m.iter().map(|&v| v == 0.0).collect(),
            lowpass: None,
        })
        .collect()
}

/// What bounds an axis of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// Values fixed at both ends (the ends are grid points).
    Dirichlet,
    /// The last point's neighbour is the first.
    Periodic,
    /// A time axis: the first row is given, the rest follow.
    Initial,
}

impl Boundary {
    pub fn name(self) -> &'static str {
        match self {
            Boundary::Dirichlet => "dirichlet",
            Boundary::Periodic => "periodic",
            Boundary::Initial => "initial",
        }
    }
}

/// The two values of a two-phase channel: the data's coefficient is `lo` or `hi` at every point,
/// split at their midpoint ([`Family::threshold`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phases {
    pub channel: usize,
    pub lo: f64,
    pub hi: f64,
}

/// A translation of a periodic grid by `dy` points along H and `dx` along W, under which a family's
/// data distribution is invariant: its input's prior is stationary along it and its equation has
/// no term that depends on position along it. Samples are moved by a random multiple of it
/// (`physics::translate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub dy: i64,
    pub dx: i64,
}

/// A family's grid in physical terms: extent, spacing and boundary kind of x and y.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub domain: [[f64; 2]; 2],
    pub spacing: [f64; 2],
    pub boundary: [Boundary; 2],
}

/// One solved sample: the family's channels, concatenated planes in channel order, and the
/// solver's relative residual.
pub struct Solved {
    pub fields: Vec<f64>,
    pub solver_residual: f64,
}

/// Draws and solves samples of one family on one grid (factorisations and FFT plans made once).
pub trait Sampler: Sync {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Result<Solved>;
}

/// The family's data solver applied to a given sample's own input (coefficient, source or initial
/// condition), on one grid: what a sample's physical consistency is measured against.
pub trait Resolver: Sync {
    /// One sample's channels (physical, concatenated planes) with the solved part (the forward
    /// task's wanted points) replaced by the solver's answer to the sample's input.
    fn resolve(&self, fields: &[f64]) -> Result<Vec<f64>>;
}

/// One sample's physical consistency, the two figures a user judges a generated field by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Consistency {
    /// ||R|| over the equation's points / the family's [`Family::source_norm`].
    pub relative_residual: f64,
    /// ||x - S(x)|| / ||S(x)|| over the forward task's wanted points, S the family's solver of the
    /// sample's own input ([`Resolver`]).
    pub error: f64,
}

/// [`Consistency`] of one sample's physical channels (concatenated planes).
pub fn consistency(
    family: &dyn Family,
    resolver: &dyn Resolver,
    grid: Grid,
    fields: &[f64],
) -> Result<Consistency> {
    let r = family.reference_residual(grid, fields);
    let relative_residual = r.iter().map(|v| v * v).sum::<f64>().sqrt()
        / family.source_norm(grid, fields).max(f64::MIN_POSITIVE);
    let solved = resolver.resolve(fields)?;
    let wanted = family.task_mask(Task::Forward, grid);
    let (mut num, mut den) = (0.0, 0.0);
    for ((x, s), m) in fields.iter().zip(&solved).zip(&wanted) {
        if *m == 0.0 {
            num += (x - s).powi(2);
            den += s * s;
        }
    }
    Ok(Consistency {
        relative_residual,
        error: (num / den.max(f64::MIN_POSITIVE)).sqrt(),
    })
}

/// An approximate inverse of a family's operator (its Jacobian in the solved field): maps a
/// residual R back to the solved field's own units, e ~ u - S(input), so that a loss on e weighs
/// every scale as the solution's error does (R itself weighs grid-scale noise by 1 / h^2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Defect {
    /// e = scale * (Lap + shift)^(-1) R on the interior, e = 0 on the Dirichlet ring: exact for
    /// Lap u + shift u = f (Poisson, Helmholtz), and for Darcy with its permeability's mean.
    Dirichlet { shift: f64, scale: f64 },
    /// e_k = dt * sum_{j <= k} R_j over the time axis (`axis`: 2 where the rows are times, 1
    /// where the channels are levels), e_0 = 0: the drift each step's residual leaves, the
    /// stepping operator's inverse without its spatial part.
    TimeIntegral { dt: f64, axis: i64 },
}

/// The support and modes of a card's `determined` ([`piddm::card::Determined`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DeterminedModes {
    pub channel: usize,
    pub rows: [usize; 2],
    pub modes: Vec<piddm::card::Mode>,
}

/// What every family provides, object-safe; the residual, generic over the back-end, is
/// [`Residual`].
pub trait Family: Sync {
    fn name(&self) -> &'static str;
    /// Channel names in storage order, and their units.
    fn channels(&self) -> &'static [(&'static str, &'static str)];
    /// The equation in words, for the model card.
    fn equation(&self) -> String;
    /// Refuses parameters out of range, naming them.
    fn validate(&self) -> Result<()>;
    fn sampler(&self, grid: Grid) -> Result<Box<dyn Sampler>>;
    /// The data solver as a [`Resolver`] of given samples.
    fn resolver(&self, grid: Grid) -> Result<Box<dyn Resolver>>;
    /// The norm of the term the residual balances, over the points that carry an equation, of one
    /// sample's channels: the scale of ||R|| in the relative residual ||R|| / this. The source
    /// (Darcy's constant, Poisson's and Helmholtz's f), Burgers' time derivative.
    fn source_norm(&self, grid: Grid, fields: &[f64]) -> f64;
    /// How a residual maps back to the solved field ([`Defect`]).
    fn defect(&self, grid: Grid) -> Defect;
    /// Channels of the residual R: one equation per point, unless the family's field holds
    /// several time levels as channels, each with its own (Navier-Stokes).
    fn residual_channels(&self) -> usize {
        1
    }
    /// The channel f that R holds pointwise as R = L(the other channels) - f, if any: where the
    /// others are known on R's whole stencil, f = f + R exactly (Poisson's and Helmholtz's source).
    fn source_channel(&self) -> Option<usize> {
        None
    }
    /// A task's mask over one sample, [C, n, n] flattened: 1 where observed, 0 where wanted.
    fn task_mask(&self, task: Task, grid: Grid) -> Vec<f32>;
    /// What a task gives, in words ("all of f").
    fn given(&self, task: Task) -> String;
    /// What a task's answer is scored on: by default every channel the task does not observe
    /// everywhere, on its unobserved points.
    /// The parts a task's answer is scored on: every unobserved channel on its unobserved points,
    /// and, for an inverse task whose wanted channel is a pointwise source, that source where the
    /// PDE holds as well (what the observed solution determines; the boundary ring is not).
    fn scored(&self, task: Task, grid: Grid) -> Vec<Scored> {
        let mut parts = unobserved(self.channels(), &self.task_mask(task, grid), grid.len());
        if let Some(src) = self.source_channel() {
            if task == Task::Inverse && parts.iter().any(|p| p.channel == src) {
                let n = grid.n;
                parts.push(Scored {
                    channel: src,
                    count: 1,
                    label: format!("{} where the PDE holds", self.channels()[src].0),
                    region: (0..grid.len())
                        .map(|p| {
                            let (i, j) = (p / n, p % n);
                            i > 0 && j > 0 && i < n - 1 && j < n - 1
                        })
                        .collect(),
                    lowpass: None,
                });
            }
        }
        parts
    }
    /// What the sparse task observes a share of, [C, n, n] flattened: by default what the inverse
    /// task observes.
    fn sparse_source(&self, grid: Grid) -> Vec<f32> {
        self.task_mask(Task::Inverse, grid)
    }
    /// The parts an answer to the observation `mask` (one sample, [C, plane]) is scored on when
    /// its task names none (the sparse task): by default each channel with unobserved points.
    fn unobserved_parts(&self, mask: &[f32], plane: usize) -> Vec<Scored> {
        unobserved(self.channels(), mask, plane)
    }
    /// The channels a figure shows: all of them, unless the family has too many to show side by
    /// side (Navier-Stokes: its first, middle and last level).
    fn figure_channels(&self) -> Vec<usize> {
        (0..self.channels().len()).collect()
    }
    /// Whether a channel is a signed field, drawn with a diverging map symmetric about zero
    /// (vorticity), rather than a sequential one.
    fn signed(&self, _channel: usize) -> bool {
        false
    }
    /// How a wanted channel is scored.
    fn metric(&self, channel: usize) -> Metric;
    /// The points whose value the PDE fixes at zero (homogeneous Dirichlet values), [C, n, n]
    /// flattened, 1 where fixed: what a hard-constraint sampler may impose. None unless the family
    /// says so.
    fn fixed_zero(&self, grid: Grid) -> Vec<f32> {
        vec![0.0; self.channels().len() * grid.len()]
    }
    /// How many points of the grid carry an equation (the residual is zero on the rest): the
    /// interior, unless the family says otherwise.
    fn equation_points(&self, grid: Grid) -> usize {
        (grid.n - 2) * (grid.n - 2)
    }
    /// The grid's geometry for the model card: the unit square with Dirichlet boundaries unless
    /// the family says otherwise.
    fn geometry(&self, grid: Grid) -> Geometry {
        Geometry {
            domain: [[0.0, 1.0], [0.0, 1.0]],
            spacing: [grid.h(), grid.h()],
            boundary: [Boundary::Dirichlet, Boundary::Dirichlet],
        }
    }
    /// A value separating two phases of a binary input field, for the model card.
    fn threshold(&self) -> Option<f64> {
        None
    }
    /// The two values a two-phase input field takes (its channel, low, high), if the family's
    /// data have one: its samples are projected onto them (`physics::phases`).
    fn phases(&self) -> Option<Phases> {
        None
    }
    /// The coarse modes of its input that an observation of the solution determines but a
    /// network's answer can miss, with their prior std: the card's `determined` (its `noise` and
    /// `iterations` the preset's), which the solve fits through the resolve graph. None where
    /// the solve has no such fit.
    fn determined(&self, _grid: Grid) -> Option<DeterminedModes> {
        None
    }
    /// The translation its data distribution is invariant under, if any: its samples are moved
    /// by a random multiple of it (`physics::translate`).
    fn translation(&self) -> Option<Translation> {
        None
    }
    /// The parameters as the model card shows them.
    fn parameters(&self) -> serde_json::Value;
    /// The residual its data solver drives to zero, pointwise in f64 from one sample's channels
    /// (concatenated planes): the reference the tensor residual ([`Residual`]) is tested against.
    fn reference_residual(&self, grid: Grid, fields: &[f64]) -> Vec<f64>;
    /// The shipped preset that trains the family at full size: its name and its TOML.
    fn preset(&self) -> (&'static str, &'static str);
}

/// The discrete residual R of physical fields x [B, C, H, W] -> [B, Cr, H, W] (Cr the family's
/// [`Family::residual_channels`]), zero where no equation holds (the Dirichlet ring, a first time
/// level). Written once over [`FieldOps`].
pub trait Residual {
    fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, x: &O::V) -> O::V;
    /// A family whose levels (rows or channels) are time levels marched by Crank-Nicolson, with
    /// the residual R_k = (u_k - u_{k-1}) / dt + (F(u_k) + F(u_{k-1})) / 2 and F(u) = N(u) + L u:
    /// its step, for the march in the graph (`physics::Correction`). None for the others.
    fn stepping(&self, _grid: Grid) -> Option<Stepping> {
        None
    }
    /// N(u), the step's explicit part (lagged by the march's fixed-point iterations); zero for a
    /// linear step.
    fn emit_nonlinear<O: FieldOps>(&self, _grid: Grid, o: &mut O, u: &O::V) -> O::V {
        o.affine(u, 0.0, 0.0)
    }
    /// L u, the step's implicit linear part; zero where there is none.
    fn emit_linear<O: FieldOps>(&self, _grid: Grid, o: &mut O, u: &O::V) -> O::V {
        o.affine(u, 0.0, 0.0)
    }
    /// (I / dt + L / 2)^-1 r: dt r where L is zero.
    fn emit_implicit<O: FieldOps>(&self, grid: Grid, o: &mut O, r: &O::V) -> O::V {
        let dt = self.stepping(grid).map_or(1.0, |s| s.dt);
        o.affine(r, dt, 0.0)
    }
}

/// A Crank-Nicolson march's step and the axis its levels run along (1: channels, 2: rows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stepping {
    pub dt: f64,
    pub axis: i64,
}

/// (I / dt + L / 2)^-1 of an n x n matrix L (row-major), by Gauss-Jordan: the implicit side of a
/// Crank-Nicolson step whose L acts along one axis (diagonally dominant for a diffusion).
pub fn crank_nicolson_inverse(dt: f64, linear: &[f64]) -> Vec<f64> {
    let n = ops::matrix_side(linear.len()) as usize;
    let mut a = vec![0.0; n * 2 * n];
    for i in 0..n {
        for j in 0..n {
            a[i * 2 * n + j] = linear[i * n + j] / 2.0 + if i == j { 1.0 / dt } else { 0.0 };
        }
        a[i * 2 * n + n + i] = 1.0;
    }
    for c in 0..n {
        let piv = a[c * 2 * n + c];
        for j in 0..2 * n {
            a[c * 2 * n + j] /= piv;
        }
        for r in 0..n {
            if r != c {
                let f = a[r * 2 * n + c];
                for j in 0..2 * n {
                    a[r * 2 * n + j] -= f * a[c * 2 * n + j];
                }
            }
        }
    }
    (0..n * n).map(|k| a[(k / n) * 2 * n + n + k % n]).collect()
}

/// The mask of a task that observes whole channels: `observed` of `channels` planes.
pub fn channel_mask(channels: usize, observed: &[usize], grid: Grid) -> Vec<f32> {
    (0..channels)
        .flat_map(|k| std::iter::repeat_n(observed.contains(&k) as u8 as f32, grid.len()))
        .collect()
}

/// The boundary ring of `channel` (of `channels`), 1 there and 0 elsewhere: a Dirichlet family's
/// [`Family::fixed_zero`].
pub fn ring_mask(channels: usize, channel: usize, grid: Grid) -> Vec<f32> {
    let n = grid.n;
    let mut m = vec![0.0; channels * grid.len()];
    for (p, (i, j, _, _)) in grid.points().enumerate() {
        if i == 0 || j == 0 || i == n - 1 || j == n - 1 {
            m[channel * grid.len() + p] = 1.0;
        }
    }
    m
}

/// "all of a, u" for whole observed channels.
pub fn channel_words(channels: &[(&str, &str)], observed: &[usize]) -> String {
    let names: Vec<&str> = observed.iter().map(|&k| channels[k].0).collect();
    format!("all of {}", names.join(", "))
}

macro_rules! register {
    ($($module:ident: $variant:ident($ty:ident)),* $(,)?) => {
        $(pub mod $module;)*

        /// A PDE family with its parameters. Serialised with its name under `family`.
        #[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "family", rename_all = "snake_case")]
        pub enum Pde {
            $($variant($module::$ty)),*
        }

        impl Pde {
            /// Every family with its default parameters.
            pub fn all() -> Vec<Pde> {
                vec![$(Pde::$variant(<$module::$ty>::default())),*]
            }

            pub fn family(&self) -> &dyn Family {
                match self {
                    $(Pde::$variant(p) => p),*
                }
            }

            pub fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, x: &O::V) -> O::V {
                match self {
                    $(Pde::$variant(p) => p.emit_residual(grid, o, x)),*
                }
            }

            pub fn stepping(&self, grid: Grid) -> Option<Stepping> {
                match self {
                    $(Pde::$variant(p) => p.stepping(grid)),*
                }
            }

            pub fn emit_nonlinear<O: FieldOps>(&self, grid: Grid, o: &mut O, u: &O::V) -> O::V {
                match self {
                    $(Pde::$variant(p) => p.emit_nonlinear(grid, o, u)),*
                }
            }

            pub fn emit_linear<O: FieldOps>(&self, grid: Grid, o: &mut O, u: &O::V) -> O::V {
                match self {
                    $(Pde::$variant(p) => p.emit_linear(grid, o, u)),*
                }
            }

            pub fn emit_implicit<O: FieldOps>(&self, grid: Grid, o: &mut O, r: &O::V) -> O::V {
                match self {
                    $(Pde::$variant(p) => p.emit_implicit(grid, o, r)),*
                }
            }

            /// The family called `name`, its parameters from `params` (a JSON object; missing
            /// fields keep their defaults), validated.
            pub fn from_parts(name: &str, params: &serde_json::Value) -> Result<Pde> {
                let pde = match name {
                    $(n if n == <$module::$ty>::default().name() => {
                        let mut v = serde_json::to_value(<$module::$ty>::default())?;
                        merge(&mut v, params, name)?;
                        Pde::$variant(serde_json::from_value(v)
                            .map_err(|e| anyhow::anyhow!("{name} parameters: {e}"))?)
                    })*
                    _ => bail!("unknown PDE '{name}' (known: {})", Pde::names().join(", ")),
                };
                pde.family().validate()?;
                Ok(pde)
            }
        }
    };
}

/// Overwrites `base`'s fields with `over`'s, refusing fields the family does not have.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value, family: &str) -> Result<()> {
    use serde_json::Value;
    match (base, over) {
        (_, Value::Null) => Ok(()),
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() => merge(slot, v, family)?,
                    Some(slot) => *slot = v.clone(),
                    None => bail!(
                        "{family} has no parameter '{k}' (it has: {})",
                        b.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
            }
            Ok(())
        }
        (_, o) => bail!("{family} parameters must be a table, got {o}"),
    }
}

impl Pde {
    pub fn name(&self) -> &'static str {
        self.family().name()
    }
    pub fn names() -> Vec<&'static str> {
        Pde::all().iter().map(|p| p.name()).collect()
    }
    /// The family called `name` with default parameters.
    pub fn parse(name: &str) -> Result<Pde> {
        Pde::from_parts(name, &serde_json::Value::Null)
    }
    pub fn channels(&self) -> &'static [(&'static str, &'static str)] {
        self.family().channels()
    }
}

/// A preset names a family (`pde = "poisson"`, default parameters) or gives it with parameters
/// (`[data.pde] family = "helmholtz"`, `k = 2.0`).
pub fn deserialize_spec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Pde, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let r = match &v {
        serde_json::Value::String(name) => Pde::parse(name),
        serde_json::Value::Object(m) => {
            let name = m
                .get("family")
                .and_then(|f| f.as_str())
                .ok_or_else(|| D::Error::custom("a PDE table needs `family`"))?;
            let mut rest = m.clone();
            rest.remove("family");
            Pde::from_parts(name, &serde_json::Value::Object(rest))
        }
        other => {
            return Err(D::Error::custom(format!(
                "a PDE is a name or a table, not {other}"
            )))
        }
    };
    r.map_err(|e| D::Error::custom(format!("{e:#}")))
}

// The families, in the order reports list them: `module: Variant(Parameters)`.
register!(
    darcy: Darcy(DarcyParams),
    poisson: Poisson(PoissonParams),
    helmholtz: Helmholtz(HelmholtzParams),
    burgers: Burgers(BurgersParams),
    navier_stokes: NavierStokes(NavierStokesParams),
);

/// Rewrites metadata written before families carried their parameters (`"pde": "darcy"` beside
/// `"darcy": {...}`) into the current form (`"pde": {"family": "darcy", ...}`), in place. Data sets
/// and checkpoints call it on the object that holds `pde`, so older files keep loading.
pub fn migrate_legacy(meta: &mut serde_json::Value) {
    let Some(obj) = meta.as_object_mut() else {
        return;
    };
    let Some(serde_json::Value::String(name)) = obj.get("pde").cloned() else {
        return;
    };
    let mut params = obj
        .remove(&name)
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if let Some(p) = params.as_object_mut() {
        p.insert("family".into(), serde_json::Value::String(name));
    }
    obj.insert("pde".into(), params);
}

/// `KEY=VALUE` settings (dotted keys for nested parameters, values as JSON numbers, booleans or
/// strings) as one JSON object for [`Pde::from_parts`].
pub fn parse_settings(settings: &[String]) -> Result<serde_json::Value> {
    let mut root = serde_json::Map::new();
    for s in settings {
        let Some((key, value)) = s.split_once('=') else {
            bail!("parameter setting '{s}' is not KEY=VALUE");
        };
        let value = serde_json::from_str(value.trim())
            .unwrap_or_else(|_| serde_json::Value::String(value.trim().to_string()));
        let mut path: Vec<&str> = key.trim().split('.').collect();
        let last = path.pop().filter(|k| !k.is_empty());
        let Some(last) = last else {
            bail!("parameter setting '{s}' has an empty key");
        };
        let mut node = &mut root;
        for part in path {
            node = node
                .entry(part)
                .or_insert_with(|| serde_json::Value::Object(Default::default()))
                .as_object_mut()
                .ok_or_else(|| anyhow::anyhow!("parameter '{part}' in '{s}' is not a table"))?;
        }
        node.insert(last.to_string(), value);
    }
    Ok(serde_json::Value::Object(root))
}

#[cfg(test)]
mod tests {
    /// The low-pass keeps a row's coarse modes exactly and removes the rest: two rows of 16
    /// points, a mode-1 cosine plus a mode-5 sine, and a constant plus the Nyquist mode.
    #[test]
    fn lowpass_rows_keeps_the_coarse_modes() {
        let n = 16;
        let tau = std::f64::consts::TAU;
        let at = |j: usize, k: usize| tau * (k * j) as f64 / n as f64;
        let coarse: Vec<f32> = (0..n).map(|j| (0.7 * at(j, 1).cos()) as f32).collect();
        let row1: Vec<f32> = (0..n)
            .map(|j| coarse[j] + (0.3 * at(j, 5).sin()) as f32)
            .collect();
        let row2: Vec<f32> = (0..n)
            .map(|j| 2.0 + if j % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let v = [row1.clone(), row2.clone()].concat();
        let low = lowpass_rows(&v, n, 2);
        let off = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            off(&low[..n], &coarse) < 1e-6,
            "{}",
            off(&low[..n], &coarse)
        );
        assert!(off(&low[n..], &[2.0; 16]) < 1e-6);
        // keeping every mode (Nyquist included) is the identity
        let all = lowpass_rows(&v, n, n / 2);
        assert!(off(&all, &v) < 1e-5, "{}", off(&all, &v));
    }

    use super::*;
    use rand::SeedableRng;

    /// Every family's consistency against fields with a known answer: its own data (error at the
    /// solver's tolerance), the wanted part scaled by 1.1 (error exactly 0.1, and for the linear
    /// families a relative residual of exactly 0.1, R = 0.1 f), and one wanted point moved.
    #[test]
    fn consistency_of_fields_with_known_answers() {
        let grid = Grid::new(16).unwrap();
        for pde in Pde::all() {
            let fam = pde.family();
            let solver = fam.resolver(grid).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let truth = fam.sampler(grid).unwrap().sample(&mut rng).unwrap().fields;
            let c = consistency(fam, solver.as_ref(), grid, &truth).unwrap();
            assert!(c.error < 1e-10, "{}: own data {c:?}", pde.name());
            assert!(c.relative_residual < 1e-9, "{}: own data {c:?}", pde.name());

            let wanted = fam.task_mask(Task::Forward, grid);
            let scaled: Vec<f64> = truth
                .iter()
                .zip(&wanted)
                .map(|(x, m)| if *m == 0.0 { 1.1 * x } else { *x })
                .collect();
            let c = consistency(fam, solver.as_ref(), grid, &scaled).unwrap();
            assert!((c.error - 0.1).abs() < 1e-9, "{}: scaled {c:?}", pde.name());
            // the linear families: R scales with the wanted part (the nonlinear ones do not)
            if !matches!(pde, Pde::Burgers(_) | Pde::NavierStokes(_)) {
                assert!(
                    (c.relative_residual - 0.1).abs() < 1e-8,
                    "{}: scaled {c:?}",
                    pde.name()
                );
            }

            // one wanted interior point off by d: the error is |d| / ||S(x)|| over the wanted part
            let p = (0..truth.len())
                .find(|&p| wanted[p] == 0.0 && (p % grid.len()) == grid.n + 2)
                .unwrap();
            let mut moved = truth.clone();
            moved[p] += 0.01;
            let norm: f64 = truth
                .iter()
                .zip(&wanted)
                .filter(|(_, m)| **m == 0.0)
                .map(|(x, _)| x * x)
                .sum::<f64>()
                .sqrt();
            let c = consistency(fam, solver.as_ref(), grid, &moved).unwrap();
            assert!(
                (c.error - 0.01 / norm).abs() < 1e-9 * (1.0 + 0.01 / norm),
                "{}: moved {c:?}, want {}",
                pde.name(),
                0.01 / norm
            );
            assert!(c.relative_residual > 0.0);
        }
    }

    /// Darcy solves a generated permeability clamped into [a_lo, a_hi]: a = 20 where a_hi = 12 is
    /// solved as 12, so a field that is the solve of the clamped a is consistent.
    #[test]
    fn darcy_consistency_clamps_the_permeability() {
        let grid = Grid::new(12).unwrap();
        let p = darcy::DarcyParams::default();
        let solver = p.resolver(grid).unwrap();
        let a_gen: Vec<f64> = (0..grid.len())
            .map(|k| if k % 3 == 0 { 20.0 } else { 0.5 })
            .collect();
        let a_clamped: Vec<f64> = a_gen.iter().map(|v| v.clamp(p.a_lo, p.a_hi)).collect();
        let (u, _) = darcy::DarcySolver::new(grid)
            .unwrap()
            .solve(&a_clamped, &vec![p.source; grid.len()])
            .unwrap();
        let c = consistency(&p, solver.as_ref(), grid, &[a_gen, u].concat()).unwrap();
        assert!(c.error < 1e-12, "{c:?}");
        let e = solver
            .resolve(&[vec![f64::NAN; grid.len()], vec![0.0; grid.len()]].concat())
            .unwrap_err();
        assert!(e.to_string().contains("finite"), "{e}");
    }

    #[test]
    fn families_parse_and_refuse_unknown_names_and_parameters() {
        for p in Pde::all() {
            assert_eq!(Pde::parse(p.name()).unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Pde>(&json).unwrap(), p);
        }
        let e = Pde::parse("navier").unwrap_err().to_string();
        assert!(
            e.contains("unknown PDE 'navier'") && e.contains("burgers"),
            "{e}"
        );
        let e = Pde::from_parts("helmholtz", &serde_json::json!({"k": -1.0}))
            .unwrap_err()
            .to_string();
        assert!(e.contains('k'), "{e}");
        let e = Pde::from_parts("poisson", &serde_json::json!({"nu": 0.1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no parameter 'nu'"), "{e}");
        let h = Pde::from_parts("helmholtz", &serde_json::json!({"k": 2.0})).unwrap();
        assert!(matches!(h, Pde::Helmholtz(p) if p.k == 2.0));
    }

    #[test]
    fn settings_and_legacy_metadata() {
        let v = parse_settings(&["k=2".into(), "grf.alpha=2.5".into()]).unwrap();
        assert_eq!(v, serde_json::json!({"k": 2, "grf": {"alpha": 2.5}}));
        let h = Pde::from_parts("helmholtz", &v).unwrap();
        assert!(
            matches!(h, Pde::Helmholtz(p) if p.k == 2.0 && p.grf.alpha == 2.5 && p.grf.tau == 3.0)
        );
        assert!(parse_settings(&["k".into()]).is_err());
        let mut old = serde_json::json!({"pde": "darcy", "grid": {"n": 8},
            "darcy": {"grf": {"alpha": 2.0, "tau": 3.0}, "a_hi": 12.0, "a_lo": 3.0, "source": 1.0}});
        migrate_legacy(&mut old);
        assert!(old.get("darcy").is_none());
        let pde: Pde = serde_json::from_value(old["pde"].clone()).unwrap();
        assert_eq!(pde, Pde::parse("darcy").unwrap());
    }

    #[test]
    fn metrics_on_known_fields() {
        let t = [1.0f32, 2.0, 2.0, 4.0];
        let g = [1.0f32, 2.0, 2.0, 5.0];
        assert!((Metric::RelL2.of(&g, &t) - 1.0 / 5.0).abs() < 1e-12);
        let m = Metric::ErrorRate { threshold: 1.5 };
        assert_eq!(m.of(&[1.0, 1.0, 2.0, 2.0], &t), 0.25);
    }
}
