//! Samples moved by a random translation under which the family's data are invariant. Where a
//! family's data distribution does not change when its periodic grid is translated (Burgers: along
//! x; Navier-Stokes: by (s, -s), which keeps its forcing, a function of x + y), a sample moved by
//! any multiple of the translation is as likely as the sample itself, and the march commutes with
//! the move. The U-Net's zero padding is not translation-invariant, so its samples' pointwise
//! spread is narrow along the domain's edges (Navier-Stokes' w0: std 0.43 on the edge rows and
//! columns, 0.48 inside, normalised; the data's 0.49 everywhere). A random multiple per sample, from the signs
//! of `bits` entries of its own eps, spreads the edges over the grid, so the samples' pointwise
//! statistics are stationary as the data's are. A bit is the sign of the product of two entries of
//! eps half a plane apart, not of one entry: flipping both keeps it, so no entry's mean moves with
//! it, and the sample (a function of every entry) is left nearly independent of its move (with
//! one entry's sign, the network's response to that entry moves with the shift: Burgers' MMSE
//! 2.4x that of independent moves over 2048 samples; with products 1.2x). Only samples: the
//! solve's answers are tied to observed positions and are untouched.

use crate::nets::{NetOps, Unary};
use crate::pde::Translation;

/// The number of sign bits of eps a multiple is drawn from on a period of `n` points: log2 n when
/// n is a power of two (uniform on 0 .. n - 1), else 6 more (the sum mod n within 1/64 of uniform).
pub fn bits(n: usize) -> usize {
    let log = n.next_power_of_two().trailing_zeros() as usize;
    if n.is_power_of_two() {
        log
    } else {
        log + 6
    }
}

/// The two points (row-major) of an H x W plane whose product's sign is bit k: point k and the
/// point half a plane further along both axes.
pub fn pair(k: usize, h: usize, w: usize) -> (usize, usize) {
    let (i, j) = (k / w, k % w);
    (k, ((i + h / 2) % h) * w + (j + w / 2) % w)
}

/// The period of translation `t` on an H x W grid: the number of distinct multiples.
pub fn period(t: Translation, h: i64, w: i64) -> usize {
    let along = |d: i64, n: i64| if d == 0 { 1 } else { n / gcd(d.abs(), n) };
    lcm(along(t.dy, h), along(t.dx, w)) as usize
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: i64, b: i64) -> i64 {
    a / gcd(a, b) * b
}

/// The permutation (row-major n x n) that moves a periodic axis by `by` points:
/// y[i] = x[(i - by) mod n].
fn roll_matrix(n: i64, by: i64) -> Vec<f64> {
    (0..n * n)
        .map(|p| {
            let (i, j) = (p / n, p % n);
            if j == (i - by).rem_euclid(n) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// The n x n matrix (row-major) every row of which picks point `k`: y[i] = x[k] for all i.
fn select(n: i64, k: i64) -> Vec<f64> {
    (0..n * n)
        .map(|p| if p % n == k { 1.0 } else { 0.0 })
        .collect()
}

/// Fields `x` [B, C, H, W] (any units: a translation acts the same on normalised and physical
/// values) each moved by its multiple of `t`, drawn from `eps` [B, C', H, W].
pub fn emit<B: NetOps>(b: &mut B, t: Translation, eps: &B::V, x: &B::V) -> B::V {
    let [c, h, w] = <[i64; 3]>::try_from(b.chw(eps)).expect("eps is a 4-D field");
    let n = period(t, h, w);
    let last = b.channels(eps, c - 1, 1);
    let mut y = b.dup(x);
    for k in 0..bits(n) {
        let by = ((1usize << k) % n) as i64;
        if by == 0 {
            continue;
        }
        // bit k of each sample: the sign of the product of its pair's entries, each picked from
        // eps's last plane and spread over it by two selecting matrices (a plane, not a reshaped
        // scalar: the batch's dimension stays the input's, which keeps ONNX Runtime's shape
        // inference of the march after it cheap; with a Reshape to [-1, 1, 1, 1] loading the
        // Navier-Stokes graph took 0.9 s instead of 0.1)
        let (p, q) = pair(k, h as usize, w as usize);
        let entries = [p, q].map(|point| {
            let along_w = b.matmul_axis(&last, 3, &select(w, point as i64 % w));
            b.matmul_axis(&along_w, 2, &select(h, point as i64 / w))
        });
        let product = b.mul(&entries[0], &entries[1]);
        let sign = b.unary(&product, Unary::Sign);
        let bit = b.affine(&sign, 0.5, 0.5);
        let mut moved = b.dup(&y);
        if t.dy != 0 {
            moved = b.matmul_axis(&moved, 2, &roll_matrix(h, t.dy * by));
        }
        if t.dx != 0 {
            moved = b.matmul_axis(&moved, 3, &roll_matrix(w, t.dx * by));
        }
        let change = b.sub(&moved, &y);
        let step = b.mul(&change, &bit);
        y = b.add(&y, &step);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pde::ops::Tch;
    use tch::{Kind, Tensor};

    /// The multiple each sample is moved by, from the last channel's H x W plane of its eps
    /// (row-major): bit k is 1 where the product at [`pair`] k is positive, and the multiple is
    /// sum_k 2^k bit_k mod n: the reference the graph's moves are checked against.
    fn multiples(eps_last: &[Vec<f64>], h: usize, w: usize, n: usize) -> Vec<usize> {
        eps_last
            .iter()
            .map(|plane| {
                (0..bits(n))
                    .filter(|&k| {
                        let (p, q) = pair(k, h, w);
                        plane[p] * plane[q] > 0.0
                    })
                    .fold(0usize, |s, k| (s + (1usize << k) % n) % n)
            })
            .collect()
    }

    fn last_planes(eps: &Tensor) -> Vec<Vec<f64>> {
        let c = eps.size()[1];
        let planes = eps.select(1, c - 1).flatten(1, -1).to_kind(Kind::Double);
        Vec::<Vec<f64>>::try_from(planes).unwrap()
    }

    /// Every sample moved by the multiple its eps's signs give, against tch's roll; the multiples
    /// cover the period evenly.
    #[test]
    fn samples_move_by_their_multiple_as_tch_rolls_them() {
        tch::manual_seed(3);
        for (t, h, w) in [
            (Translation { dy: 0, dx: 1 }, 6, 8),
            (Translation { dy: 1, dx: -1 }, 8, 8),
            (Translation { dy: 1, dx: -1 }, 6, 6),
        ] {
            let n = period(t, h, w);
            let eps = Tensor::randn([512, 2, h, w], (Kind::Double, tch::Device::Cpu));
            let x = Tensor::randn([512, 3, h, w], (Kind::Double, tch::Device::Cpu));
            let y = emit(&mut Tch, t, &eps, &x);
            let m = multiples(&last_planes(&eps), h as usize, w as usize, n);
            let mut count = vec![0usize; n];
            for (i, &s) in m.iter().enumerate() {
                count[s] += 1;
                let s = s as i64;
                let want = x.get(i as i64).roll([t.dy * s, t.dx * s], [1, 2]);
                let err = (y.get(i as i64) - want).abs().max().double_value(&[]);
                assert!(err < 1e-12, "{t:?} sample {i}: moved by {s}, off by {err}");
            }
            // 512 draws over n <= 8 multiples: each near 512 / n (binomial sd <= 21)
            let expect = 512.0 / n as f64;
            for (s, &c) in count.iter().enumerate() {
                assert!(
                    (c as f64 - expect).abs() < 0.35 * expect,
                    "{t:?}: multiple {s} drawn {c} times of 512, expected about {expect}"
                );
            }
        }
    }

    #[test]
    fn periods_and_bits() {
        assert_eq!(period(Translation { dy: 0, dx: 1 }, 32, 32), 32);
        assert_eq!(period(Translation { dy: 1, dx: -1 }, 32, 32), 32);
        assert_eq!(period(Translation { dy: 2, dx: 0 }, 32, 32), 16);
        assert_eq!(period(Translation { dy: 1, dx: 1 }, 4, 6), 12);
        assert_eq!(bits(32), 5);
        assert_eq!(bits(6), 9);
        assert_eq!(pair(3, 8, 8), (3, 4 * 8 + 7));
        assert_eq!(pair(9, 6, 6), (9, 24));
    }
}
