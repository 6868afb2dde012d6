//! The solve with a one-step student: PIDDM-1, and the optimisation of eps that serves PIDDM-ref,
//! forward, inverse and reconstruction problems alike (they differ only in the mask): the objective
//! of `physics::objective` (misfit + lambda_infer * residual of x_mix) per sample, minimised over
//! eps with the runtime's optimisers. With M = 0 everywhere this is PIDDM-ref.

use crate::checkpoint::{CheckpointMeta, Net};
use crate::config::InferConfig;
use crate::data::Normalisation;
use crate::diffusion::{edm::student, Edm};
use crate::nets::NetOps;
use crate::nets::UNet;
use crate::pde::ops::Tch;
use crate::physics::objective::{emit_loss, emit_terms_of, emit_x_mix};
use crate::physics::phases::emit_project;
use crate::physics::{recolour, translate};
use crate::physics::{Correction, ResidualOp};
use crate::util::tensor::to_f32;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// A student with what it needs to speak physical units.
pub struct Student<'a> {
    pub net: &'a UNet,
    pub edm: Edm,
    pub norm: &'a Normalisation,
    pub op: ResidualOp,
    /// The defect corrections its output goes through (`physics::correction`), if any.
    pub correction: Option<Correction>,
    /// Its samples' gains per Fourier mode (`physics::recolour`), if fitted.
    pub recolour: Option<Vec<f64>>,
}

pub struct SolveResult {
    /// The answer ([`Student::emit_answer`]) in physical units.
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
            // `load_role` refused a checkpoint whose corrections its family cannot make.
            correction: meta.student.as_ref().and_then(|s| {
                Correction::new(
                    meta.data.residual_op(),
                    &meta.data.normalisation,
                    s.corrections,
                )
                .ok()
                .flatten()
            }),
            recolour: meta.student.as_ref().and_then(|s| s.recolour.clone()),
        }
    }

    /// d(eps) in normalised units, on any backend: the network at sigma_max
    /// (`diffusion::edm::student`), then its defect corrections.
    pub fn emit_one_step<B: NetOps>(&self, b: &mut B, eps: &B::V) -> B::V {
        let d = student(b, &self.edm, self.net, eps);
        match &self.correction {
            Some(c) => c.emit(b, &d),
            None => d,
        }
    }

    /// [`Student::emit_one_step`] on tch tensors.
    pub fn one_step(&self, eps: &Tensor) -> Tensor {
        self.emit_one_step(&mut Tch, eps)
    }

    /// The one-step output in physical units, without a graph: the fields the solve scores at
    /// `eps` (a sample, [`Student::generate`], may be recoloured, projected or moved from it).
    pub fn one_step_physical(&self, eps: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.norm.to_physical(&self.one_step(eps))
    }

    /// A one-step sample in normalised units, on any backend: [`Student::emit_one_step`], except
    /// that fitted gains recolour its levels (`physics::recolour`), a family invariant under a
    /// translation moves each sample by a random multiple of it (`physics::translate`) and, with
    /// corrections, a two-phase coefficient is projected onto its phases (`physics::phases`), all
    /// before the corrections, so u is corrected (or the levels re-marched) against the result. What
    /// `generate` and the exported generate graph give; the solve keeps `emit_one_step`, whose a
    /// has a gradient.
    pub fn emit_sample<B: NetOps>(&self, b: &mut B, eps: &B::V) -> B::V {
        let d = student(b, &self.edm, self.net, eps);
        let along = recolour::Along::of(&self.op.pde, self.op.grid);
        let d = match (&self.recolour, along) {
            (Some(g), Some(along)) => recolour::emit(b, self.norm, along, g, &d),
            _ => d,
        };
        let d = match self.op.pde.family().translation() {
            Some(t) => translate::emit(b, t, eps, &d),
            None => d,
        };
        let Some(c) = &self.correction else {
            return d;
        };
        let d = match self.op.pde.family().phases() {
            Some(p) => emit_project(b, self.norm, p, &d),
            None => d,
        };
        c.emit(b, &d)
    }

    /// The answer (physical) of the student's output `d` to observations (physical) under `mask`:
    /// x_mix, the observations where observed and d elsewhere; with corrections, settled against
    /// the observations through the PDE ([`Correction::settle`]: a forward problem of Poisson or
    /// Helmholtz is answered by the solve of the given source, an inverse one by the source that
    /// balances the given u where the PDE holds).
    pub fn emit_answer<B: NetOps>(
        &self,
        b: &mut B,
        d: &B::V,
        observed: &B::V,
        mask: &B::V,
    ) -> B::V {
        let phys = self.norm.emit_physical(b, d);
        let x = emit_x_mix(b, &phys, observed, mask);
        match &self.correction {
            Some(c) => c.settle(b, &x, observed, mask),
            None => x,
        }
    }

    /// Per-sample loss [B] of `physics::objective` and the answer (physical) for the student's
    /// output `d`, on any backend.
    pub fn emit_loss<B: NetOps>(
        &self,
        b: &mut B,
        d: &B::V,
        observed: &B::V,
        mask: &B::V,
        lambda: &B::V,
    ) -> (B::V, B::V) {
        let x = self.emit_answer(b, d, observed, mask);
        let t = emit_terms_of(b, &self.op, self.norm, d, observed, mask, x);
        emit_loss(b, t, lambda)
    }

    /// PIDDM-1: physical fields from eps in one network evaluation ([`Student::emit_sample`]).
    pub fn generate(&self, eps: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.norm.to_physical(&self.emit_sample(&mut Tch, eps))
    }

    /// Per-sample loss [B] and the answer (physical) for eps, observations x' (physical) and
    /// mask M.
    pub fn loss(
        &self,
        eps: &Tensor,
        observed: &Tensor,
        mask: &Tensor,
        lambda: f64,
    ) -> (Tensor, Tensor) {
        let d = self.one_step(eps);
        let lambda = Tensor::from(lambda).to_kind(d.kind()).to_device(d.device());
        self.emit_loss(&mut Tch, &d, observed, mask, &lambda)
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
        let done = piddm::optim::minimise(
            cfg.optimizer,
            to_f32(eps0),
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
                    grad: to_f32(&g),
                    extra: to_f32(&x_mix),
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
