//! What teacher and student training share: the network with its weights, AdamW, EMA, gradient
//! clipping, warm-up, atomic checkpoints, exact resume, and stopping cleanly on NaN or Ctrl-C.
//!
//! Exact resume: every source of randomness in step k is seeded from (run seed, k), so a run resumed
//! from the checkpoint of step k repeats steps k+1... bit for bit. The checkpoint holds the weights,
//! the EMA weights, both Adam moments and the step.

use crate::config::TrainConfig;
use crate::dataset::{DatasetMeta, Normalisation};
use crate::edm::Edm;
use crate::pde::{Grid, Pde};
use crate::unet::{UNet, UNetConfig};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{nn, Kind, Tensor};

pub const META_KEY: &str = "piddm.checkpoint";
pub const FORMAT_VERSION: u32 = 1;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Called from the Ctrl-C handler: the running loop checkpoints and returns at the end of its step.
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Student,
    /// The amortised encoder of a student.
    Amortiser,
}

/// What a model was trained on: enough to check a data set against it and to undo normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub pde: Pde,
    pub grid: Grid,
    pub channels: Vec<String>,
    pub normalisation: Normalisation,
    pub seed: u64,
    pub count: usize,
}

impl From<&DatasetMeta> for DataSummary {
    fn from(m: &DatasetMeta) -> Self {
        DataSummary {
            pde: m.pde,
            grid: m.grid,
            channels: m.channels.clone(),
            normalisation: m.normalisation.clone(),
            seed: m.seed,
            count: m.count,
        }
    }
}

impl DataSummary {
    pub fn residual_op(&self) -> crate::residual::ResidualOp {
        crate::residual::ResidualOp {
            pde: self.pde,
            grid: self.grid,
        }
    }

    /// A data set can be used with this model only if its PDE, grid and channels are the same.
    pub fn check_compatible(&self, d: &DatasetMeta, what: &str) -> Result<()> {
        if self.pde != d.pde || self.grid != d.grid || self.channels != d.channels {
            bail!(
                "{what} was trained on {} {}x{} {:?}, but the data set is {} {}x{} {:?}",
                self.pde.name(),
                self.grid.n,
                self.grid.n,
                self.channels,
                d.pde.name(),
                d.grid.n,
                d.grid.n,
                d.channels
            );
        }
        Ok(())
    }
}

/// Student provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentInfo {
    pub lambda_train: f64,
    pub heun_steps: usize,
    pub teacher_train_steps: u64,
    pub pairs: usize,
    pub refresh_every: u64,
}

impl CheckpointMeta {
    /// The teacher's Heun steps a student was distilled from (`default` for other checkpoints):
    /// the teacher is sampled as the student saw it.
    pub fn heun_steps(&self, default: usize) -> usize {
        self.student.as_ref().map_or(default, |s| s.heun_steps)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    pub role: Role,
    pub step: u64,
    pub seed: u64,
    pub train: TrainConfig,
    pub unet: UNetConfig,
    pub edm: Edm,
    pub data: DataSummary,
    pub student: Option<StudentInfo>,
    /// Set on amortised encoders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amortiser: Option<AmortiserInfo>,
    /// Set on PIDM teachers (and on what is distilled from them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidm: Option<crate::pidm::PidmInfo>,
    pub last_loss: f64,
}

/// Amortised-encoder provenance: which student it answers for and its loss weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmortiserInfo {
    /// sha256 of the student's EMA weights it was trained against (`export::weights_sha256`).
    pub student_weights: String,
    pub student_step: u64,
    pub lambda_infer: f64,
    pub crps: f64,
}

impl PartialEq for TrainConfig {
    fn eq(&self, o: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(o).ok()
    }
}

/// A U-Net and the variables it owns.
pub struct Net {
    pub vs: nn::VarStore,
    pub net: UNet,
}

impl Net {
    pub fn new(cfg: &UNetConfig) -> Self {
        let vs = nn::VarStore::new(tch::Device::cuda_if_available());
        let net = UNet::new(&vs.root(), cfg);
        Net { vs, net }
    }

    /// Variables sorted by name: a fixed order for the optimiser and the checkpoint.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn copy_from(&mut self, other: &Net) -> Result<()> {
        self.vs.copy(&other.vs).context("copying weights")
    }

    pub fn parameter_count(&self) -> i64 {
        self.named().iter().map(|(_, t)| t.numel() as i64).sum()
    }
}

/// Training state: weights, EMA weights, Adam moments, step and provenance.
pub struct TrainState {
    pub model: Net,
    pub ema: Net,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub meta: CheckpointMeta,
}

impl TrainState {
    pub fn new(meta: CheckpointMeta) -> Self {
        tch::manual_seed(meta.seed as i64);
        let model = Net::new(&meta.unet);
        let mut ema = Net::new(&meta.unet);
        ema.copy_from(&model).expect("same architecture");
        let zeros = |n: &Net| n.named().iter().map(|(_, t)| t.zeros_like()).collect();
        let (m, v) = (zeros(&model), zeros(&model));
        TrainState {
            model,
            ema,
            m,
            v,
            meta,
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, net) in [("model", &self.model), ("ema", &self.ema)] {
            tensors.extend(
                net.named()
                    .into_iter()
                    .map(|(k, t)| (format!("{prefix}/{k}"), t)),
            );
        }
        let names: Vec<String> = self.model.named().into_iter().map(|(k, _)| k).collect();
        for (prefix, moments) in [("adam_m", &self.m), ("adam_v", &self.v)] {
            tensors.extend(
                names
                    .iter()
                    .zip(moments)
                    .map(|(k, t)| (format!("{prefix}/{k}"), t.shallow_clone())),
            );
        }
        crate::st::write(path, &tensors, META_KEY, serde_json::to_string(&self.meta)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (mut tensors, meta) = read_checkpoint(path)?;
        let mut st = TrainState::new(meta);
        let names: Vec<String> = st.model.named().into_iter().map(|(k, _)| k).collect();
        let mut take = |key: String| {
            tensors
                .remove(&key)
                .with_context(|| format!("{}: checkpoint lacks tensor {key}", path.display()))
        };
        tch::no_grad(|| -> Result<()> {
            for (prefix, net) in [("model", &st.model), ("ema", &st.ema)] {
                for (k, mut t) in net.named() {
                    t.copy_(&checked(take(format!("{prefix}/{k}"))?, &t, &k)?);
                }
            }
            for (i, k) in names.iter().enumerate() {
                st.m[i] = checked(take(format!("adam_m/{k}"))?, &st.m[i], k)?;
                st.v[i] = checked(take(format!("adam_v/{k}"))?, &st.v[i], k)?;
            }
            Ok(())
        })?;
        Ok(st)
    }
}

fn checked(t: Tensor, like: &Tensor, name: &str) -> Result<Tensor> {
    if t.size() != like.size() {
        bail!(
            "checkpoint tensor {name} is {:?}, the model expects {:?}",
            t.size(),
            like.size()
        );
    }
    Ok(t.to_device(like.device()))
}

fn read_checkpoint(
    path: &Path,
) -> Result<(std::collections::BTreeMap<String, Tensor>, CheckpointMeta)> {
    let (tensors, meta_json) = crate::st::read(path, META_KEY, "checkpoint")?;
    let meta: CheckpointMeta = serde_json::from_str(&meta_json)
        .and_then(|mut v: serde_json::Value| {
            if let Some(data) = v.get_mut("data") {
                crate::pde::migrate_legacy(data);
            }
            serde_json::from_value(v)
        })
        .with_context(|| {
            format!(
                "{} is not a valid piddm checkpoint: bad metadata",
                path.display()
            )
        })?;
    if meta.format != FORMAT_VERSION {
        bail!(
            "{}: checkpoint format {} (this build reads {FORMAT_VERSION})",
            path.display(),
            meta.format
        );
    }
    Ok((tensors, meta))
}

/// Loads the EMA weights of a checkpoint for inference.
pub fn load_ema(path: &Path) -> Result<(Net, CheckpointMeta)> {
    let (mut tensors, meta) = read_checkpoint(path)?;
    let net = Net::new(&meta.unet);
    tch::no_grad(|| -> Result<()> {
        for (k, mut t) in net.named() {
            let src = tensors
                .remove(&format!("ema/{k}"))
                .with_context(|| format!("{}: checkpoint lacks tensor ema/{k}", path.display()))?;
            t.copy_(&checked(src, &t, &k)?);
        }
        Ok(())
    })?;
    Ok((net, meta))
}

/// Mixes the run seed and the step into one seed (splitmix64 finaliser).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// Stopped by request (Ctrl-C or `stop_after`) with a checkpoint written.
    Stopped,
}

/// Opens the state to train into `path`: a fresh one, or (with `resume`) the checkpoint there.
/// An existing checkpoint is never overwritten without `resume`.
pub fn open_state(
    path: &Path,
    resume: bool,
    fresh: impl FnOnce() -> Result<TrainState>,
) -> Result<TrainState> {
    match (path.exists(), resume) {
        (true, true) => TrainState::load(path),
        (true, false) => bail!(
            "{} exists: pass --resume to continue it, or remove it to start over",
            path.display()
        ),
        (false, _) => fresh(),
    }
}

/// Runs optimisation steps until the configured total. `loss_fn(net, step)` returns the scalar loss
/// of one step; all its randomness must come from tch's generator (seeded here per step) or from
/// `step_seed`.
pub fn run(
    state: &mut TrainState,
    path: &Path,
    label: &str,
    stop_after: Option<u64>,
    mut loss_fn: impl FnMut(&UNet, u64) -> Result<Tensor>,
) -> Result<Outcome> {
    let cfg = state.meta.train.clone();
    let total = cfg.steps;
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_position(state.meta.step);
    let log_every = (total / 20).max(1);
    let t0 = std::time::Instant::now();
    let first = state.meta.step;
    let mut last_saved = path.exists().then_some(state.meta.step);
    while state.meta.step < total {
        let step = state.meta.step;
        tch::manual_seed((step_seed(state.meta.seed, step) >> 1) as i64);
        let lr = cfg.lr * ((step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
        state
            .model
            .vs
            .trainable_variables()
            .iter_mut()
            .for_each(|t| t.zero_grad());
        let loss = loss_fn(&state.model.net, step)?;
        let lv = f64::try_from(&loss)?;
        if !lv.is_finite() {
            let kept = match last_saved {
                Some(s) => format!(
                    "the last good checkpoint (step {s}) is kept at {}",
                    path.display()
                ),
                None => "no checkpoint had been written yet".to_string(),
            };
            bail!("{label}: loss is {lv} at step {step}; stopping without saving ({kept}). Lower the learning rate or check the data.");
        }
        loss.backward();
        adamw_step(state, &cfg, lr, step + 1);
        state.meta.step = step + 1;
        state.meta.last_loss = lv;
        bar.set_position(step + 1);
        bar.set_message(format!("{label} loss {lv:.4e}"));
        if bar.is_hidden() && (step + 1).is_multiple_of(log_every) {
            let per_step = t0.elapsed().as_secs_f64() / (step + 1 - first) as f64;
            eprintln!(
                "{label}: step {}/{total} loss {lv:.4e} ({per_step:.3} s/step)",
                step + 1
            );
        }
        let stop = INTERRUPTED.load(Ordering::SeqCst) || stop_after == Some(step + 1);
        if (step + 1).is_multiple_of(cfg.checkpoint_every.max(1)) || step + 1 == total || stop {
            state.save(path)?;
            last_saved = Some(step + 1);
        }
        if stop {
            bar.abandon();
            eprintln!(
                "{label}: stopped at step {}; checkpoint {} (continue with --resume)",
                step + 1,
                path.display()
            );
            return Ok(Outcome::Stopped);
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "{label}: {total} steps, final loss {:.4e}, {:.1} s this run",
        state.meta.last_loss,
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Finished)
}

/// AdamW with global-norm gradient clipping, then the EMA update.
fn adamw_step(state: &mut TrainState, cfg: &TrainConfig, lr: f64, t: u64) {
    let _g = tch::no_grad_guard();
    let mut params: Vec<Tensor> = state.model.named().into_iter().map(|(_, t)| t).collect();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| {
            let g = p.grad();
            if g.defined() {
                g
            } else {
                p.zeros_like()
            }
        })
        .collect();
    let norm = grads
        .iter()
        .map(|g| f64::try_from(g.square().sum(Kind::Double)).unwrap())
        .sum::<f64>()
        .sqrt();
    let clip = if cfg.clip > 0.0 && norm > cfg.clip {
        cfg.clip / norm
    } else {
        1.0
    };
    for (i, p) in params.iter_mut().enumerate() {
        if cfg.weight_decay > 0.0 {
            let _ = p.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
        }
        adam_update(
            p,
            &(&grads[i] * clip),
            &mut state.m[i],
            &mut state.v[i],
            lr,
            t,
        );
    }
    let decay = cfg.ema.min((1.0 + t as f64) / (10.0 + t as f64));
    for ((_, mut e), (_, p)) in state.ema.named().into_iter().zip(state.model.named()) {
        let _ = e.g_mul_scalar_(decay).g_add_(&(p * (1.0 - decay)));
    }
}

/// One Adam update of `p` in place (bias-corrected, the constants of `piddm::optim::adam`, which the
/// runtime's solve uses too); `t` counts from 1. Shared by training and the optimisation of eps.
pub fn adam_update(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, lr: f64, t: u64) {
    use piddm::optim::adam;
    let _g = tch::no_grad_guard();
    let (b1, b2, eps) = (adam::BETA1, adam::BETA2, adam::EPS);
    let _ = m.g_mul_scalar_(b1).g_add_(&(g * (1.0 - b1)));
    let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
    let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
    let upd = (&*m / bc1) / ((&*v / bc2).sqrt() + eps);
    let _ = p.g_sub_(&(upd * lr));
}
