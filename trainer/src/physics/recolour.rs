//! A first level's spectrum brought to the data's. Where a family's levels are time levels of a
//! periodic field (Burgers: rows, periodic in x; Navier-Stokes: channels, each a periodic plane),
//! the data's first level is a stationary Gaussian field whose power per Fourier mode the one-step
//! network under-produces at the fine scales (Burgers: modes 3 to 5 at 1/2 to 1/6 of the data's
//! power) and at the first (70 %), so the samples' pointwise spread is narrow from t = 0 on and the
//! march carries it. A gain per mode, sqrt(data's power / samples' power), fitted once on the
//! student's samples (`stages::student::recolour`), applied to every level before the march (which
//! re-solves the later levels from the first), restores the second moments the SMSE counts. The
//! gains are the n / 2 + 1 modes of a row (along x) or the n x n modes of a plane. Only samples:
//! the solve's answers are untouched.

use crate::data::Normalisation;
use crate::pde::ops::FieldOps;
use anyhow::{bail, Result};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The real circulant n x n (row-major) that multiplies Fourier mode k of a periodic row by
/// `gains[min(k, n - k)]` (`gains`: the n / 2 + 1 modes of a real row).
pub fn circulant(gains: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(gains.len(), n / 2 + 1, "one gain per mode of a real row");
    let g = |k: usize| gains[k.min(n - k)];
    // m[i][j] = (1 / n) sum_k g(k) cos(2 pi k (i - j) / n): a function of (i - j) mod n
    let column: Vec<f64> = (0..n)
        .map(|d| {
            (0..n)
                .map(|k| g(k) * (2.0 * PI * (k * d) as f64 / n as f64).cos())
                .sum::<f64>()
                / n as f64
        })
        .collect();
    (0..n * n)
        .map(|p| column[(p / n + n - p % n) % n])
        .collect()
}

/// Where a family's levels are, so where its first level's spectrum lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Along {
    /// Levels are rows (axis 2) of a field periodic in x: the first level is row 0, a periodic row.
    Rows,
    /// Levels are channels of a field periodic in x and y: the first is channel 0, a periodic plane.
    Plane,
}

impl Along {
    /// The layout of a family's levels, if they are time levels of a periodic field.
    pub fn of(pde: &crate::pde::Pde, grid: crate::pde::Grid) -> Option<Along> {
        use crate::pde::Boundary::{Initial, Periodic};
        let boundary = pde.family().geometry(grid).boundary;
        match (pde.stepping(grid).map(|s| s.axis), boundary) {
            (Some(2), [Periodic, Initial]) => Some(Along::Rows),
            (Some(1), [Periodic, Periodic]) => Some(Along::Plane),
            _ => None,
        }
    }

    /// Mean power per mode of the first level of physical fields [N, C, T, n].
    pub fn power(self, fields: &Tensor) -> Result<Vec<f64>> {
        match self {
            Along::Rows => row_power(fields, 0),
            Along::Plane => plane_power(&fields.select(1, 0)),
        }
    }
}

/// Normalised fields `x` [B, C, n, n] with the gains applied to the physical field of every
/// channel: along x on every row (n / 2 + 1 gains) or on every plane (n x n gains, [ky][kx]).
pub fn emit<O: FieldOps>(
    o: &mut O,
    norm: &Normalisation,
    along: Along,
    gains: &[f64],
    x: &O::V,
) -> O::V {
    // the filter acts on the physical field: x_phys = scale x + mean, so
    // y = M x + (M - I) mean / scale, M's gain on a constant being g(0)
    let k: Vec<f64> = vec![1.0; norm.mean.len()];
    let b: Vec<f64> = norm
        .mean
        .iter()
        .zip(&norm.scale)
        .map(|(m, s)| (gains[0] - 1.0) * m / s)
        .collect();
    let y = match along {
        Along::Plane => emit_plane(o, gains, (gains.len() as f64).sqrt().round() as usize, x),
        Along::Rows => o.matmul_axis(x, 3, &circulant(gains, 2 * (gains.len() - 1))),
    };
    o.affine_channels(&y, &k, &b)
}

/// The n x n gains ([ky][kx]) on every plane by real DFT matrices along y and x: with C and S the
/// cosine and sine tables, X^ = (C - iS) X (C - iS)^T = A - iB, A = C X C^T - S X S^T,
/// B = S X C^T + C X S^T; with P = G A and Q = G B (G / n^2 pointwise), the inverse's real part
/// is C P C^T + S Q C^T - S P S^T + C Q S^T.
fn emit_plane<O: FieldOps>(o: &mut O, gains: &[f64], n: usize, x: &O::V) -> O::V {
    let table = |f: fn(f64) -> f64| -> Vec<f64> {
        (0..n * n)
            .map(|p| f(2.0 * PI * ((p / n) * (p % n)) as f64 / n as f64))
            .collect()
    };
    let (c, s) = (table(f64::cos), table(f64::sin));
    let g: Vec<f64> = gains.iter().map(|v| v / (n * n) as f64).collect();
    let zero = vec![0.0; n * n];
    let cx = o.matmul_axis(x, 2, &c);
    let sx = o.matmul_axis(x, 2, &s);
    let cxc = o.matmul_axis(&cx, 3, &c);
    let sxs = o.matmul_axis(&sx, 3, &s);
    let sxc = o.matmul_axis(&sx, 3, &c);
    let cxs = o.matmul_axis(&cx, 3, &s);
    let a = o.sub(&cxc, &sxs);
    let b = o.add(&sxc, &cxs);
    let p = o.affine_plane(&a, &g, &zero);
    let q = o.affine_plane(&b, &g, &zero);
    let cp = o.matmul_axis(&p, 2, &c);
    let sp = o.matmul_axis(&p, 2, &s);
    let cq = o.matmul_axis(&q, 2, &c);
    let sq = o.matmul_axis(&q, 2, &s);
    let cpc = o.matmul_axis(&cp, 3, &c);
    let sqc = o.matmul_axis(&sq, 3, &c);
    let sps = o.matmul_axis(&sp, 3, &s);
    let cqs = o.matmul_axis(&cq, 3, &s);
    let first = o.add(&cpc, &sqc);
    let second = o.sub(&cqs, &sps);
    o.add(&first, &second)
}

/// Mean power per mode ([ky][kx], n x n) of physical planes [N, n, n], by tch's FFT.
pub fn plane_power(planes: &Tensor) -> Result<Vec<f64>> {
    let x = planes.to_kind(Kind::Double);
    let spectrum = x.fft_fft2(None::<&[i64]>, [-2i64, -1].as_slice(), "backward");
    let power = spectrum.abs().square().mean_dim(0, false, Kind::Double);
    Ok(Vec::try_from(power.reshape([-1]))?)
}

/// Mean power per mode (the n / 2 + 1 modes of a real row) of row `row` of physical fields
/// [N, C, T, n], over samples and channels, by tch's FFT.
pub fn row_power(fields: &Tensor, row: i64) -> Result<Vec<f64>> {
    let x = fields.select(2, row).to_kind(Kind::Double);
    let spectrum = x.fft_rfft(None, -1, "backward");
    let power = spectrum.abs().square().reshape([-1, x.size()[2] / 2 + 1]);
    Ok(Vec::try_from(power.mean_dim(0, false, Kind::Double))?)
}

/// sqrt(want / have) per mode; 0 where the data have no power (to rounding: a mode the data's
/// first level does not carry, such as a zero mean).
pub fn gains(want: &[f64], have: &[f64]) -> Result<Vec<f64>> {
    if want.len() != have.len() || want.len() < 2 {
        bail!("the two spectra differ in length or have fewer than 2 modes");
    }
    let top = want.iter().cloned().fold(0.0, f64::max);
    want.iter()
        .zip(have)
        .enumerate()
        .map(|(k, (&w, &h))| {
            if w <= 1e-12 * top {
                Ok(0.0)
            } else if h > 0.0 && h.is_finite() && w.is_finite() {
                Ok((w / h).sqrt())
            } else {
                bail!("the samples have no power at mode {k}, the data {w:.3e}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pde::ops::Tch;

    /// The circulant against the filter done by hand: the row's DFT by explicit sums (and
    /// `row_power` against them), each mode times its gain, the inverse DFT by explicit sums.
    #[test]
    fn circulant_is_the_filter_by_explicit_dfts() {
        let n = 8;
        let gains = [0.0, 1.5, 0.5, 2.0, 0.25];
        let row: Vec<f64> = (0..n).map(|j| ((j * 7 + 3) % 5) as f64 - 1.7).collect();
        let (mut re, mut im) = (vec![0.0; n], vec![0.0; n]);
        let power = row_power(&Tensor::from_slice(&row).reshape([1, 1, 1, n as i64]), 0).unwrap();
        for k in 0..n {
            for (j, v) in row.iter().enumerate() {
                let a = 2.0 * PI * (k * j) as f64 / n as f64;
                re[k] += v * a.cos();
                im[k] -= v * a.sin();
            }
            // the FFT's power against the explicit sums
            if k <= n / 2 {
                let sums = re[k] * re[k] + im[k] * im[k];
                assert!((power[k] - sums).abs() < 1e-9 * (1.0 + sums), "mode {k}");
            }
            let g = gains[k.min(n - k)];
            re[k] *= g;
            im[k] *= g;
        }
        let want: Vec<f64> = (0..n)
            .map(|j| {
                (0..n)
                    .map(|k| {
                        let a = 2.0 * PI * (k * j) as f64 / n as f64;
                        re[k] * a.cos() - im[k] * a.sin()
                    })
                    .sum::<f64>()
                    / n as f64
            })
            .collect();
        let m = circulant(&gains, n);
        for i in 0..n {
            let got: f64 = (0..n).map(|j| m[i * n + j] * row[j]).sum();
            assert!((got - want[i]).abs() < 1e-12, "{i}: {got} vs {}", want[i]);
        }
    }

    /// emit works on the physical field: a constant physical row keeps its value times g(0), a
    /// pure mode is scaled by its gain, in normalised units with a mean and scale.
    #[test]
    fn emit_filters_the_physical_field_and_power_follows() {
        let n = 8i64;
        let norm = Normalisation {
            mean: vec![0.3],
            scale: vec![2.0],
        };
        let gains = [1.0, 3.0, 1.0, 1.0, 1.0];
        // physical u = 0.3 + cos(2 pi x) on two rows
        let phys: Vec<f64> = (0..2 * n)
            .map(|p| 0.3 + (2.0 * PI * (p % n) as f64 / n as f64).cos())
            .collect();
        let x = Tensor::from_slice(&phys).reshape([1, 1, 2, n]);
        let y = norm.to_physical(&emit(
            &mut Tch,
            &norm,
            Along::Rows,
            &gains,
            &norm.to_normalised(&x),
        ));
        let got: Vec<f64> = Vec::try_from(y.reshape([-1])).unwrap();
        for (p, g) in got.iter().enumerate() {
            let want = 0.3 + 3.0 * (2.0 * PI * (p as i64 % n) as f64 / n as f64).cos();
            assert!((g - want).abs() < 1e-12, "{p}: {g} vs {want}");
        }
        let before = row_power(&x, 0).unwrap();
        let after = row_power(&y, 0).unwrap();
        assert!((after[1] / before[1] - 9.0).abs() < 1e-9);
        assert!((after[0] - before[0]).abs() < 1e-9);
        let g = gains_of(&before, &after);
        assert!((g[1] - 3.0).abs() < 1e-9 && (g[0] - 1.0).abs() < 1e-9);
    }

    fn gains_of(have: &[f64], want: &[f64]) -> Vec<f64> {
        gains(want, have).unwrap()
    }

    /// The plane filter against one done by hand with explicit 2-D DFTs, and tch's FFT power
    /// against explicit sums.
    #[test]
    fn plane_filter_is_the_filter_by_explicit_dfts() {
        let n = 6usize;
        // symmetric gains g(ky, kx) = g(-ky, -kx), as a real field's power is
        let raw = |ky: usize, kx: usize| 0.5 + ((ky * ky + kx * kx) % 7) as f64 * 0.3;
        let gains: Vec<f64> = (0..n * n)
            .map(|p| {
                let (ky, kx) = (p / n, p % n);
                raw(ky, kx) + raw((n - ky) % n, (n - kx) % n)
            })
            .collect();
        let plane: Vec<f64> = (0..n * n).map(|p| ((p * 5 + 2) % 9) as f64 - 3.3).collect();
        let dft = |v: &[f64], sign: f64| -> (Vec<f64>, Vec<f64>) {
            let (mut re, mut im) = (vec![0.0; n * n], vec![0.0; n * n]);
            for k in 0..n * n {
                for (p, x) in v.iter().enumerate() {
                    let a =
                        sign * 2.0 * PI * ((k / n) * (p / n) + (k % n) * (p % n)) as f64 / n as f64;
                    re[k] += x * a.cos();
                    im[k] += x * a.sin();
                }
            }
            (re, im)
        };
        let (re, im) = dft(&plane, -1.0);
        // inverse of G X^: real part of sum_k G X^_k e^{+i...} / n^2
        let want: Vec<f64> = (0..n * n)
            .map(|p| {
                (0..n * n)
                    .map(|k| {
                        let a =
                            2.0 * PI * ((k / n) * (p / n) + (k % n) * (p % n)) as f64 / n as f64;
                        gains[k] * (re[k] * a.cos() - im[k] * a.sin())
                    })
                    .sum::<f64>()
                    / (n * n) as f64
            })
            .collect();
        let x = Tensor::from_slice(&plane).reshape([1, 1, n as i64, n as i64]);
        let norm = Normalisation {
            mean: vec![0.0],
            scale: vec![1.0],
        };
        let y: Vec<f64> =
            Vec::try_from(emit(&mut Tch, &norm, Along::Plane, &gains, &x).reshape([-1])).unwrap();
        for p in 0..n * n {
            assert!(
                (y[p] - want[p]).abs() < 1e-10,
                "{p}: {} vs {}",
                y[p],
                want[p]
            );
        }
        let power = plane_power(&x.reshape([1, n as i64, n as i64])).unwrap();
        for k in 0..n * n {
            let sums = re[k] * re[k] + im[k] * im[k];
            assert!((power[k] - sums).abs() < 1e-9 * (1.0 + sums), "mode {k}");
        }
    }

    #[test]
    fn a_mode_the_data_lack_gets_no_gain_and_one_the_samples_lack_is_refused() {
        assert_eq!(gains(&[0.0, 4.0], &[2.0, 1.0]).unwrap(), vec![0.0, 2.0]);
        assert!(gains(&[1.0, 4.0], &[0.0, 1.0]).is_err());
        assert!(gains(&[1.0], &[1.0]).is_err());
    }
}
