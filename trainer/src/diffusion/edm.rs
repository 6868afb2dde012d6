//! EDM (Karras et al. 2022): preconditioning, the denoising loss and the noise schedule, and the
//! one-step student d(eps) = D(sigma_max eps; sigma_max) that PIDDM distils from it.

use crate::data::SIGMA_DATA;
use crate::nets::{NetOps, UNet, Unary};
use crate::pde::ops::Tch;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edm {
    pub sigma_data: f64,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub p_mean: f64,
    pub p_std: f64,
}

impl Default for Edm {
    fn default() -> Self {
        Edm {
            sigma_data: SIGMA_DATA,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            p_mean: -1.2,
            p_std: 1.2,
        }
    }
}

impl Edm {
    /// D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) on any backend, sigma of shape [B]:
    /// c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2),
    /// c_noise = ln(s) / 4.
    pub fn precondition<B: NetOps>(&self, b: &mut B, net: &UNet, x: &B::V, sigma: &B::V) -> B::V {
        let sd2 = self.sigma_data * self.sigma_data;
        let s = b.reshape(sigma, &[-1, 1, 1, 1]);
        let s2 = b.unary(&s, Unary::Square);
        let s2sd2 = b.affine(&s2, 1.0, sd2);
        let c_in = b.unary(&s2sd2, Unary::Rsqrt);
        let c_skip = b.unary(&s2sd2, Unary::Reciprocal);
        let c_skip = b.affine(&c_skip, sd2, 0.0);
        let c_out = b.mul(&s, &c_in);
        let c_out = b.affine(&c_out, self.sigma_data, 0.0);
        let c_noise = b.unary(sigma, Unary::Log);
        let c_noise = b.affine(&c_noise, 0.25, 0.0);
        let x_in = b.mul(x, &c_in);
        let f = net.apply(b, &x_in, &c_noise);
        let skip = b.mul(&c_skip, x);
        let out = b.mul(&c_out, &f);
        b.add(&skip, &out)
    }

    /// [`Edm::precondition`] on tch tensors.
    pub fn denoise(&self, net: &UNet, x: &Tensor, sigma: &Tensor) -> Tensor {
        self.precondition(&mut Tch, net, x, &sigma.to_kind(Kind::Float))
    }

    /// The EDM training loss on clean normalised data x0, averaged over the batch.
    pub fn loss(&self, net: &UNet, x0: &Tensor) -> Tensor {
        self.loss_and_estimate(net, x0).0
    }

    /// The EDM training loss and the clean estimates D(x0 + sigma n; sigma) it compared with x0
    /// (normalised units), for losses that add a term on the estimate (PIDM).
    pub fn loss_and_estimate(&self, net: &UNet, x0: &Tensor) -> (Tensor, Tensor) {
        let b = x0.size()[0];
        let ln_sigma = Tensor::randn([b], (Kind::Float, x0.device())) * self.p_std + self.p_mean;
        let sigma = ln_sigma.exp();
        let s = sigma.reshape([-1, 1, 1, 1]);
        let sd2 = self.sigma_data * self.sigma_data;
        let weight = (s.square() + sd2) / (s.square() * sd2);
        let noisy = x0 + x0.randn_like() * &s;
        let d = self.denoise(net, &noisy, &sigma);
        ((weight * (&d - x0).square()).mean(Kind::Float), d)
    }

    /// Noise levels t_0 = sigma_max > ... > t_{N-1} = sigma_min, then t_N = 0.
    pub fn time_steps(&self, n: usize) -> Vec<f64> {
        let (a, b) = (
            self.sigma_max.powf(1.0 / self.rho),
            self.sigma_min.powf(1.0 / self.rho),
        );
        let mut t: Vec<f64> = (0..n)
            .map(|i| {
                let f = if n > 1 {
                    i as f64 / (n - 1) as f64
                } else {
                    0.0
                };
                (a + f * (b - a)).powf(self.rho)
            })
            .collect();
        t.push(0.0);
        t
    }

    /// Network evaluations of an N-step Heun solve: 2N - 1 (no correction on the last step).
    pub fn heun_nfe(steps: usize) -> usize {
        2 * steps - 1
    }
}

/// The student d(eps) = D(sigma_max eps; sigma_max) in normalised units, from standard normal eps
/// [B, C, H, W], on any backend (tch in training, ONNX nodes in the export).
pub fn student<B: NetOps>(b: &mut B, edm: &Edm, net: &UNet, eps: &B::V) -> B::V {
    let sigma = Tensor::from_slice(&[edm.sigma_max as f32]).to_device(net.device());
    let sigma = b.constant(&sigma);
    let x = b.affine(eps, edm.sigma_max, 0.0);
    edm.precondition(b, net, &x, &sigma)
}

/// [`student`] on tch tensors.
pub fn one_step(edm: &Edm, net: &UNet, eps: &Tensor) -> Tensor {
    student(&mut Tch, edm, net, eps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ends() {
        let e = Edm::default();
        let t = e.time_steps(18);
        assert_eq!(t.len(), 19);
        assert!((t[0] - 80.0).abs() < 1e-9 && (t[17] - 0.002).abs() < 1e-12 && t[18] == 0.0);
        assert!(t.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(Edm::heun_nfe(18), 35);
    }
}
