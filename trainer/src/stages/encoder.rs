//! Amortised inference: an encoder E that answers an observation in one evaluation,
//!   eps = z + E([M * x'_n, M, z]),   x = the answer of d(eps) (`Student::emit_answer`)
//! (x'_n the observation in normalised units, M its mask, z a standard normal draw), so that one
//! encoder call and one student call replace the optimisation of eps. E is trained with the student
//! frozen, on a distribution of tasks (forward, inverse, sparse masks of either or both channels), by
//! the Algorithm-3 loss of each answer plus the CRPS of two answers (two draws of z) against the true
//! field. Algorithm 3 alone does not pin the unobserved channel of a forward problem (see
//! `eval::diagnose`); the CRPS does, and being a proper score it makes the answers' spread over z
//! estimate the uncertainty rather than collapse to one answer.

use super::solve::Student;
use crate::checkpoint::{
    load_role, weights_sha256, AmortiserInfo, CheckpointMeta, Net, Role, TrainState,
};
use crate::config::{AmortiseConfig, Preset};
use crate::data::{Dataset, Normalisation};
use crate::nets::{NetOps, UNet, UNetConfig};
use crate::pde::ops::Tch;
use crate::pde::{Grid, Pde, Task};
use crate::train::{self, Outcome};
use crate::util::seed::batch_indices;
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// The encoder's network: the student's levels with 3C channels in and C out.
pub fn encoder_config(student: &UNetConfig, cfg: &AmortiseConfig) -> UNetConfig {
    UNetConfig {
        in_channels: Some(3 * student.channels),
        width: cfg.width,
        ..student.clone()
    }
}

/// eps from an observation (physical units, zero where unobserved), its mask and z, on any backend.
pub fn encode<B: NetOps>(
    b: &mut B,
    enc: &UNet,
    norm: &Normalisation,
    observed: &B::V,
    mask: &B::V,
    z: &B::V,
) -> B::V {
    let dev = enc.device();
    let obs_n = norm.emit_normalised(b, observed);
    let seen = b.mul(mask, &obs_n);
    let input = b.concat(&[&seen, mask, z]);
    // The encoder is not a denoiser: its noise level is a constant 0.
    let c_noise = b.constant(&Tensor::zeros([1], (Kind::Float, dev)));
    let e = enc.apply(b, &input, &c_noise);
    b.add(z, &e)
}

/// The one-call answer of `st` with encoder `enc`: eps and the answer (physical,
/// [`Student::emit_answer`]), on any backend.
pub fn answer<B: NetOps>(
    b: &mut B,
    st: &Student,
    enc: &UNet,
    observed: &B::V,
    mask: &B::V,
    z: &B::V,
) -> (B::V, B::V) {
    let norm = st.norm;
    let eps = encode(b, enc, norm, observed, mask, z);
    let d = st.emit_one_step(b, &eps);
    (eps, st.emit_answer(b, &d, observed, mask))
}

/// The family's forward and inverse masks of one sample, [1, C, H, W], on `device`.
pub fn family_masks(pde: &Pde, grid: Grid, device: tch::Device) -> [Tensor; 2] {
    let c = pde.channels().len() as i64;
    let n = grid.n as i64;
    [Task::Forward, Task::Inverse].map(|t| {
        Tensor::from_slice(&pde.family().task_mask(t, grid))
            .reshape([1, c, n, n])
            .to_device(device)
    })
}

/// Masks of the training tasks, one per sample of `like` [B, C, H, W], drawn from tch's generator:
/// the family's forward task, its inverse task (`tasks`, from [`family_masks`]) and sparse (1 to
/// 10 % of the points of one channel, or of all), in proportion to `shares`.
pub fn task_masks(like: &Tensor, tasks: &[Tensor; 2], shares: [f64; 3]) -> Tensor {
    let [bsz, c, h, w] = like.size()[..] else {
        panic!("task masks for a 4-D batch")
    };
    let opts = (Kind::Float, like.device());
    let kind = Tensor::rand([bsz], opts);
    let chan = Tensor::randint(c + 1, [bsz], (Kind::Int64, like.device()));
    let frac = Tensor::rand([bsz, 1, 1, 1], opts) * 0.09 + 0.01;
    let sparse = Tensor::rand([bsz, c, h, w], opts).lt_tensor(&frac);
    let ch = Tensor::arange(c, (Kind::Int64, like.device())).reshape([1, c, 1, 1]);
    // chan k < C: channel k only; chan C: all channels
    let chan = chan.reshape([bsz, 1, 1, 1]);
    let on = ch.eq_tensor(&chan).logical_or(&chan.eq(c));
    let sparse = sparse.logical_and(&on).to_kind(Kind::Float);
    let dense = |t: &Tensor| t.to_kind(Kind::Float).expand([bsz, c, h, w], false);
    let kind = kind.reshape([bsz, 1, 1, 1]);
    let total: f64 = shares.iter().sum();
    let (f, i) = (shares[0] / total, shares[1] / total);
    let fwd = kind.lt(f);
    let inv = kind.lt(f + i).logical_and(&fwd.logical_not());
    sparse
        .where_self(&inv.logical_not(), &dense(&tasks[1]))
        .where_self(&fwd.logical_not(), &dense(&tasks[0]))
}

/// Noise for the sparse observations of `mask` (under a quarter of the values observed):
/// Gaussian, its std drawn per sample uniformly from 0 to `level` times each channel's data std
/// (`norm.scale`); zero elsewhere and on the dense tasks.
pub fn sensor_noise(truth: &Tensor, mask: &Tensor, norm: &Normalisation, level: f64) -> Tensor {
    let [bsz, c, _, _] = truth.size()[..] else {
        panic!("sensor noise for a 4-D batch")
    };
    let opts = (Kind::Float, truth.device());
    let sparse = mask
        .mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float)
        .lt(0.25)
        .to_kind(Kind::Float);
    let scale = Tensor::from_slice(&norm.scale)
        .to_kind(Kind::Float)
        .to_device(truth.device())
        .reshape([1, c, 1, 1]);
    let sigma = Tensor::rand([bsz, 1, 1, 1], opts) * level;
    truth.randn_like() * sigma * scale * sparse * mask
}

/// Fair CRPS of two answers per sample (mean over C, H, W): 0.5 (|a - y| + |b - y|) - 0.5 |a - b|.
pub fn crps2(a: &Tensor, b: &Tensor, y: &Tensor) -> Tensor {
    let dims = [1i64, 2, 3];
    let s = ((a - y).abs() + (b - y).abs() - (a - b).abs()) * 0.5;
    s.mean_dim(dims.as_slice(), false, Kind::Float)
}

/// Trains the encoder of `student_ckpt` on `data` (the student's training data) into `out`; a new
/// one starts from zero output, or from the weights of `init`, an encoder of the same architecture
/// trained against a sibling student (one distilled from the same teacher, say with another
/// padding), whose map from eps to fields is close.
pub fn train_encoder(
    preset: &Preset,
    student_ckpt: &Path,
    data: &Dataset,
    out: &Path,
    resume: bool,
    stop_after: Option<u64>,
    init: Option<&Path>,
) -> Result<Outcome> {
    let cfg = preset
        .amortise
        .as_ref()
        .with_context(|| format!("preset {} has no [amortise] section", preset.name))?;
    let (mut snet, smeta) = load_role(student_ckpt, Role::Student)
        .with_context(|| format!("loading student {}", student_ckpt.display()))?;
    smeta.data.check_compatible(&data.meta, "the student")?;
    snet.vs.freeze();
    let student_weights = weights_sha256(&snet);
    let lambda = cfg.lambda.unwrap_or(preset.infer.lambda);
    let mut state = train::open_state(out, resume, || {
        Ok(TrainState::new(CheckpointMeta {
            role: Role::Amortiser,
            step: 0,
            train: cfg.train_config(),
            unet: encoder_config(&smeta.unet, cfg),
            amortiser: Some(AmortiserInfo {
                student_weights: student_weights.clone(),
                student_step: smeta.step,
                lambda_infer: lambda,
                crps: cfg.crps,
            }),
            last_loss: f64::NAN,
            // trained here, with its own moments, whatever the student's file holds
            weights_only: false,
            ..smeta.clone()
        }))
    })?;
    let info = state
        .meta
        .amortiser
        .clone()
        .with_context(|| format!("{} is not an amortised encoder", out.display()))?;
    if info.student_weights != student_weights {
        bail!(
            "{} was trained against another student than {}",
            out.display(),
            student_ckpt.display()
        );
    }
    if state.meta.step == 0 {
        match init {
            Some(path) => {
                let (enet, emeta) = load_role(path, Role::Amortiser)
                    .with_context(|| format!("loading the initial encoder {}", path.display()))?;
                // the padding may differ: it has no weights
                let unet = UNetConfig {
                    periodic: state.meta.unet.periodic,
                    ..emeta.unet.clone()
                };
                if unet != state.meta.unet {
                    bail!(
                        "{} is an encoder of another network ({:?}); this student's is {:?}",
                        path.display(),
                        emeta.unet,
                        state.meta.unet
                    );
                }
                state.model.copy_from(&enet)?;
            }
            // E starts at 0: the first answers are the student's unconditional samples.
            None => tch::no_grad(|| {
                let _ = state.model.net.conv_out.ws.zero_();
                if let Some(b) = &state.model.net.conv_out.bs {
                    let _ = b.shallow_clone().zero_();
                }
            }),
        }
        state.ema.copy_from(&state.model)?;
    }
    state.meta.train = cfg.train_config();
    let st = Student::of(&snet, &smeta);
    let (seed, batch, n) = (state.meta.seed, state.meta.train.batch, data.meta.count);
    let device = snet.vs.device();
    let fields = data.fields.to_device(device);
    let norm = smeta.data.normalisation.clone();
    let tasks = family_masks(&smeta.data.pde, smeta.data.grid, device);
    let label = format!(
        "encoder (lambda_infer {:e}, crps {})",
        info.lambda_infer, info.crps
    );
    let lambda_t = Tensor::from(info.lambda_infer)
        .to_kind(Kind::Float)
        .to_device(device);
    train::run(&mut state, out, &label, stop_after, |enc, step| {
        let idx = batch_indices(seed ^ 0xA807, step, n, batch).to_device(device);
        let truth = fields.index_select(0, &idx);
        let mask = task_masks(&truth, &tasks, cfg.tasks);
        let observed = &truth * &mask;
        let observed = match cfg.observation_noise {
            s if s > 0.0 => observed + sensor_noise(&truth, &mask, &norm, s),
            _ => observed,
        };
        // two answers per observation
        let (observed, mask) = (observed.repeat([2, 1, 1, 1]), mask.repeat([2, 1, 1, 1]));
        let z = observed.randn_like();
        let eps = encode(&mut Tch, enc, &norm, &observed, &mask, &z);
        let d = st.one_step(&eps);
        let (alg3, _) = st.emit_loss(&mut Tch, &d, &observed, &mask, &lambda_t);
        let halves = d.chunk(2, 0);
        let y = norm.to_normalised(&truth);
        let score = crps2(&halves[0], &halves[1], &y);
        Ok(alg3.mean(Kind::Float) + score.mean(Kind::Float) * info.crps)
    })
}

/// Loads the amortised encoder at `path`, which must have been trained against `student`.
pub fn load_encoder(path: &Path, student: &Net) -> Result<Net> {
    let (enc, meta) = load_role(path, Role::Amortiser)?;
    let info = meta
        .amortiser
        .as_ref()
        .with_context(|| format!("{} is not an amortised encoder checkpoint", path.display()))?;
    if info.student_weights != weights_sha256(student) {
        bail!(
            "{} was trained against another student (weights differ)",
            path.display()
        );
    }
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_masks_cover_the_three_tasks() {
        tch::manual_seed(3);
        let like = Tensor::zeros([600, 2, 16, 16], (Kind::Float, tch::Device::Cpu));
        let pde = Pde::parse("darcy").unwrap();
        let tasks = family_masks(&pde, Grid::new(16).unwrap(), tch::Device::Cpu);
        let m = task_masks(&like, &tasks, [1.0; 3]);
        let per = m.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let v = Vec::<f32>::try_from(per.reshape([-1])).unwrap();
        let (mut fwd, mut inv, mut sparse) = (0, 0, 0);
        for s in v.chunks(2) {
            match (s[0], s[1]) {
                (a, u) if a == 1.0 && u == 0.0 => fwd += 1,
                (a, u) if a == 0.0 && u == 1.0 => inv += 1,
                (a, u) => {
                    assert!(a <= 0.2 && u <= 0.2, "sparse mask too dense: {a} {u}");
                    sparse += 1
                }
            }
        }
        for (name, k) in [("forward", fwd), ("inverse", inv), ("sparse", sparse)] {
            assert!((150..250).contains(&k), "{name}: {k} of 600");
        }
        // uneven shares: none forward, three quarters inverse
        let m = task_masks(&like, &tasks, [0.0, 3.0, 1.0]);
        let per = m.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let v = Vec::<f32>::try_from(per.reshape([-1])).unwrap();
        let inv = v.chunks(2).filter(|s| s[0] == 0.0 && s[1] == 1.0).count();
        let fwd = v.chunks(2).filter(|s| s[0] == 1.0 && s[1] == 0.0).count();
        assert_eq!(fwd, 0, "forward drawn at share 0");
        assert!(
            (410..490).contains(&inv),
            "inverse: {inv} of 600 at share 3/4"
        );
    }

    /// The noise lands on the sparse observations only, at a std that matches uniform draws up to
    /// the level times each channel's scale: E[sigma^2] = level^2 / 3.
    #[test]
    fn sensor_noise_is_on_sparse_observations_at_its_level() {
        tch::manual_seed(5);
        let (b, n) = (4000i64, 8i64);
        let opts = (Kind::Float, tch::Device::Cpu);
        let truth = Tensor::zeros([b, 2, n, n], opts);
        // the first half of the batch dense (one whole channel), the rest sparse (4 of 128 values)
        let dense = Tensor::cat(
            &[
                Tensor::ones([1, 1, n, n], opts),
                Tensor::zeros([1, 1, n, n], opts),
            ],
            1,
        );
        let sparse = Tensor::zeros([1, 2, n, n], opts);
        let _ = sparse
            .narrow(1, 1, 1)
            .narrow(2, 0, 1)
            .narrow(3, 0, 4)
            .fill_(1.0);
        let mask = Tensor::cat(
            &[
                dense.expand([b / 2, 2, n, n], false),
                sparse.expand([b / 2, 2, n, n], false),
            ],
            0,
        );
        let norm = Normalisation {
            mean: vec![0.0, 0.0],
            scale: vec![1.0, 3.0],
        };
        let e = sensor_noise(&truth, &mask, &norm, 0.3);
        assert_eq!(
            f64::try_from(e.narrow(0, 0, b / 2).abs().max()).unwrap(),
            0.0
        );
        let off = &e * (Tensor::ones_like(&mask) - &mask);
        assert_eq!(f64::try_from(off.abs().max()).unwrap(), 0.0);
        let on = e
            .narrow(0, b / 2, b / 2)
            .narrow(1, 1, 1)
            .narrow(2, 0, 1)
            .narrow(3, 0, 4);
        let var = f64::try_from(on.square().mean(Kind::Double)).unwrap();
        let want = 9.0 * 0.3f64.powi(2) / 3.0;
        assert!((var / want - 1.0).abs() < 0.05, "{var} against {want}");
    }

    #[test]
    fn crps_of_two_equal_answers_is_their_absolute_error() {
        let y = Tensor::from_slice(&[0.0f32, 1.0]).reshape([1, 1, 1, 2]);
        let a = Tensor::from_slice(&[0.5f32, 1.0]).reshape([1, 1, 1, 2]);
        let c = crps2(&a, &a, &y);
        assert!((f64::try_from(c).unwrap() - 0.25).abs() < 1e-7);
        // answers either side of the truth score less than both on one side at the same distance
        let lo = Tensor::from_slice(&[-0.5f32, 1.0]).reshape([1, 1, 1, 2]);
        let spread = f64::try_from(crps2(&a, &lo, &y)).unwrap();
        assert!(spread < 0.25, "{spread}");
    }
}
