//! Checkpoints: what a trained network is (role, provenance, the data it was trained on) and its
//! file, a safetensors file of the weights, the EMA weights, both Adam moments and the metadata.
//! Loading checks what the file claims against what the caller needs (role, data set), once here.

use crate::config::TrainConfig;
use crate::data::{DatasetMeta, Normalisation};
use crate::diffusion::Edm;
use crate::nets::{UNet, UNetConfig};
use crate::pde::{Grid, Pde};
use crate::physics::ResidualOp;
use crate::util::{st, tensor::to_f32};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{nn, Tensor};

pub const META_KEY: &str = "piddm.checkpoint";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Student,
    /// The amortised encoder of a student.
    Amortiser,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
            Role::Amortiser => "amortised encoder",
        }
    }
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
    pub fn residual_op(&self) -> ResidualOp {
        ResidualOp {
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
    /// Weight of the defect term (`physics::defect`); absent (0) in students trained before it.
    #[serde(default)]
    pub lambda_consistency: f64,
    /// Defect corrections of the output (`physics::correction`); absent (0) in students trained
    /// before them.
    #[serde(default)]
    pub corrections: usize,
    /// Gains per Fourier mode on its samples' levels (`physics::recolour`), if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recolour: Option<Vec<f64>>,
    pub heun_steps: usize,
    pub teacher_train_steps: u64,
    pub pairs: usize,
    pub refresh_every: u64,
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
    pub pidm: Option<PidmInfo>,
    pub last_loss: f64,
    /// The EMA weights alone (`piddm-train slim`): exports, evaluates and takes corrections or
    /// gains, a quarter of the size, but no training resumes from it (no Adam moments).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weights_only: bool,
}

impl CheckpointMeta {
    /// The teacher's Heun steps a student was distilled from (`default` for other checkpoints):
    /// the teacher is sampled as the student saw it.
    pub fn heun_steps(&self, default: usize) -> usize {
        self.student.as_ref().map_or(default, |s| s.heun_steps)
    }

    /// Refuses a checkpoint at `path` whose role is not `role`.
    pub fn expect_role(&self, role: Role, path: &Path) -> Result<()> {
        if self.role != role {
            bail!(
                "{}: the checkpoint's role is {}, expected {}",
                path.display(),
                self.role.name(),
                role.name()
            );
        }
        Ok(())
    }
}

/// PIDM provenance: the residual weight and the teacher step it continued from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PidmInfo {
    pub weight: f64,
    pub teacher_step: u64,
}

/// Amortised-encoder provenance: which student it answers for and its loss weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmortiserInfo {
    /// sha256 of the student's EMA weights it was trained against ([`weights_sha256`]).
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
    /// Adam's first and second moments, in [`Net::named`] order.
    pub(crate) m: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
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
        // a weights-only checkpoint keeps the EMA weights alone
        let nets = if self.meta.weights_only {
            vec![("ema", &self.ema)]
        } else {
            vec![("model", &self.model), ("ema", &self.ema)]
        };
        let mut tensors = Vec::new();
        for (prefix, net) in nets {
            tensors.extend(
                net.named()
                    .into_iter()
                    .map(|(k, t)| (format!("{prefix}/{k}"), t)),
            );
        }
        if !self.meta.weights_only {
            let names: Vec<String> = self.model.named().into_iter().map(|(k, _)| k).collect();
            for (prefix, moments) in [("adam_m", &self.m), ("adam_v", &self.v)] {
                tensors.extend(
                    names
                        .iter()
                        .zip(moments)
                        .map(|(k, t)| (format!("{prefix}/{k}"), t.shallow_clone())),
                );
            }
        }
        st::write(path, &tensors, META_KEY, serde_json::to_string(&self.meta)?)
    }

    /// A checkpoint to continue training from: refuses a weights-only one, which has no Adam
    /// moments to continue with.
    pub fn load_resumable(path: &Path) -> Result<Self> {
        let st = TrainState::load(path)?;
        if st.meta.weights_only {
            bail!(
                "{} holds the weights alone (`piddm-train slim`): training cannot resume from \
                 it; resume from the full checkpoint it was slimmed from",
                path.display()
            );
        }
        Ok(st)
    }

    /// Any checkpoint, a weights-only one with its EMA weights as the model too and zero moments.
    pub fn load(path: &Path) -> Result<Self> {
        let (mut tensors, meta) = read_checkpoint(path)?;
        let mut st = TrainState::new(meta);
        if st.meta.weights_only {
            fill(&st.ema, "ema", &mut tensors, path)?;
            st.model.copy_from(&st.ema)?;
            return Ok(st);
        }
        fill(&st.model, "model", &mut tensors, path)?;
        fill(&st.ema, "ema", &mut tensors, path)?;
        let names: Vec<String> = st.model.named().into_iter().map(|(k, _)| k).collect();
        for (i, k) in names.iter().enumerate() {
            st.m[i] = checked(
                take(&mut tensors, &format!("adam_m/{k}"), path)?,
                &st.m[i],
                k,
            )?;
            st.v[i] = checked(
                take(&mut tensors, &format!("adam_v/{k}"), path)?,
                &st.v[i],
                k,
            )?;
        }
        Ok(st)
    }
}

type Tensors = std::collections::BTreeMap<String, Tensor>;

/// Tensor `key` taken out of a checkpoint's tensors, or an error naming it.
fn take(tensors: &mut Tensors, key: &str, path: &Path) -> Result<Tensor> {
    tensors
        .remove(key)
        .with_context(|| format!("{}: checkpoint lacks tensor {key}", path.display()))
}

/// The checkpoint's tensors `{prefix}/{name}` copied into `net`'s weights.
fn fill(net: &Net, prefix: &str, tensors: &mut Tensors, path: &Path) -> Result<()> {
    tch::no_grad(|| {
        for (k, mut t) in net.named() {
            let src = take(tensors, &format!("{prefix}/{k}"), path)?;
            t.copy_(&checked(src, &t, &k)?);
        }
        Ok(())
    })
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

fn read_checkpoint(path: &Path) -> Result<(Tensors, CheckpointMeta)> {
    let (tensors, meta_json) = st::read(path, META_KEY, "checkpoint")?;
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

/// Writes the weights-only form of the checkpoint at `from` to `to` (the same file allowed): its
/// EMA weights and metadata, without the training weights and Adam's moments.
pub fn slim(from: &Path, to: &Path) -> Result<()> {
    let mut st = TrainState::load(from)?;
    st.meta.weights_only = true;
    st.save(to)
}

/// Loads the EMA weights of a checkpoint for inference.
pub fn load_ema(path: &Path) -> Result<(Net, CheckpointMeta)> {
    let (mut tensors, meta) = read_checkpoint(path)?;
    let net = Net::new(&meta.unet);
    fill(&net, "ema", &mut tensors, path)?;
    Ok((net, meta))
}

/// Loads the EMA weights of the checkpoint at `path`, refusing one whose role is not `role`.
pub fn load_role(path: &Path, role: Role) -> Result<(Net, CheckpointMeta)> {
    let (net, meta) = load_ema(path)?;
    meta.expect_role(role, path)?;
    if let Some(s) = meta.student.as_ref().filter(|s| s.corrections > 0) {
        let op = meta.data.residual_op();
        crate::physics::Correction::new(op, &meta.data.normalisation, s.corrections)
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok((net, meta))
}

/// [`load_role`], refusing also a model trained on another PDE, grid or channels than `data`.
pub fn load_for(path: &Path, role: Role, data: &DatasetMeta) -> Result<(Net, CheckpointMeta)> {
    let (net, meta) = load_role(path, role)?;
    meta.data
        .check_compatible(data, &path.display().to_string())?;
    Ok((net, meta))
}

/// sha256 of the weights as float32 little-endian in name order: the identity of a trained
/// network that model cards and encoders record.
pub fn weights_sha256(net: &Net) -> String {
    let mut h = Sha256::new();
    for (name, t) in net.named() {
        h.update(name.as_bytes());
        for v in to_f32(&t) {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
