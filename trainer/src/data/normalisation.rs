//! The per-channel affine map between physical and normalised units, defined once: every tensor
//! conversion, the inference loss and the exported graphs apply it through [`FieldOps`].

use crate::pde::ops::{FieldOps, Tch};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The standard deviation of every channel in normalised units: the diffusion model's sigma_data.
pub const SIGMA_DATA: f64 = 0.5;

/// x_norm = (x - mean) / scale per channel, with scale = std / sigma_data so that normalised
/// channels have the diffusion model's data standard deviation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Normalisation {
    /// Per-channel (k, c) with x_normalised = k x_physical + c.
    pub fn normalising_affine(&self) -> (Vec<f64>, Vec<f64>) {
        let k: Vec<f64> = self.scale.iter().map(|s| 1.0 / s).collect();
        let c = self
            .mean
            .iter()
            .zip(&self.scale)
            .map(|(m, s)| -m / s)
            .collect();
        (k, c)
    }

    /// Physical fields of normalised `x` [B, C, H, W], on any back-end.
    pub fn emit_physical<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        o.affine_channels(x, &self.scale, &self.mean)
    }

    /// Normalised fields of physical `x` [B, C, H, W], on any back-end.
    pub fn emit_normalised<O: FieldOps>(&self, o: &mut O, x: &O::V) -> O::V {
        let (k, c) = self.normalising_affine();
        o.affine_channels(x, &k, &c)
    }

    pub fn to_physical(&self, x: &Tensor) -> Tensor {
        self.emit_physical(&mut Tch, x)
    }

    pub fn to_normalised(&self, x: &Tensor) -> Tensor {
        self.emit_normalised(&mut Tch, x)
    }
}
