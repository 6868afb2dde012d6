//! A first level's spectrum brought to the data's. Where a family's rows are time levels of a
//! field periodic in x (Burgers: [`Boundary::Periodic`] along x, [`Boundary::Initial`] along t),
//! the data's first level is a stationary Gaussian field whose power per Fourier mode the one-step
//! network under-produces at the fine scales (Burgers: modes 3 to 5 at 1/2 to 1/6 of the data's
//! power) and at the first (70 %), so the samples' pointwise spread is narrow from t = 0 on and the
//! march carries it. A gain per mode, sqrt(data's power / samples' power), fitted once on the
//! student's samples (`stages::student::recolour`), applied along x to every row before the march
//! (which re-solves the later rows from the first), restores the second moments the SMSE counts.
//! Only samples: the solve's answers are untouched.
//!
//! [`Boundary::Periodic`]: crate::pde::Boundary::Periodic
//! [`Boundary::Initial`]: crate::pde::Boundary::Initial

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

/// Normalised fields `x` [B, C, T, n] with the gains applied, in physical units, along x (axis 3)
/// on every row of every channel.
pub fn emit<O: FieldOps>(o: &mut O, norm: &Normalisation, gains: &[f64], x: &O::V) -> O::V {
    let n = 2 * (gains.len() - 1);
    // the circulant acts on the physical field: x_phys = scale x + mean, so
    // y = M x + (M - I) mean / scale, and M's row sums are g(0)
    let k: Vec<f64> = vec![1.0; norm.mean.len()];
    let b: Vec<f64> = norm
        .mean
        .iter()
        .zip(&norm.scale)
        .map(|(m, s)| (gains[0] - 1.0) * m / s)
        .collect();
    let y = o.matmul_axis(x, 3, &circulant(gains, n));
    o.affine_channels(&y, &k, &b)
}

/// Mean power per mode (the n / 2 + 1 modes of a real row) of row `row` of physical fields
/// [N, C, T, n], over samples and channels.
pub fn row_power(fields: &Tensor, row: i64) -> Result<Vec<f64>> {
    let x = fields.select(2, row).to_kind(Kind::Double);
    let n = x.size()[2] as usize;
    let rows: Vec<f64> = Vec::try_from(x.reshape([-1]))?;
    let count = rows.len() / n;
    let mut power = vec![0.0; n / 2 + 1];
    for r in rows.chunks(n) {
        for (k, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, v) in r.iter().enumerate() {
                let a = 2.0 * PI * (k * j) as f64 / n as f64;
                re += v * a.cos();
                im -= v * a.sin();
            }
            *p += (re * re + im * im) / count as f64;
        }
    }
    Ok(power)
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

    /// The circulant against the filter done by hand: the row's DFT by explicit sums, each mode
    /// times its gain, the inverse DFT by explicit sums.
    #[test]
    fn circulant_is_the_filter_by_explicit_dfts() {
        let n = 8;
        let gains = [0.0, 1.5, 0.5, 2.0, 0.25];
        let row: Vec<f64> = (0..n).map(|j| ((j * 7 + 3) % 5) as f64 - 1.7).collect();
        let (mut re, mut im) = (vec![0.0; n], vec![0.0; n]);
        for k in 0..n {
            for (j, v) in row.iter().enumerate() {
                let a = 2.0 * PI * (k * j) as f64 / n as f64;
                re[k] += v * a.cos();
                im[k] -= v * a.sin();
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
        let y = norm.to_physical(&emit(&mut Tch, &norm, &gains, &norm.to_normalised(&x)));
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

    #[test]
    fn a_mode_the_data_lack_gets_no_gain_and_one_the_samples_lack_is_refused() {
        assert_eq!(gains(&[0.0, 4.0], &[2.0, 1.0]).unwrap(), vec![0.0, 2.0]);
        assert!(gains(&[1.0, 4.0], &[0.0, 1.0]).is_err());
        assert!(gains(&[1.0], &[1.0]).is_err());
    }
}
