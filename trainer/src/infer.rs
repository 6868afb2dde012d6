//! Inference with a one-step student: PIDDM-1, and the optimisation of eps that serves PIDDM-ref,
//! forward, inverse and reconstruction problems alike (they differ only in the mask):
//!   x_mix = x' * M + d(eps) * (1 - M)
//!   L(eps) = mean over C, H, W of (M * (d(eps) - x'))^2   (normalised units)
//!          + lambda_infer * mean over the interior of R(x_mix)^2   (physical units)
//! per sample; Adam on eps. With M = 0 everywhere this is PIDDM-ref.

use crate::config::InferConfig;
use crate::dataset::Normalisation;
use crate::edm::Edm;
use crate::ops::{FieldOps, Tch};
use crate::residual::ResidualOp;
use crate::student::one_step;
use crate::train::{CheckpointMeta, Net};
use crate::unet::UNet;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// The inference loss, once for tch and for the exported refine graph: per-sample L [B] and x_mix,
/// from the student's normalised output `d`, observations (physical), mask and lambda_infer.
pub fn emit_loss<O: FieldOps>(
    o: &mut O,
    op: &ResidualOp,
    norm: &Normalisation,
    d: &O::V,
    observed: &O::V,
    mask: &O::V,
    lambda: &O::V,
) -> (O::V, O::V) {
    let t = emit_terms(o, op, norm, d, observed, mask);
    let weighted = o.mul(lambda, &t.residual);
    (o.add(&t.misfit, &weighted), t.x_mix)
}

/// The two terms of the loss, each per sample [B], and x_mix (physical): what the solve weighs
/// with (1, lambda_infer) and DiffusionPDE's guidance with (zeta_obs, zeta_pde).
pub struct Terms<V> {
    /// Mean over C, H, W of (M * (d - x'))^2, normalised units.
    pub misfit: V,
    /// Mean of R(x_mix)^2 where the PDE holds, physical units.
    pub residual: V,
    pub x_mix: V,
}

/// [`Terms`] of a normalised clean estimate `d` against observations (physical) under `mask`.
pub fn emit_terms<O: FieldOps>(
    o: &mut O,
    op: &ResidualOp,
    norm: &Normalisation,
    d: &O::V,
    observed: &O::V,
    mask: &O::V,
) -> Terms<O::V> {
    let (inv, shift) = norm.normalising_affine();
    let obs_n = o.affine_channels(observed, &inv, &shift);
    let diff = o.sub(d, &obs_n);
    let md = o.mul(mask, &diff);
    let md2 = o.mul(&md, &md);
    let misfit = o.mean_chw(&md2);
    let phys = o.affine_channels(d, &norm.scale, &norm.mean);
    let keep = o.affine(mask, -1.0, 1.0);
    let seen = o.mul(observed, mask);
    let free = o.mul(&phys, &keep);
    let x_mix = o.add(&seen, &free);
    let residual = op.emit_mse(o, &x_mix);
    Terms {
        misfit,
        residual,
        x_mix,
    }
}

/// A student with what it needs to speak physical units.
pub struct Student<'a> {
    pub net: &'a UNet,
    pub edm: Edm,
    pub norm: &'a Normalisation,
    pub op: ResidualOp,
}

pub struct SolveResult {
    /// x_mix in physical units.
    pub x: Tensor,
    /// The optimised eps.
    pub eps: Tensor,
    /// Mean loss over the batch after each step (first entry: before any step).
    pub history: Vec<f64>,
}

impl<'a> Student<'a> {
    /// The student of a loaded checkpoint.
    pub fn of(net: &'a Net, meta: &'a CheckpointMeta) -> Self {
        Student {
            net: &net.net,
            edm: meta.edm,
            norm: &meta.data.normalisation,
            op: meta.data.residual_op(),
        }
    }

    /// PIDDM-1: physical fields from eps in one network evaluation.
    pub fn generate(&self, eps: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.norm.to_physical(&one_step(&self.edm, self.net, eps))
    }

    /// Per-sample loss [B] and x_mix (physical) for eps, observations x' (physical) and mask M.
    pub fn loss(
        &self,
        eps: &Tensor,
        observed: &Tensor,
        mask: &Tensor,
        lambda: f64,
    ) -> (Tensor, Tensor) {
        let d = one_step(&self.edm, self.net, eps);
        let lambda = Tensor::from(lambda).to_kind(d.kind()).to_device(d.device());
        emit_loss(&mut Tch, &self.op, self.norm, &d, observed, mask, &lambda)
    }

    /// Optimises eps from `eps0` on L (`cfg.steps` steps of `cfg.optimizer`, learning rate
    /// `cfg.lr`): the runtime's optimiser code (`piddm::optim`), with loss and gradient from tch.
    pub fn solve(
        &self,
        eps0: &Tensor,
        observed: &Tensor,
        mask: &Tensor,
        cfg: &InferConfig,
    ) -> Result<SolveResult> {
        if eps0.size() != observed.size() || mask.size() != observed.size() {
            bail!(
                "eps {:?}, observations {:?} and mask {:?} must have one shape",
                eps0.size(),
                observed.size(),
                mask.size()
            );
        }
        let observed = observed.where_self(&mask.gt(0.5), &observed.zeros_like());
        let shape = eps0.size();
        let n = (eps0.numel() / shape[0].max(1) as usize).max(1);
        let (dev, kind) = (eps0.device(), eps0.kind());
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).reshape([-1]));
        let done = piddm::optim::minimise(
            cfg.optimizer,
            flat(eps0)?,
            n,
            cfg.steps,
            cfg.lr,
            |x: &[f32]| -> Result<piddm::optim::Eval> {
                let e = Tensor::from_slice(x)
                    .reshape(shape.as_slice())
                    .to_kind(kind)
                    .to_device(dev)
                    .set_requires_grad(true);
                let (loss, x_mix) = self.loss(&e, &observed, mask, cfg.lambda);
                let g =
                    Tensor::run_backward(&[&loss.sum(Kind::Float)], &[&e], false, false).remove(0);
                Ok(piddm::optim::Eval {
                    loss: Vec::<f64>::try_from(loss.detach().to_kind(Kind::Double))?,
                    grad: flat(&g)?,
                    extra: flat(&x_mix)?,
                })
            },
        )?;
        let back = |v: &[f32]| {
            Tensor::from_slice(v)
                .reshape(shape.as_slice())
                .to_kind(kind)
                .to_device(dev)
        };
        Ok(SolveResult {
            x: back(&done.extra),
            eps: back(&done.x),
            history: done.history,
        })
    }

    /// PIDDM-ref: a few steps lowering lambda * ||R(d(eps))||^2 alone.
    pub fn refine(&self, eps0: &Tensor, cfg: &InferConfig) -> Result<SolveResult> {
        let zeros = eps0.zeros_like();
        self.solve(eps0, &zeros, &zeros, cfg)
    }
}
