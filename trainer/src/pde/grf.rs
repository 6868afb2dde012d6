//! Gaussian random fields with covariance (-Laplacian + tau^2)^(-alpha) on the periodic unit square,
//! sampled spectrally (the GaussianRF of the FNO / DiffusionPDE data sets).

use rand::Rng;
use rand_distr::StandardNormal;
use rustfft::{num_complex::Complex, FftPlanner};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrfParams {
    pub alpha: f64,
    pub tau: f64,
}

/// Integer wavenumber of FFT index `i` on `n` points: 0, 1, ..., n/2 - 1, -n/2, ..., -1.
pub fn wavenumber(i: usize, n: usize) -> f64 {
    if i < n.div_ceil(2) {
        i as f64
    } else {
        i as f64 - n as f64
    }
}

impl GrfParams {
    /// Spectral amplitude of mode (kx, ky): the square root of the covariance's eigenvalue,
    /// scaled as GaussianRF does (the mean mode is zero).
    pub fn sqrt_eig(&self, kx: f64, ky: f64, n: usize) -> f64 {
        if kx == 0.0 && ky == 0.0 {
            return 0.0;
        }
        let sigma = self.tau.powf(0.5 * (2.0 * self.alpha - 2.0));
        let lam = 4.0 * std::f64::consts::PI.powi(2) * (kx * kx + ky * ky) + self.tau * self.tau;
        (n * n) as f64 * std::f64::consts::SQRT_2 * sigma * lam.powf(-self.alpha / 2.0)
    }
}

/// The 2-D transform of `c` (n x n, row-major) in place with a 1-D plan of length n: rows, then
/// columns (unnormalised, as the plan's direction).
pub fn fft2(plan: &dyn rustfft::Fft<f64>, c: &mut [Complex<f64>], n: usize) {
    for row in c.chunks_mut(n) {
        plan.process(row);
    }
    let mut col = vec![Complex::new(0.0, 0.0); n];
    for i in 0..n {
        for j in 0..n {
            col[j] = c[j * n + i];
        }
        plan.process(&mut col);
        for j in 0..n {
            c[j * n + i] = col[j];
        }
    }
}

/// Draws GRF samples of one size; the FFT plan is made once.
pub struct GrfSampler {
    params: GrfParams,
    n: usize,
    amp: Vec<f64>,
    fft: std::sync::Arc<dyn rustfft::Fft<f64>>,
}

impl GrfSampler {
    pub fn new(params: GrfParams, n: usize) -> Self {
        let mut amp = vec![0.0; n * n];
        for j in 0..n {
            for i in 0..n {
                amp[j * n + i] = params.sqrt_eig(wavenumber(i, n), wavenumber(j, n), n);
            }
        }
        let fft = FftPlanner::new().plan_fft_inverse(n);
        GrfSampler {
            params,
            n,
            amp,
            fft,
        }
    }

    pub fn params(&self) -> GrfParams {
        self.params
    }

    /// One sample, row-major `[y][x]`, `n * n` values.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Vec<f64> {
        let n = self.n;
        let mut c: Vec<Complex<f64>> = self
            .amp
            .iter()
            .map(|&s| {
                let re: f64 = rng.sample(StandardNormal);
                let im: f64 = rng.sample(StandardNormal);
                Complex::new(re * s, im * s)
            })
            .collect();
        // 2-D inverse FFT, normalised by 1 / n^2 as numpy's ifftn.
        fft2(self.fft.as_ref(), &mut c, n);
        let norm = 1.0 / (n * n) as f64;
        c.iter().map(|z| z.re * norm).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The sampled power spectrum decays like (4 pi^2 |k|^2 + tau^2)^(-alpha): fit the log-log slope.
    #[test]
    fn spectrum_follows_alpha() {
        for &alpha in &[2.0, 3.0] {
            let n = 32;
            let s = GrfSampler::new(GrfParams { alpha, tau: 3.0 }, n);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let mut power = vec![0.0; n * n];
            let m = 400;
            let fwd = FftPlanner::new().plan_fft_forward(n);
            for _ in 0..m {
                let g = s.sample(&mut rng);
                let mut c: Vec<Complex<f64>> = g.iter().map(|&v| Complex::new(v, 0.0)).collect();
                fft2(fwd.as_ref(), &mut c, n);
                for (p, z) in power.iter_mut().zip(&c) {
                    *p += z.norm_sqr() / m as f64;
                }
            }
            // Least squares of ln P against ln(lambda) over modes 1 <= |k| <= 8.
            let (mut sx, mut sy, mut sxx, mut sxy, mut cnt) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for j in 0..n {
                for i in 0..n {
                    let (kx, ky) = (wavenumber(i, n), wavenumber(j, n));
                    let k2 = kx * kx + ky * ky;
                    if !(1.0..=64.0).contains(&k2) {
                        continue;
                    }
                    let lam: f64 = 4.0 * std::f64::consts::PI.powi(2) * k2 + 9.0;
                    let (x, y) = (lam.ln(), power[j * n + i].ln());
                    sx += x;
                    sy += y;
                    sxx += x * x;
                    sxy += x * y;
                    cnt += 1.0;
                }
            }
            let slope = (cnt * sxy - sx * sy) / (cnt * sxx - sx * sx);
            assert!(
                (slope + alpha).abs() < 0.05 * alpha,
                "alpha {alpha}: fitted slope {slope}"
            );
        }
    }

    #[test]
    fn mean_mode_is_zero_and_seeded() {
        let s = GrfSampler::new(
            GrfParams {
                alpha: 2.0,
                tau: 3.0,
            },
            16,
        );
        let a = s.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let b = s.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, b);
        let mean: f64 = a.iter().sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 1e-12, "mean {mean}");
    }
}
