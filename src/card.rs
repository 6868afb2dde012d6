//! The artifact contract: what an exported PIDDM model file holds and how its parts are named.
//! The trainer writes artifacts through these definitions and the runtime reads them; neither side
//! restates a name or a field.
//!
//! An artifact is a set of ONNX files beside each other; the user names the main one (`NAME.onnx`):
//! - `NAME.onnx` — **generate**: `eps` [B, C, H, W] standard normal → `x` [B, C, H, W] (physical units)
//!   and `residual` [B, 1, H, W] (the PDE residual of `x`, zero on the boundary ring).
//! - `NAME.refine.onnx` — **refine**: `eps`, `observed` [B, C, H, W] (physical units), `mask`
//!   [B, C, H, W] (1 where observed, else 0), `lambda` [1] → `loss` [B], `grad` = d loss / d eps
//!   [B, C, H, W], `x_mix` [B, C, H, W].
//! - `NAME.residual.onnx` — **residual**: `x` [B, C, H, W] → `residual` [B, 1, H, W].
//!
//! Every file carries the same model card as JSON under the metadata key [`CARD_KEY`].

use serde::{Deserialize, Serialize};

/// Metadata key of the JSON model card in each file's `metadata_props`.
pub const CARD_KEY: &str = "piddm.card";
/// Card format written by this version; readers accept this one only.
pub const CARD_FORMAT: u32 = 1;

/// Input and output names of the three graphs.
pub mod io {
    pub const EPS: &str = "eps";
    pub const X: &str = "x";
    pub const RESIDUAL: &str = "residual";
    pub const OBSERVED: &str = "observed";
    pub const MASK: &str = "mask";
    pub const LAMBDA: &str = "lambda";
    pub const LOSS: &str = "loss";
    pub const GRAD: &str = "grad";
    pub const X_MIX: &str = "x_mix";
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
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Generate,
    Refine,
    Residual,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub format: u32,
    /// Which of the three graphs this file is.
    pub part: Part,
    pub pde: Pde,
    pub grid: GridInfo,
    pub channels: Vec<Channel>,
    /// x_physical = mean + scale * x_normalised, per channel. The graphs fold it in; it is here so a
    /// reader can interpret observation misfits, which the refine loss measures in normalised units.
    pub normalisation: Normalisation,
    pub lambda_train: f64,
    pub defaults: SolveDefaults,
    /// Heun steps of the teacher the student was distilled from (NFE 2N - 1).
    pub teacher_steps: usize,
    pub provenance: Provenance,
    /// Evaluation figures of this model (free-form JSON object from the trainer's evaluation).
    pub evaluation: serde_json::Value,
    /// sha256 (hex) of the student's weights as float32 little-endian, in the checkpoint's name order.
    pub weights_sha256: String,
    /// File names (relative to the main file) of the refine and residual graphs.
    pub files: Files,
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
    /// [[x0, x1], [y0, y1]]; the grid includes the boundary points.
    pub domain: [[f64; 2]; 2],
    pub spacing: f64,
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
pub struct Files {
    pub refine: String,
    pub residual: String,
}

impl ModelCard {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("card serialises")
    }

    /// Parses and checks a card: the format must be this version's and the shapes consistent.
    pub fn from_json(s: &str) -> Result<Self, String> {
        let card: ModelCard =
            serde_json::from_str(s).map_err(|e| format!("invalid model card: {e}"))?;
        if card.format != CARD_FORMAT {
            return Err(format!(
                "model card format {} is not supported (this build reads {CARD_FORMAT})",
                card.format
            ));
        }
        let c = card.channels.len();
        if c == 0 || card.normalisation.mean.len() != c || card.normalisation.scale.len() != c {
            return Err("model card: channels and normalisation disagree".into());
        }
        if card.grid.nx < 3 || card.grid.ny < 3 {
            return Err("model card: grid too small".into());
        }
        Ok(card)
    }
}

/// The optimiser of the masked solve (Adam on eps), shared by the trainer's tch solve and the
/// runtime's: same rule, same constants, so the two give the same answer from the same start.
pub mod adam {
    pub const BETA1: f64 = 0.9;
    pub const BETA2: f64 = 0.999;
    pub const EPS: f64 = 1e-8;

    /// One in-place Adam update of `p` with gradient `g` (`t` counts from 1).
    pub fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f64, t: u64) {
        let (bc1, bc2) = (1.0 - BETA1.powi(t as i32), 1.0 - BETA2.powi(t as i32));
        for i in 0..p.len() {
            let gi = g[i] as f64;
            let mi = BETA1 * m[i] as f64 + (1.0 - BETA1) * gi;
            let vi = BETA2 * v[i] as f64 + (1.0 - BETA2) * gi * gi;
            m[i] = mi as f32;
            v[i] = vi as f32;
            p[i] -= (lr * (mi / bc1) / ((vi / bc2).sqrt() + EPS)) as f32;
        }
    }
}
