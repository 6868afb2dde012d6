//! Presets: every hyper-parameter of a pipeline run, in TOML. The shipped ones are compiled in (each
//! family brings the one that trains it, `Family::preset`); a path to a TOML file works too.

use crate::nets::UNetConfig;
use crate::pde::Pde;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Every stage in seconds, on Darcy at 16 x 16: the tests' preset.
pub const TINY: &str = include_str!("../presets/tiny.toml");
/// The paper's network and schedule on Darcy at 128 x 128 (a GPU's work).
pub const PAPER: &str = include_str!("../presets/paper.toml");

/// The shipped presets by name: `tiny`, `paper`, and each family's.
pub fn presets() -> Vec<(&'static str, &'static str)> {
    let mut all = vec![("tiny", TINY), ("paper", PAPER)];
    all.extend(Pde::all().iter().map(|p| p.family().preset()));
    all
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub data: DataConfig,
    pub model: UNetConfig,
    pub teacher: TrainConfig,
    pub sampler: SamplerConfig,
    pub student: StudentConfig,
    pub infer: InferConfig,
    /// The amortised encoder (absent: the pipeline trains none and exports without it).
    #[serde(default)]
    pub amortise: Option<AmortiseConfig>,
    pub eval: EvalConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A family's name (default parameters) or a table with `family` and parameters.
    #[serde(deserialize_with = "crate::pde::deserialize_spec")]
    pub pde: Pde,
    pub res: usize,
    pub train: usize,
    pub test: usize,
    pub seed: u64,
    pub test_seed: u64,
}

/// Optimisation settings shared by teacher and student training.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch: i64,
    pub lr: f64,
    pub warmup: u64,
    #[serde(default)]
    pub weight_decay: f64,
    /// EMA decay of the weights (0: no averaging).
    pub ema: f64,
    #[serde(default = "default_clip")]
    pub clip: f64,
    pub checkpoint_every: u64,
}

fn default_clip() -> f64 {
    1.0
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Heun steps N of the teacher (NFE 2N - 1).
    pub steps: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentConfig {
    /// Size of the (eps, ODE(eps)) pair set.
    pub pairs: usize,
    /// Redraw the pair set every this many steps (0: never).
    pub refresh_every: u64,
    pub steps: u64,
    pub batch: i64,
    pub lr: f64,
    pub warmup: u64,
    pub ema: f64,
    pub lambda_train: f64,
    /// Weight of the residual mapped back to the solved field (`physics::defect`), in its
    /// normalised units; 0 (the default) leaves it out.
    #[serde(default)]
    pub lambda_consistency: f64,
    /// Defect corrections of the student's output (`physics::correction`); 0 (the default)
    /// leaves the network's output as it is.
    #[serde(default)]
    pub corrections: usize,
    pub checkpoint_every: u64,
}

impl StudentConfig {
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig::plain(
            self.steps,
            self.batch,
            self.lr,
            self.warmup,
            self.ema,
            self.checkpoint_every,
        )
    }
}

impl TrainConfig {
    /// No weight decay, the default clipping: what the student and the encoder train with.
    fn plain(
        steps: u64,
        batch: i64,
        lr: f64,
        warmup: u64,
        ema: f64,
        checkpoint_every: u64,
    ) -> Self {
        TrainConfig {
            steps,
            batch,
            lr,
            warmup,
            weight_decay: 0.0,
            ema,
            clip: default_clip(),
            checkpoint_every,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferConfig {
    pub lambda: f64,
    pub steps: usize,
    pub lr: f64,
    /// Absent: Adam (the published Algorithm 3).
    #[serde(default)]
    pub optimizer: piddm::optim::Optimizer,
    /// Scale of the amortised start's z (the card's default; absent: 1, as the encoder was
    /// trained). 0 gives the encoder's central answer, the sharpest single answer where the
    /// evaluation shows it (`scripts/noise_scale.py`).
    #[serde(default = "piddm::card::default_noise_scale")]
    pub noise_scale: f64,
    /// The fit of the input's determined modes (`Family::determined`) the card asks of the
    /// solve; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determined: Option<DeterminedFit>,
}

/// The card's `determined` fit: the misfit per observed value it allows (physical units) and its
/// Levenberg-Marquardt iterations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeterminedFit {
    pub noise: f64,
    pub iterations: usize,
}

/// The amortised encoder E(observation, mask, z) -> eps, trained with the student frozen.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmortiseConfig {
    /// Base width of the encoder's U-Net (levels, blocks and groups are the student's).
    pub width: i64,
    pub steps: u64,
    /// Observations per step; each is answered with two noise draws.
    pub batch: i64,
    pub lr: f64,
    pub warmup: u64,
    pub ema: f64,
    /// Weight of the CRPS of the two answers against the true field, beside the Algorithm-3 loss.
    pub crps: f64,
    /// Shares of the training observations that are the family's forward task, its inverse task
    /// and sparse (normalised to sum to 1): a family whose forward answer is exact by construction
    /// (a marched student's) can spend its steps on the others.
    #[serde(default = "even_tasks")]
    pub tasks: [f64; 3],
    /// Noise on the sparse observations in training, the sensors' noise a user's data carries:
    /// each sparse observation gets Gaussian noise of std drawn uniformly from 0 to this, in units
    /// of each channel's data std (0: exact observations). The dense tasks stay exact.
    #[serde(default)]
    pub observation_noise: f64,
    /// The PDE residual's weight in the encoder's loss (default: `[infer] lambda`). The residual
    /// is taken on the answer with the observations written in, where an observed value off the
    /// network's field is a kink; Darcy's encoder learns to lower a at every observed head unless
    /// it is 0 (examples/RESULTS.md, "Encoders trained on noisy sensors").
    #[serde(default)]
    pub lambda: Option<f64>,
    pub checkpoint_every: u64,
    /// The fast path from the encoder's answer, the card's solve defaults when it is exported:
    /// steps (0: the one-call answer), optimiser, learning rate and lambda_infer.
    pub refine: InferConfig,
}

fn even_tasks() -> [f64; 3] {
    [1.0; 3]
}

impl AmortiseConfig {
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig::plain(
            self.steps,
            self.batch,
            self.lr,
            self.warmup,
            self.ema,
            self.checkpoint_every,
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Samples drawn from each generator for the distribution metrics.
    pub samples: usize,
    /// Forward / inverse problems solved.
    pub problems: usize,
}

impl Preset {
    /// A shipped preset by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let shipped = presets();
        let text = match shipped.iter().find(|p| p.0 == name_or_path) {
            Some(p) => p.1.to_string(),
            None if name_or_path.ends_with(".toml") => std::fs::read_to_string(name_or_path)
                .with_context(|| format!("cannot read preset file {name_or_path}"))?,
            None => {
                let known: Vec<_> = shipped.iter().map(|p| p.0).collect();
                bail!(
                    "unknown preset '{name_or_path}' (known: {}, or a path to a .toml file)",
                    known.join(", ")
                )
            }
        };
        let p: Preset =
            toml::from_str(&text).with_context(|| format!("invalid preset {name_or_path}"))?;
        p.model.validate(p.data.res)?;
        if p.model.channels as usize != p.data.pde.channels().len() {
            bail!(
                "preset {}: model has {} channels, {} has {}",
                p.name,
                p.model.channels,
                p.data.pde.name(),
                p.data.pde.channels().len()
            );
        }
        Ok(p)
    }

    /// The shipped preset that trains `family` at full size.
    pub fn full_of(family: &str) -> Result<Self> {
        Preset::load(Pde::parse(family)?.family().preset().0)
    }

    /// The tiny preset on `family` with the loss weights of the family's full preset (they are set
    /// for its residual's scale): every stage in seconds, for tests.
    pub fn tiny_of(family: &str) -> Result<Self> {
        let full = Preset::full_of(family)?;
        let mut p = Preset::load("tiny")?;
        p.name = format!("tiny-{}", full.data.pde.name());
        p.data.pde = full.data.pde;
        p.model.channels = full.model.channels;
        p.student.lambda_train = full.student.lambda_train;
        p.student.lambda_consistency = full.student.lambda_consistency;
        p.student.corrections = full.student.corrections;
        p.infer.lambda = full.infer.lambda;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_presets_parse() {
        for (name, _) in presets() {
            let p = Preset::load(name).unwrap();
            assert_eq!(p.name, name);
        }
        // each family's preset trains that family
        for pde in Pde::all() {
            assert_eq!(
                Preset::full_of(pde.name()).unwrap().data.pde.name(),
                pde.name()
            );
        }
        let e = Preset::load("huge").err().unwrap();
        assert!(e.to_string().contains("unknown preset 'huge'"), "{e}");
    }

    /// A preset names a family or gives it with parameters; bad ones are refused by name.
    #[test]
    fn preset_pde_by_name_or_table() {
        let tiny = TINY;
        let with = |pde: &str| {
            let text = tiny.replace("pde = \"darcy\"", pde);
            toml::from_str::<Preset>(&text)
        };
        let p = with("pde = { family = \"helmholtz\", k = 2.0 }").unwrap();
        assert!(matches!(p.data.pde, crate::pde::Pde::Helmholtz(h) if h.k == 2.0));
        assert_eq!(
            with("pde = \"poisson\"").unwrap().data.pde.name(),
            "poisson"
        );
        let e = with("pde = { family = \"helmholtz\", k = -2.0 }").unwrap_err();
        assert!(e.to_string().contains("wavenumber k"), "{e}");
        let e = with("pde = \"heat\"").unwrap_err();
        assert!(e.to_string().contains("unknown PDE 'heat'"), "{e}");
    }
}
