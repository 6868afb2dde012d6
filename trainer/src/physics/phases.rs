//! A two-phase coefficient projected onto its phases. The data's Darcy coefficient takes two values
//! at every point; a one-step sample's lies near them but pulled towards the middle (the network
//! regresses the amplitude: phase means 3.47 and 11.56 for 3 and 12), which narrows the samples'
//! spread of a and, through the solve, of u. Projected onto the phases before its defect
//! corrections (u corrected against the projected a), a sample lies on the data's support. Only
//! samples are projected: the solve's objective needs a gradient through a, and a projection has
//! none.

use crate::data::Normalisation;
use crate::nets::{NetOps, Unary};
use crate::pde::Phases;

/// Normalised fields `d` [B, C, n, n] with channel `p.channel` set, point by point, to the phase
/// its value lies nearer (the midpoint itself to the midpoint, a set of measure zero).
pub fn emit_project<B: NetOps>(b: &mut B, norm: &Normalisation, p: Phases, d: &B::V) -> B::V {
    let c = p.channel as i64;
    let (k, shift) = norm.normalising_affine();
    let (lo, hi) = (
        k[p.channel] * p.lo + shift[p.channel],
        k[p.channel] * p.hi + shift[p.channel],
    );
    let (mid, half) = (0.5 * (lo + hi), 0.5 * (hi - lo));
    let x = b.channels(d, c, 1);
    let centred = b.affine(&x, 1.0, -mid);
    let side = b.unary(&centred, Unary::Sign);
    let snapped = b.affine(&side, half, mid);
    let channels = b.chw(d)[0];
    let before = (c > 0).then(|| b.channels(d, 0, c));
    let after = (c + 1 < channels).then(|| b.channels(d, c + 1, channels - c - 1));
    let parts: Vec<&B::V> = before
        .iter()
        .chain(std::iter::once(&snapped))
        .chain(after.iter())
        .collect();
    b.concat(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pde::ops::Tch;
    use tch::{Kind, Tensor};

    #[test]
    fn values_go_to_the_nearer_phase_and_other_channels_stay() {
        let norm = Normalisation {
            mean: vec![7.5, 0.01],
            scale: vec![9.0, 0.02],
        };
        let phases = Phases {
            channel: 0,
            lo: 3.0,
            hi: 12.0,
        };
        // physical a: both phases, values pulled inwards, past them, and near the midpoint 7.5
        let a = [3.4f64, 11.6, 2.0, 13.0, 7.4, 7.6, 3.0, 12.0, 5.0];
        let u: Vec<f64> = (0..9).map(|i| 0.001 * i as f64).collect();
        let x = Tensor::from_slice(&[a.as_slice(), u.as_slice()].concat())
            .reshape([1, 2, 3, 3])
            .to_kind(Kind::Double);
        let d = norm.to_normalised(&x);
        let out = norm.to_physical(&emit_project(&mut Tch, &norm, phases, &d));
        let got: Vec<f64> = Vec::try_from(out.flatten(0, -1)).unwrap();
        let want = [3.0, 12.0, 3.0, 12.0, 3.0, 12.0, 3.0, 12.0, 3.0];
        for (g, w) in got[..9].iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        for (g, w) in got[9..].iter().zip(&u) {
            assert!((g - w).abs() < 1e-12, "u changed: {got:?}");
        }
    }
}
