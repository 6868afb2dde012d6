//! The PDE families the trainer knows: their random inputs, their discretisation and their solvers.

pub mod darcy;
pub mod grf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A PDE family. The name is what the CLI, presets and dataset metadata use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PdeKind {
    Darcy,
}

impl PdeKind {
    pub const ALL: [PdeKind; 1] = [PdeKind::Darcy];

    pub fn name(self) -> &'static str {
        match self {
            PdeKind::Darcy => "darcy",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        for k in Self::ALL {
            if k.name() == name {
                return Ok(k);
            }
        }
        let known: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
        bail!("unknown PDE '{name}' (known: {})", known.join(", "))
    }

    /// Channel names in storage order, and their units.
    pub fn channels(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PdeKind::Darcy => &[
                ("a", "permeability (dimensionless)"),
                ("u", "pressure (dimensionless)"),
            ],
        }
    }
}

/// A uniform grid of `n x n` points on the unit square, boundary included: spacing 1 / (n - 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub n: usize,
}

impl Grid {
    pub fn new(n: usize) -> Result<Self> {
        if n < 4 {
            bail!("grid must have at least 4 points a side, got {n}");
        }
        Ok(Grid { n })
    }
    pub fn h(self) -> f64 {
        1.0 / (self.n as f64 - 1.0)
    }
    pub fn len(self) -> usize {
        self.n * self.n
    }
    pub fn is_empty(self) -> bool {
        self.n == 0
    }
}
