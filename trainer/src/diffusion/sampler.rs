//! The teacher's sampler as one stepper with guidance hooks, what the diffusion baselines differ by:
//! - none: EDM's Heun solve of the probability-flow ODE (Karras et al. 2022, Algorithm 1);
//! - gradient guidance (DiffusionPDE, Huang et al. 2024): after each Heun step from x_i, subtract
//!   the gradient with respect to x_i of zeta_obs * misfit(D(x_i)) + zeta_pde * residual(D(x_i)),
//!   the two terms of the solve's loss ([`crate::physics::objective::emit_terms`]) through the
//!   denoiser;
//! - correction (ECI-sampling, Cheng et al. 2024): the clean estimate D(x_i) has its observed entries
//!   and the values the PDE fixes replaced, then is re-noised to the next level along the noise the
//!   estimate implies (first order, one network evaluation a step).
//!
//! All work in normalised units; observations are physical, as everywhere else.

use super::edm::Edm;
use crate::data::Normalisation;
use crate::nets::UNet;
use crate::pde::ops::Tch;
use crate::physics::objective::emit_terms;
use crate::physics::ResidualOp;
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// DiffusionPDE's guidance: observations x' (physical) under mask M, and the two weights.
pub struct Gradient<'a> {
    pub op: ResidualOp,
    pub norm: &'a Normalisation,
    pub observed: Tensor,
    pub mask: Tensor,
    pub zeta_obs: f64,
    pub zeta_pde: f64,
}

impl Gradient<'_> {
    /// The guidance loss of clean estimates `d` (normalised), summed over the batch so that each
    /// sample's gradient is its own.
    pub fn loss(&self, d: &Tensor) -> Tensor {
        let t = emit_terms(&mut Tch, &self.op, self.norm, d, &self.observed, &self.mask);
        (t.misfit * self.zeta_obs + t.residual * self.zeta_pde).sum(Kind::Float)
    }
}

/// ECI's correction: where `fixed` (observed, or fixed by the PDE) the clean estimate takes
/// `target` (normalised units).
pub struct Correction {
    fixed: Tensor,
    target: Tensor,
}

impl Correction {
    /// Observations `observed` (physical) under `mask`, and the points the PDE fixes at zero
    /// (`fixed_zero`, one sample's [C, H, W] flattened, broadcast over the batch).
    pub fn new(
        norm: &Normalisation,
        observed: &Tensor,
        mask: &Tensor,
        fixed_zero: &[f32],
    ) -> Result<Self> {
        let size = observed.size();
        if mask.size() != size || size.len() != 4 {
            bail!(
                "observations {size:?} and mask {:?} must be one [B, C, H, W] shape",
                mask.size()
            );
        }
        let plane: i64 = size[1..].iter().product();
        if fixed_zero.len() as i64 != plane {
            bail!(
                "fixed points cover {} values, a sample has {plane}",
                fixed_zero.len()
            );
        }
        let dev = observed.device();
        let zero = Tensor::from_slice(fixed_zero)
            .reshape(&size[1..])
            .unsqueeze(0)
            .to_device(dev)
            .gt(0.5);
        let seen = mask.gt(0.5);
        // Observations win over the PDE's values where both apply.
        let physical = observed.where_self(&seen, &observed.zeros_like());
        let target = norm.to_normalised(&physical.to_kind(Kind::Float));
        Ok(Correction {
            fixed: seen.logical_or(&zero),
            target,
        })
    }

    /// The corrected clean estimate: `target` where fixed, `d` elsewhere (exactly).
    pub fn apply(&self, d: &Tensor) -> Tensor {
        self.target.where_self(&self.fixed, d)
    }
}

/// What a step does besides the probability-flow ODE.
pub enum Hook<'a> {
    None,
    Gradient(Gradient<'a>),
    Correction(Correction),
}

/// Which hook a sampler runs, for what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    None,
    Gradient,
    Correction,
}

impl HookKind {
    /// Network evaluations per sample of a solve with `steps` steps; a backward pass counts as one.
    pub fn nfe(self, steps: usize) -> usize {
        match self {
            HookKind::None => Edm::heun_nfe(steps),
            HookKind::Gradient => Edm::heun_nfe(steps) + steps,
            HookKind::Correction => steps,
        }
    }
}

impl Hook<'_> {
    pub fn kind(&self) -> HookKind {
        match self {
            Hook::None => HookKind::None,
            Hook::Gradient(_) => HookKind::Gradient,
            Hook::Correction(_) => HookKind::Correction,
        }
    }

    pub fn nfe(&self, steps: usize) -> usize {
        self.kind().nfe(steps)
    }
}

/// The teacher's deterministic probability-flow ODE from x_T = sigma_max * eps to x_0 in `steps`
/// Heun steps (EDM Algorithm 1, S_churn = 0), normalised units.
pub fn heun_sample(edm: &Edm, net: &UNet, eps: &Tensor, steps: usize) -> Tensor {
    sample(edm, net, eps, steps, &Hook::None)
}

/// Samples from x_T = sigma_max * eps in `steps` steps of the noise schedule, with `hook`.
/// Returns normalised fields.
pub fn sample(edm: &Edm, net: &UNet, eps: &Tensor, steps: usize, hook: &Hook) -> Tensor {
    let _guard = tch::no_grad_guard();
    let t = edm.time_steps(steps);
    let b = eps.size()[0];
    let dev = eps.device();
    let sig = |v: f64| Tensor::full([b], v, (Kind::Float, dev));
    let mut x = eps * t[0];
    for i in 0..steps {
        let (tc, tn) = (t[i], t[i + 1]);
        // The clean estimate at x_i, and the guidance gradient with respect to x_i.
        let (den, grad) = match hook {
            Hook::Gradient(g) => tch::with_grad(|| {
                let xi = x.detach().set_requires_grad(true);
                let den = edm.denoise(net, &xi, &sig(tc));
                let loss = g.loss(&den);
                let grad = Tensor::run_backward(&[&loss], &[&xi], false, false).remove(0);
                (den.detach(), Some(grad))
            }),
            _ => (edm.denoise(net, &x, &sig(tc)), None),
        };
        x = match hook {
            // ECI: the corrected estimate, re-noised to tn along (x_i - D(x_i)) / t_i.
            Hook::Correction(c) => c.apply(&den) + (&x - &den) * (tn / tc),
            _ => {
                let d = (&x - den) / tc;
                let xn = &x + &d * (tn - tc);
                let xn = if tn > 0.0 {
                    let d2 = (&xn - edm.denoise(net, &xn, &sig(tn))) / tn;
                    &x + (d + d2) * (0.5 * (tn - tc))
                } else {
                    xn
                };
                match grad {
                    Some(g) => xn - g,
                    None => xn,
                }
            }
        };
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tensor::to_f32;

    #[test]
    fn correction_imposes_observations_and_fixed_values_exactly() {
        let norm = Normalisation {
            mean: vec![0.3, -0.1],
            scale: vec![0.7, 0.013],
        };
        let observed = Tensor::randn([2, 2, 4, 4], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::rand([2, 2, 4, 4], (Kind::Float, tch::Device::Cpu))
            .gt(0.6)
            .to_kind(Kind::Float);
        let mut fixed = vec![0.0f32; 32];
        fixed[16..20].fill(1.0);
        let c = Correction::new(&norm, &observed, &mask, &fixed).unwrap();
        let d = Tensor::randn([2, 2, 4, 4], (Kind::Float, tch::Device::Cpu));
        let out = c.apply(&d);
        let target = norm.to_normalised(&observed);
        let zero = norm.to_normalised(&observed.zeros_like());
        let (o, t, z, dv, m) = (
            to_f32(&out),
            to_f32(&target),
            to_f32(&zero),
            to_f32(&d),
            to_f32(&mask),
        );
        for i in 0..o.len() {
            let want = if m[i] > 0.5 {
                t[i]
            } else if fixed[i % 32] > 0.5 {
                z[i]
            } else {
                dv[i]
            };
            assert_eq!(o[i].to_bits(), want.to_bits(), "entry {i}");
        }
        assert!(Correction::new(&norm, &observed, &mask, &fixed[..8]).is_err());
    }
}
