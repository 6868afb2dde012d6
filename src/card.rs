//! The artifact contract: what an exported PIDDM model file holds and how its parts are named.
//! The trainer writes artifacts through these definitions and the runtime reads them; neither side
//! restates a name or a field.
//!
//! An artifact is a set of ONNX files beside each other; the user names the main one (`NAME.onnx`):
//! - `NAME.onnx` — **generate**: `eps` [B, C, H, W] standard normal → `x` [B, C, H, W] (physical units)
//!   and `residual` [B, 1, H, W] (the PDE residual of `x`, zero on the boundary ring).
//! - `NAME.refine.onnx` — **refine**: `eps`, `observed` [B, C, H, W] (physical units), `mask`
//!   [B, C, H, W] (1 where observed, else 0), `lambda` [1] → `loss` [B], `grad` = d loss / d eps
//!   [B, C, H, W], `x_mix` [B, C, H, W] (the answer: the observations where observed).
//! - `NAME.residual.onnx` — **residual**: `x` [B, C, H, W] → `residual` [B, 1, H, W] and (card
//!   format 4) `residual_mse` [B], the per-sample mean of R^2 over the points where the PDE holds,
//!   so a reader needs to know nothing of the PDE's boundary to score a field.
//! - `NAME.amortised.onnx` (optional, card format 3) — **amortised**: `observed`, `mask` and `z`
//!   [B, C, H, W] (z standard normal) → `eps` [B, C, H, W] (the amortised encoder's start) and
//!   `x_mix` (the student's answer from it): a conditional answer in one call.
//! - `NAME.resolve.onnx` (optional, card format 7) — **resolve**: `x` [B, C, H, W] (physical units)
//!   → `x_resolved`: the solved channel derived again from the input by the model's corrections
//!   (Burgers' rows marched from row 0). With the card's `determined`, the solve fits the input's
//!   coarse scales the observations determine through it ([`Determined`]).
//! - `NAME.int8.onnx`, `NAME.amortised.int8.onnx` (optional, named in `files` only when the export
//!   was asked for them) — **generate** and **amortised** with their networks in int8
//!   ([`Precision::Int8`]); same interfaces. A card without them is the same as before they existed.
//!
//! Every file carries the same model card as JSON under the metadata key [`CARD_KEY`].

use serde::{Deserialize, Serialize};

/// Metadata key of the JSON model card in each file's `metadata_props`.
pub const CARD_KEY: &str = "piddm.card";
/// Card format written by this version. Format 2 added `graph_sha256`; format 3 the optional
/// amortised part and the solve defaults' `start` and `optimizer`; format 4 the residual graph's
/// `residual_mse` and PDE families besides Darcy; format 5 `graph_structure_sha256`, both digests
/// taken over the graph's canonical encoding ([`crate::canonical`], which the exporter writes), so
/// that re-saving a model with the `onnx` tools keeps it verified; format 6 the optional `spread`
/// (the calibration of the answers' spread over seeds); format 7 the optional resolve part and
/// `determined` (the input's scales the solve fits through it). Readers also accept format 1,
/// whose graphs cannot be verified, only when the caller turns verification off.
pub const CARD_FORMAT: u32 = 7;
/// The oldest card format this version reads.
pub const CARD_FORMAT_MIN: u32 = 1;

/// Input and output names of the three graphs.
pub mod io {
    pub const EPS: &str = "eps";
    pub const X: &str = "x";
    pub const RESIDUAL: &str = "residual";
    /// Per-sample mean of R^2 where the PDE holds (card format 4).
    pub const RESIDUAL_MSE: &str = "residual_mse";
    pub const OBSERVED: &str = "observed";
    pub const MASK: &str = "mask";
    pub const LAMBDA: &str = "lambda";
    pub const LOSS: &str = "loss";
    pub const GRAD: &str = "grad";
    pub const X_MIX: &str = "x_mix";
    pub const Z: &str = "z";
    /// The resolve graph's output (card format 7).
    pub const X_RESOLVED: &str = "x_resolved";
    /// Symbolic name of the batch dimension.
    pub const BATCH: &str = "batch";
}

/// Sibling file names of the artifact whose main file is `main` (e.g. `darcy32.onnx`).
pub fn sibling(main: &std::path::Path, part: Part) -> std::path::PathBuf {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match part {
        Part::Generate => main.to_path_buf(),
        Part::Refine => main.with_file_name(format!("{stem}.refine.onnx")),
        Part::Residual => main.with_file_name(format!("{stem}.residual.onnx")),
        Part::Amortised => main.with_file_name(format!("{stem}.amortised.onnx")),
        Part::GenerateInt8 => main.with_file_name(format!("{stem}.int8.onnx")),
        Part::AmortisedInt8 => main.with_file_name(format!("{stem}.amortised.int8.onnx")),
        Part::Resolve => main.with_file_name(format!("{stem}.resolve.onnx")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Generate,
    Refine,
    Residual,
    Amortised,
    /// The generate graph with its network in int8 (`Precision::Int8`).
    #[serde(rename = "generate_int8")]
    GenerateInt8,
    /// The amortised graph with its networks in int8.
    #[serde(rename = "amortised_int8")]
    AmortisedInt8,
    /// Fields -> the solved channel derived again from the input (card format 7).
    Resolve,
}

/// The arithmetic of the networks in the graphs a model loads. The physics (residual,
/// corrections, settling) and the refine gradient stay float32 in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    /// Conv, Add, Mul, Sigmoid and Concat of the networks quantised to 8 bits (weights
    /// int8 per output channel, activations uint8 per tensor, calibrated at export): the parts
    /// `GenerateInt8` and `AmortisedInt8`, exported only when asked for.
    Int8,
}

impl Precision {
    /// Its name in the card, the command line and messages.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Result<Precision, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision {s:?} (fp32 or int8)")),
        }
    }

    /// The part that stands for `part` in this precision (the same part where it has no other).
    pub fn part(self, part: Part) -> Part {
        match (self, part) {
            (Precision::Int8, Part::Generate) => Part::GenerateInt8,
            (Precision::Int8, Part::Amortised) => Part::AmortisedInt8,
            _ => part,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub format: u32,
    /// Which of the artifact's graphs this file is.
    pub part: Part,
    pub pde: Pde,
    pub grid: GridInfo,
    pub channels: Vec<Channel>,
    /// x_physical = mean + scale * x_normalised, per channel. The graphs fold it in; it is here so a
    /// reader can interpret observation misfits, which the refine loss measures in normalised units.
    pub normalisation: Normalisation,
    pub lambda_train: f64,
    /// Weight of the student's defect term (its residual mapped back to the solved field, in that
    /// field's normalised units); 0, and absent from the card, where it was not trained with one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lambda_consistency: f64,
    /// Defect corrections in the student's graphs: its solved field u <- u - D R(x), D the
    /// family's inverse of its operator at a constant coefficient; 0, and absent from the card,
    /// where the graphs have none. With corrections, `x_mix` is the answer settled against the
    /// observations through the PDE (u corrected against the observed input; a pointwise source
    /// balanced where u is observed on the whole stencil), the observed entries kept.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub corrections: usize,
    /// Channels of the residual the graphs output ([B, residual_channels, ny, nx]): 1, and absent
    /// from the card, unless the family's field holds several time levels as channels, each with
    /// its own equation (Navier-Stokes: one per level, the first zero).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub residual_channels: usize,
    pub defaults: SolveDefaults,
    /// Heun steps of the teacher the student was distilled from (NFE 2N - 1).
    pub teacher_steps: usize,
    pub provenance: Provenance,
    /// Evaluation figures of this model (free-form JSON object from the trainer's evaluation).
    pub evaluation: serde_json::Value,
    /// sha256 (hex) of the student's weights as float32 little-endian, in the checkpoint's name order:
    /// ties the three files to one checkpoint.
    pub weights_sha256: String,
    /// sha256 (hex) of each file's serialised graph (weights and operators), recomputed at load:
    /// of the bytes as stored, or (format 5) of their canonical encoding, which is the same bytes
    /// for a file the exporter wrote ([`crate::canonical::graph_digests`]). Absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_sha256: Option<GraphDigests>,
    /// sha256 (hex) of each graph's canonical encoding with the initializers' values left out
    /// (operators, attributes, wiring, names and shapes): says whether an edit touched weights or
    /// structure. Format 5 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_structure_sha256: Option<GraphDigests>,
    /// File names (relative to the main file) of the refine and residual graphs.
    pub files: Files,
    /// How to read the spread of answers over seeds as an uncertainty (format 6; absent where the
    /// model was not calibrated): `piddm_solve_spread` applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<SpreadCalibration>,
    /// The coarse scales of the input that observations of the solved channel determine, which
    /// the solve fits through the resolve graph (format 7; absent where the model has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determined: Option<Determined>,
}

/// The scales of the input channel an observation of the solution determines, and how the solve
/// settles them. A network's answer gets the fine scales an observation leaves open from its
/// prior, but it can miss coarse ones that reach the observation only weakly (Burgers' initial
/// modes 2 and 3 reach t = 1/2 at 1 to 2 % of their size): the solve fits them through the PDE.
/// It adds sum_j c_j b_j to the answer's input (b_j the real Fourier modes below on the
/// `channel`'s rows `rows`, periodic), derives the solved channel from it by the resolve graph,
/// and takes the c minimising |misfit to the observations|^2 / noise^2 + sum_j (a_j / std_j)^2
/// (a_j the fitted input's coefficient of b_j: the data's zero-mean prior on it) by
/// `iterations` Levenberg-Marquardt steps (Jacobian by finite differences; `iterations` + 1
/// batched calls of the resolve graph, the first at the answer's own input), the observations
/// kept. Applied to each sample whose mask leaves a point of the support unobserved and observes
/// something. The modes are distinct and each its own: 0 <= ky < the support's rows, 0 <= kx <=
/// nx / 2, no mode twice, none the alias of another, and no sin that is zero on the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Determined {
    pub channel: usize,
    /// First and one-past-last row of the support.
    pub rows: [usize; 2],
    pub modes: Vec<Mode>,
    /// Misfit per observed value the fit allows, physical units.
    pub noise: f64,
    pub iterations: usize,
}

/// One real Fourier mode on the support: phase(2 pi (ky r / rows + kx j / nx)) at its row r and
/// column j, with the prior std of its coefficient (physical units, 1e-30 to 1e30).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mode {
    pub ky: i32,
    pub kx: i32,
    pub phase: Phase,
    pub std: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Cos,
    Sin,
}

/// The most modes a card may declare: the fit solves a dense system of this size per sample.
pub const MAX_DETERMINED_MODES: usize = 256;
/// The most Levenberg-Marquardt iterations a card may ask for.
pub const MAX_DETERMINED_ITERATIONS: usize = 100;

impl Determined {
    /// The support's entries within one sample ([C][ny][nx] flattened): a contiguous run.
    pub fn support(&self, ny: usize, nx: usize) -> std::ops::Range<usize> {
        let at = |r: usize| (self.channel * ny + r) * nx;
        at(self.rows[0])..at(self.rows[1])
    }

    /// Mode j on the support (its rows, nx points each).
    pub fn mode_on_support(&self, j: usize, nx: usize) -> Vec<f64> {
        let m = self.modes[j];
        let rows = self.rows[1] - self.rows[0];
        (0..rows * nx)
            .map(|q| {
                let (r, i) = (q / nx, q % nx);
                let t = std::f64::consts::TAU
                    * (f64::from(m.ky) * r as f64 / rows as f64
                        + f64::from(m.kx) * i as f64 / nx as f64);
                match m.phase {
                    Phase::Cos => t.cos(),
                    Phase::Sin => t.sin(),
                }
            })
            .collect()
    }

    /// Mode j over one sample ([C][ny][nx] flattened): zero off the support.
    pub fn basis(&self, j: usize, channels: usize, ny: usize, nx: usize) -> Vec<f64> {
        let mut b = vec![0.0; channels * ny * nx];
        b[self.support(ny, nx)].copy_from_slice(&self.mode_on_support(j, nx));
        b
    }

    /// Each mode a distinct real Fourier mode of the rows x nx periodic grid, so that the modes are
    /// orthogonal and an input's coefficient is its projection: 0 <= ky < rows (0 on one row),
    /// 0 <= kx <= nx / 2, where kx is its own alias (0 or nx / 2) ky <= rows / 2 as well, no
    /// (ky, kx, phase) twice, and no sin of a mode that is its own conjugate (zero on the grid).
    fn check_modes(&self, rows: usize, nx: usize) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.modes {
            let (ky, kx) = (i64::from(m.ky), i64::from(m.kx));
            let (rows, nx) = (rows as i64, nx as i64);
            let self_kx = kx == 0 || 2 * kx == nx;
            let bad = if !(0..rows).contains(&ky) || !(0..=nx / 2).contains(&kx) {
                Some("out of range")
            } else if self_kx && 2 * ky > rows {
                Some("the alias of another")
            } else if self_kx && (ky == 0 || 2 * ky == rows) && m.phase == Phase::Sin {
                Some("a sin that is zero on the grid")
            } else if !seen.insert((ky, kx, m.phase == Phase::Sin)) {
                Some("given twice")
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(format!(
                    "model card: determined mode (ky {ky}, kx {kx}, {:?}) on {rows} x {nx}: {why}",
                    m.phase
                )
                .to_lowercase());
            }
        }
        Ok(())
    }

    fn validate(&self, channels: usize, ny: usize, nx: usize) -> Result<(), String> {
        if self.channel >= channels {
            return Err(format!(
                "model card: determined channel {} of {channels}",
                self.channel
            ));
        }
        let [r0, r1] = self.rows;
        if !(r0 < r1 && r1 <= ny) {
            return Err(format!(
                "model card: determined rows [{r0}, {r1}) (a nonempty range within {ny})"
            ));
        }
        if self.modes.is_empty() || self.modes.len() > MAX_DETERMINED_MODES {
            return Err(format!(
                "model card: {} determined modes (1 to {MAX_DETERMINED_MODES})",
                self.modes.len()
            ));
        }
        // the fit holds each mode on the support and each sample's fields with every mode's
        // step: both within the bounds of one call's arrays
        let (field, support) = (channels * ny * nx, (r1 - r0) * nx);
        let p = self.modes.len();
        if p * support > crate::limits::MAX_FIELD_VALUES
            || (p + 1) * field > crate::limits::MAX_VALUES
        {
            return Err(format!(
                "model card: {p} determined modes on {support} of {field} values per sample are \
                 more than the fit may hold"
            ));
        }
        // squares and reciprocals of these stay finite and nonzero in f64
        let sane = |v: f64| (1e-30..=1e30).contains(&v);
        if let Some(m) = self.modes.iter().find(|m| !sane(m.std)) {
            return Err(format!(
                "model card: determined mode ({}, {}) std {} (1e-30 to 1e30)",
                m.ky, m.kx, m.std
            ));
        }
        if !sane(self.noise) {
            return Err(format!(
                "model card: determined noise {} (1e-30 to 1e30)",
                self.noise
            ));
        }
        self.check_modes(r1 - r0, nx)?;
        if self.iterations == 0 || self.iterations > MAX_DETERMINED_ITERATIONS {
            return Err(format!(
                "model card: determined iterations {} (1 to {MAX_DETERMINED_ITERATIONS})",
                self.iterations
            ));
        }
        Ok(())
    }
}

/// The calibration of the spread of one-call answers: K answers to one observation (z drawn at
/// `noise_scale` from K seeds) give a pointwise mean and std; `mean +- 2 std_scale std` then covers
/// the truth at `coverage` of the unknown points, fitted per task by split conformal prediction
/// (the `coverage` quantile of |truth - mean| / (2 std) over the points of `problems` held-out
/// problems, none of them training or evaluation problems).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadCalibration {
    /// Scale of z the answers are drawn at (the encoder's training draw is 1).
    pub noise_scale: f64,
    /// Answers per observation the scales were fitted with (K).
    pub answers: usize,
    /// Share of the unknown points the band is fitted to cover.
    pub coverage: f64,
    /// Held-out problems and their seed.
    pub problems: usize,
    pub seed: u64,
    pub tasks: Vec<SpreadTask>,
}

/// One task's spread scale. A caller's observation takes the task whose `observed` shares are
/// nearest (L1) to its mask's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadTask {
    /// "forward", "inverse", "sparse".
    pub task: String,
    /// What it observes, in words.
    pub given: String,
    /// Share of each channel's points the task observes.
    pub observed: Vec<f64>,
    /// The factor on the answers' std.
    pub std_scale: f64,
}

/// The share of each channel's points that `mask` observes (nonzero), over samples of
/// `channels` planes of `plane` points each: what [`SpreadCalibration::task_for`] compares.
pub fn observed_shares(mask: &[u8], channels: usize, plane: usize) -> Vec<f64> {
    let samples = mask.len() / (channels * plane).max(1);
    (0..channels)
        .map(|k| {
            let seen: usize = mask
                .chunks(channels * plane)
                .map(|m| {
                    m[k * plane..(k + 1) * plane]
                        .iter()
                        .filter(|&&v| v != 0)
                        .count()
                })
                .sum();
            seen as f64 / (samples * plane).max(1) as f64
        })
        .collect()
}

impl SpreadCalibration {
    /// The task whose observed shares are nearest to `shares` (one per channel), the first of equals.
    pub fn task_for(&self, shares: &[f64]) -> Option<&SpreadTask> {
        let dist = |t: &SpreadTask| -> f64 {
            t.observed
                .iter()
                .zip(shares)
                .map(|(a, b)| (a - b).abs())
                .sum()
        };
        self.tasks.iter().min_by(|a, b| dist(a).total_cmp(&dist(b)))
    }

    fn validate(&self, channels: usize) -> Result<(), String> {
        if !(self.noise_scale.is_finite() && self.noise_scale > 0.0) {
            return Err(format!(
                "model card: spread noise_scale {} (finite, > 0)",
                self.noise_scale
            ));
        }
        if self.answers < 2 || self.answers > crate::limits::MAX_SPREAD_ANSWERS {
            return Err(format!(
                "model card: spread answers {} (2 to {})",
                self.answers,
                crate::limits::MAX_SPREAD_ANSWERS
            ));
        }
        if !(self.coverage > 0.0 && self.coverage < 1.0) {
            return Err(format!(
                "model card: spread coverage {} (between 0 and 1)",
                self.coverage
            ));
        }
        if self.tasks.is_empty() {
            return Err("model card: a spread calibration without tasks".into());
        }
        for t in &self.tasks {
            if t.observed.len() != channels || !t.observed.iter().all(|v| (0.0..=1.0).contains(v)) {
                return Err(format!(
                    "model card: spread task {:?} needs one observed share in [0, 1] per channel",
                    t.task
                ));
            }
            if !(t.std_scale.is_finite() && t.std_scale > 0.0) {
                return Err(format!(
                    "model card: spread task {:?} std_scale {} (finite, > 0)",
                    t.task, t.std_scale
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pde {
    /// "darcy": -div(a grad u) = source on the unit square, u = 0 on the boundary.
    pub name: String,
    pub equation: String,
    /// PDE parameters (for Darcy: the GRF alpha / tau, the two permeabilities, the source).
    pub parameters: serde_json::Value,
    /// Value that separates the two phases of a binary coefficient field, if there is one.
    pub threshold: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridInfo {
    pub nx: usize,
    pub ny: usize,
    /// [[x0, x1], [y0, y1]]; the grid includes the boundary points (a periodic axis has the
    /// first and not the last).
    pub domain: [[f64; 2]; 2],
    /// Spacing along x (and y, unless `spacing_y` differs).
    pub spacing: f64,
    /// Spacing along y where it differs from x's (format 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing_y: Option<f64>,
    /// What bounds each axis, x then y (format 4): "dirichlet" (values fixed at both ends),
    /// "periodic", or "initial" (the first row given, the rest follow in time). Absent: Dirichlet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<[String; 2]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub name: String,
    pub units: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolveDefaults {
    pub lambda_infer: f64,
    pub steps: usize,
    pub learning_rate: f64,
    /// Where the solve starts (absent before format 3: auto).
    #[serde(default)]
    pub start: Start,
    /// Absent before format 3: Adam.
    #[serde(default)]
    pub optimizer: crate::optim::Optimizer,
    /// Scale of the amortised start's z (absent: 1, the encoder's training draw).
    #[serde(
        default = "default_noise_scale",
        skip_serializing_if = "is_default_noise_scale"
    )]
    pub noise_scale: f64,
}

/// The noise scale where none is given: z as the encoder was trained.
pub fn default_noise_scale() -> f64 {
    1.0
}

fn is_default_noise_scale(v: &f64) -> bool {
    *v == default_noise_scale()
}

/// The solve's starting eps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The amortised encoder's answer when the artifact has one, else a random draw.
    #[default]
    Auto,
    /// eps drawn from the seed (the solve of Algorithm 3 as published).
    Random,
    /// The amortised encoder's answer to the observation (z drawn from the seed); an artifact
    /// without the amortised part refuses it.
    Amortised,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub dataset_seed: u64,
    pub dataset_count: usize,
    pub teacher_train_steps: u64,
    pub student_train_steps: u64,
    pub source_revision: String,
    pub trainer_version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphDigests {
    pub generate: String,
    pub refine: String,
    pub residual: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortised: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_int8: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortised_int8: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
}

impl GraphDigests {
    pub fn get(&self, part: Part) -> Option<&str> {
        match part {
            Part::Generate => Some(&self.generate),
            Part::Refine => Some(&self.refine),
            Part::Residual => Some(&self.residual),
            Part::Amortised => self.amortised.as_deref(),
            Part::GenerateInt8 => self.generate_int8.as_deref(),
            Part::AmortisedInt8 => self.amortised_int8.as_deref(),
            Part::Resolve => self.resolve.as_deref(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    pub refine: String,
    pub residual: String,
    /// The amortised encoder's graph, when the artifact has one (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortised: Option<String>,
    /// The int8 generate graph, when the export was asked for it (`Precision::Int8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_int8: Option<String>,
    /// The int8 amortised graph (with `generate_int8`, where the artifact has an encoder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortised_int8: Option<String>,
    /// The resolve graph, where the card has `determined` (format 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
}

impl Files {
    /// The file name of `part`, where the artifact has it (the main file's is not recorded).
    pub fn get(&self, part: Part) -> Option<&str> {
        match part {
            Part::Generate => None,
            Part::Refine => Some(&self.refine),
            Part::Residual => Some(&self.residual),
            Part::Amortised => self.amortised.as_deref(),
            Part::GenerateInt8 => self.generate_int8.as_deref(),
            Part::AmortisedInt8 => self.amortised_int8.as_deref(),
            Part::Resolve => self.resolve.as_deref(),
        }
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_count(v: &usize) -> bool {
    *v == 0
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl ModelCard {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("card serialises")
    }

    /// Parses a card and checks everything it declares: format, shapes within [`crate::limits`],
    /// finite normalisation and defaults in range. A card that passes cannot make a later call
    /// allocate without bound or divide by zero.
    pub fn from_json(s: &str) -> Result<Self, String> {
        let card: ModelCard =
            serde_json::from_str(s).map_err(|e| format!("invalid model card: {e}"))?;
        card.validate()?;
        Ok(card)
    }

    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::*;
        if !(CARD_FORMAT_MIN..=CARD_FORMAT).contains(&self.format) {
            return Err(format!(
                "model card format {} is not supported (this build reads {CARD_FORMAT_MIN} to {CARD_FORMAT})",
                self.format
            ));
        }
        for (name, digests, since) in [
            ("graph_sha256", &self.graph_sha256, 2),
            ("graph_structure_sha256", &self.graph_structure_sha256, 5),
        ] {
            match (digests, self.format >= since) {
                (None, true) => return Err(format!("model card: {name} is missing")),
                (Some(_), false) => {
                    return Err(format!(
                        "model card: {name} in a format {} card",
                        self.format
                    ))
                }
                (Some(d), true) => self.check_digests(name, d)?,
                (None, false) => {}
            }
        }
        self.check_precision_parts()?;
        let c = self.channels.len();
        if c == 0 || c > MAX_CHANNELS {
            return Err(format!(
                "model card: {c} channels (1 to {MAX_CHANNELS} allowed)"
            ));
        }
        if !(1..=c).contains(&self.residual_channels) {
            return Err(format!(
                "model card: residual_channels {} (1 to the {c} channels allowed)",
                self.residual_channels
            ));
        }
        let norm = &self.normalisation;
        if norm.mean.len() != c || norm.scale.len() != c {
            return Err("model card: channels and normalisation disagree".into());
        }
        if !norm.mean.iter().chain(&norm.scale).all(|v| v.is_finite()) || norm.scale.contains(&0.0)
        {
            return Err("model card: normalisation must be finite with nonzero scales".into());
        }
        let g = &self.grid;
        if !(3..=MAX_GRID).contains(&g.nx) || !(3..=MAX_GRID).contains(&g.ny) {
            return Err(format!(
                "model card: grid {} x {} (each side 3 to {MAX_GRID} points)",
                g.ny, g.nx
            ));
        }
        if c * g.nx * g.ny > MAX_FIELD_VALUES {
            return Err(format!(
                "model card: {c} x {} x {} values per sample, more than {MAX_FIELD_VALUES}",
                g.ny, g.nx
            ));
        }
        if !(g.spacing.is_finite()
            && g.spacing > 0.0
            && g.domain.iter().flatten().all(|v| v.is_finite()))
        {
            return Err("model card: grid spacing and domain must be finite (spacing > 0)".into());
        }
        if self.pde.threshold.is_some_and(|t| !t.is_finite())
            || !self.lambda_train.is_finite()
            || !self.lambda_consistency.is_finite()
        {
            return Err(
                "model card: threshold, lambda_train and lambda_consistency must be finite".into(),
            );
        }
        let d = &self.defaults;
        if d.steps as u64 > MAX_STEPS {
            return Err(format!(
                "model card: default steps {} (at most {MAX_STEPS})",
                d.steps
            ));
        }
        if !(d.learning_rate.is_finite() && d.learning_rate > 0.0) {
            return Err(format!(
                "model card: default learning rate {} (finite, > 0)",
                d.learning_rate
            ));
        }
        if !(d.lambda_infer.is_finite() && d.lambda_infer >= 0.0) {
            return Err(format!(
                "model card: default lambda_infer {} (finite, >= 0)",
                d.lambda_infer
            ));
        }
        if !(d.noise_scale.is_finite() && d.noise_scale >= 0.0) {
            return Err(format!(
                "model card: default noise_scale {} (finite, >= 0)",
                d.noise_scale
            ));
        }
        match (&self.spread, self.format >= 6) {
            (Some(_), false) => {
                return Err(format!(
                    "model card: spread in a format {} card",
                    self.format
                ))
            }
            (Some(s), true) => s.validate(c)?,
            (None, _) => {}
        }
        match (
            &self.determined,
            self.files.resolve.is_some(),
            self.format >= 7,
        ) {
            (None, false, _) => {}
            (Some(d), true, true) => d.validate(c, g.ny, g.nx)?,
            (_, _, false) => {
                return Err(format!(
                    "model card: determined or a resolve part in a format {} card",
                    self.format
                ))
            }
            _ => return Err("model card: determined and the resolve part come together".into()),
        }
        Ok(())
    }

    /// The parts this artifact has: the three every artifact has, then those the card names
    /// (amortised, the int8 generate and amortised graphs, resolve), in that order.
    pub fn parts(&self) -> Vec<Part> {
        let mut p = Part::all().to_vec();
        for q in Part::optional() {
            if self.files.get(q).is_some() {
                p.push(q);
            }
        }
        p
    }

    /// Whether the artifact has the graphs `precision` loads.
    pub fn has_precision(&self, precision: Precision) -> bool {
        let parts = self.parts();
        [Part::Generate, Part::Amortised]
            .into_iter()
            .filter(|p| parts.contains(p))
            .all(|p| parts.contains(&precision.part(p)))
    }

    /// The int8 graphs come as a set: the generate one, and the amortised one exactly where the
    /// artifact has an encoder.
    fn check_precision_parts(&self) -> Result<(), String> {
        let f = &self.files;
        match (&f.generate_int8, &f.amortised_int8, &f.amortised) {
            (None, None, _) | (Some(_), None, None) | (Some(_), Some(_), Some(_)) => Ok(()),
            _ => Err("model card: the int8 graphs must be the generate one and, where the artifact has an encoder, the amortised one".into()),
        }
    }

    /// Every part's digest present, and a sha256 in lower-case hex.
    fn check_digests(&self, name: &str, d: &GraphDigests) -> Result<(), String> {
        for q in Part::optional() {
            if d.get(q).is_some() != self.files.get(q).is_some() {
                return Err(
                    format!("model card: the {q:?} part's file and digest disagree").to_lowercase(),
                );
            }
        }
        for p in self.parts() {
            let h = d.get(p).unwrap_or_default();
            if h.len() != 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(
                    format!("model card: {name}.{p:?} is not a sha256 in hex").to_lowercase()
                );
            }
        }
        Ok(())
    }

    /// The inputs and outputs this card's graph of `part` declares ([`Part::interface`] with the
    /// card's format, channels, residual channels and grid).
    pub fn interface(&self, part: Part) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        part.interface(
            self.format,
            self.channels.len(),
            self.residual_channels,
            self.grid.ny,
            self.grid.nx,
        )
    }

    /// The card of another file of the same artifact, as this one would be for `part`: the three
    /// files' cards differ in `part` only.
    pub fn for_part(&self, part: Part) -> ModelCard {
        ModelCard {
            part,
            ..self.clone()
        }
    }
}

/// One tensor of a graph's interface (all float32): its name and dimensions, `None` for the
/// dynamic batch.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: &'static str,
    pub dims: Vec<Option<i64>>,
}

impl Part {
    /// The three parts every artifact has, main file first.
    pub fn all() -> [Part; 3] {
        [Part::Generate, Part::Refine, Part::Residual]
    }

    /// The parts an artifact has where its card names them.
    pub fn optional() -> [Part; 4] {
        [
            Part::Amortised,
            Part::GenerateInt8,
            Part::AmortisedInt8,
            Part::Resolve,
        ]
    }

    /// The inputs and outputs a graph of this part has in an artifact of card `format`, for fields
    /// of `c` channels on ny x nx whose residual has `rc` channels: the exporter declares exactly
    /// these and the runtime checks them at load.
    pub fn interface(
        self,
        format: u32,
        c: usize,
        rc: usize,
        ny: usize,
        nx: usize,
    ) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        let (c, rc, ny, nx) = (c as i64, rc as i64, ny as i64, nx as i64);
        let t = |name, dims: &[Option<i64>]| TensorSpec {
            name,
            dims: dims.to_vec(),
        };
        let full = [None, Some(c), Some(ny), Some(nx)];
        let one = [None, Some(rc), Some(ny), Some(nx)];
        match self {
            Part::Generate => (
                vec![t(io::EPS, &full)],
                vec![t(io::X, &full), t(io::RESIDUAL, &one)],
            ),
            Part::Refine => (
                vec![
                    t(io::EPS, &full),
                    t(io::OBSERVED, &full),
                    t(io::MASK, &full),
                    t(io::LAMBDA, &[Some(1)]),
                ],
                vec![
                    t(io::LOSS, &[None]),
                    t(io::GRAD, &full),
                    t(io::X_MIX, &full),
                ],
            ),
            Part::Residual if format >= 4 => (
                vec![t(io::X, &full)],
                vec![t(io::RESIDUAL, &one), t(io::RESIDUAL_MSE, &[None])],
            ),
            Part::Residual => (vec![t(io::X, &full)], vec![t(io::RESIDUAL, &one)]),
            Part::GenerateInt8 => {
                Part::Generate.interface(format, c as usize, rc as usize, ny as usize, nx as usize)
            }
            Part::Amortised | Part::AmortisedInt8 => (
                vec![t(io::OBSERVED, &full), t(io::MASK, &full), t(io::Z, &full)],
                vec![t(io::EPS, &full), t(io::X_MIX, &full)],
            ),
            Part::Resolve => (vec![t(io::X, &full)], vec![t(io::X_RESOLVED, &full)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration() -> SpreadCalibration {
        let task = |name: &str, observed: Vec<f64>, std_scale| SpreadTask {
            task: name.into(),
            given: String::new(),
            observed,
            std_scale,
        };
        SpreadCalibration {
            noise_scale: 1.0,
            answers: 8,
            coverage: 0.95,
            problems: 32,
            seed: 104_729,
            tasks: vec![
                task("forward", vec![1.0, 0.0], 1.7),
                task("inverse", vec![0.0, 1.0], 1.5),
                task("sparse", vec![0.0, 0.03], 1.4),
            ],
        }
    }

    /// A mask takes the task nearest in its channels' observed shares; equals take the first.
    #[test]
    fn spread_task_is_the_nearest_by_observed_shares() {
        let c = calibration();
        let pick = |s: &[f64]| c.task_for(s).unwrap().task.clone();
        assert_eq!(pick(&[1.0, 0.0]), "forward");
        assert_eq!(pick(&[0.9, 0.1]), "forward");
        assert_eq!(pick(&[0.0, 1.0]), "inverse");
        assert_eq!(pick(&[0.0, 0.6]), "inverse");
        assert_eq!(pick(&[0.0, 0.05]), "sparse");
        assert_eq!(pick(&[0.0, 0.0]), "sparse");
        // 1.0 from forward and from inverse, 0.97 from sparse
        assert_eq!(pick(&[0.5, 0.5]), "sparse");
        // without sparse, [0.5, 0.5] is 1.0 from forward and inverse alike: the first
        let mut two = c.clone();
        two.tasks.pop();
        assert_eq!(two.task_for(&[0.5, 0.5]).unwrap().task, "forward");
    }

    fn determined() -> Determined {
        Determined {
            channel: 0,
            rows: [0, 1],
            modes: vec![
                Mode {
                    ky: 0,
                    kx: 1,
                    phase: Phase::Cos,
                    std: 0.4,
                },
                Mode {
                    ky: 0,
                    kx: 1,
                    phase: Phase::Sin,
                    std: 0.4,
                },
            ],
            noise: 3e-3,
            iterations: 8,
        }
    }

    /// Every field of the determined fit is checked; the message names what is wrong.
    #[test]
    fn determined_refuses_what_it_cannot_use() {
        assert!(determined().validate(2, 16, 16).is_ok());
        let bad = |edit: &dyn Fn(&mut Determined), want: &str| {
            let mut d = determined();
            edit(&mut d);
            let e = d.validate(2, 16, 16).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        bad(&|d| d.channel = 2, "determined channel");
        bad(&|d| d.rows = [3, 3], "determined rows");
        bad(&|d| d.rows = [0, 17], "determined rows");
        bad(&|d| d.modes.clear(), "determined modes");
        bad(
            &|d| d.modes = vec![d.modes[0]; MAX_DETERMINED_MODES + 1],
            "determined modes",
        );
        bad(&|d| d.modes[1].std = 0.0, "std");
        bad(&|d| d.modes[1].std = f64::NAN, "std");
        bad(&|d| d.modes[1].std = 1e-200, "std");
        bad(&|d| d.noise = -1.0, "noise");
        bad(&|d| d.noise = 1e-170, "noise");
        // the modes: distinct, each its own, none zero on the grid
        let mode = |ky, kx, phase| Mode {
            ky,
            kx,
            phase,
            std: 0.4,
        };
        bad(&|d| d.modes[1] = mode(0, 9, Phase::Sin), "out of range");
        bad(&|d| d.modes[1] = mode(0, -1, Phase::Sin), "out of range");
        bad(&|d| d.modes[1] = mode(1, 1, Phase::Sin), "out of range");
        bad(&|d| d.modes[1] = mode(0, 1, Phase::Cos), "given twice");
        bad(&|d| d.modes[1] = mode(0, 0, Phase::Sin), "zero on the grid");
        bad(&|d| d.modes[1] = mode(0, 8, Phase::Sin), "zero on the grid");
        let mut ok = determined();
        ok.modes.push(mode(0, 0, Phase::Cos));
        ok.modes.push(mode(0, 8, Phase::Cos));
        assert!(ok.validate(2, 16, 16).is_ok());
        // several rows: (ky, 0) and (rows - ky, 0) are one mode
        let mut rows = determined();
        rows.rows = [0, 4];
        rows.modes = vec![mode(1, 0, Phase::Cos), mode(2, 0, Phase::Cos)];
        assert!(rows.validate(2, 16, 16).is_ok());
        rows.modes.push(mode(3, 0, Phase::Cos));
        assert!(rows.validate(2, 16, 16).unwrap_err().contains("alias"));
        rows.modes[2] = mode(2, 0, Phase::Sin);
        assert!(rows
            .validate(2, 16, 16)
            .unwrap_err()
            .contains("zero on the grid"));
        let mut four = determined();
        four.modes = vec![four.modes[0]; 4];
        let e = four.validate(1, 4096, 4096).unwrap_err();
        assert!(e.contains("more than the fit may hold"), "{e}");
        bad(&|d| d.iterations = 0, "iterations");
        bad(
            &|d| d.iterations = MAX_DETERMINED_ITERATIONS + 1,
            "iterations",
        );
    }

    /// The modes on their support: cos and sin of the row's phase, zero elsewhere; orthogonal.
    #[test]
    fn determined_basis_is_the_modes_on_the_support() {
        let mut d = determined();
        d.modes[1].kx = 2;
        let (c, ny, nx) = (2, 4, 8);
        let b0 = d.basis(0, c, ny, nx);
        let b1 = d.basis(1, c, ny, nx);
        for p in 0..c * ny * nx {
            let on = d.support(ny, nx).contains(&p);
            assert_eq!(on, p < nx);
            let x = std::f64::consts::TAU * (p % nx) as f64 / nx as f64;
            let want = if on {
                (x.cos(), (2.0 * x).sin())
            } else {
                (0.0, 0.0)
            };
            assert!((b0[p] - want.0).abs() < 1e-12 && (b1[p] - want.1).abs() < 1e-12);
        }
        let dot: f64 = b0.iter().zip(&b1).map(|(a, b)| a * b).sum();
        assert!(dot.abs() < 1e-12);
    }

    /// Every field of a calibration is checked; the message names what is wrong.
    #[test]
    fn spread_calibration_refuses_what_it_cannot_use() {
        assert!(calibration().validate(2).is_ok());
        let bad = |edit: &dyn Fn(&mut SpreadCalibration), want: &str| {
            let mut c = calibration();
            edit(&mut c);
            let e = c.validate(2).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        };
        bad(&|c| c.noise_scale = 0.0, "noise_scale");
        bad(&|c| c.noise_scale = f64::NAN, "noise_scale");
        bad(&|c| c.answers = 1, "answers");
        bad(&|c| c.coverage = 1.0, "coverage");
        bad(&|c| c.tasks.clear(), "without tasks");
        bad(&|c| c.tasks[1].std_scale = f64::INFINITY, "std_scale");
        bad(&|c| c.tasks[1].std_scale = -1.0, "std_scale");
        bad(&|c| c.tasks[2].observed = vec![0.1], "one observed share");
        bad(
            &|c| c.tasks[2].observed = vec![0.0, 1.5],
            "one observed share",
        );
    }
}
