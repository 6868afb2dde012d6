//! Poisson: Lap u = f on the unit square, u = 0 on the boundary, f = GRF(alpha 2, tau 3); channels
//! (f, u). The operator, stencil and solver are Helmholtz's with k = 0 ([`super::helmholtz`]).

use super::helmholtz::{self, SourceSampler};
use super::{grf::GrfParams, Defect, Family, Grid, Metric, Residual, Resolver, Sampler, Task};
use super::ops::FieldOps;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoissonParams {
    /// The source's GRF.
    pub grf: GrfParams,
}

impl Default for PoissonParams {
    fn default() -> Self {
        PoissonParams {
            grf: GrfParams {
                alpha: 2.0,
                tau: 3.0,
            },
        }
    }
}

impl Family for PoissonParams {
    fn name(&self) -> &'static str {
        "poisson"
    }
    fn channels(&self) -> &'static [(&'static str, &'static str)] {
        helmholtz::CHANNELS
    }
    fn equation(&self) -> String {
        "Lap u = f on (0,1)^2, u = 0 on the boundary".into()
    }
    fn validate(&self) -> Result<()> {
        helmholtz::validate_grf(&self.grf)
    }
    fn sampler(&self, grid: Grid) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(SourceSampler::new(self.grf, grid, 0.0)?))
    }
    fn resolver(&self, grid: Grid) -> Result<Box<dyn Resolver>> {
        Ok(Box::new(helmholtz::Solver::new(grid, 0.0)?))
    }
    fn source_norm(&self, grid: Grid, fields: &[f64]) -> f64 {
        helmholtz::source_norm(grid, fields)
    }
    fn source_channel(&self) -> Option<usize> {
        Some(0)
    }
    fn defect(&self, _grid: Grid) -> Defect {
        Defect::Dirichlet {
            shift: 0.0,
            scale: 1.0,
        }
    }
    fn task_mask(&self, task: Task, grid: Grid) -> Vec<f32> {
        super::channel_mask(2, helmholtz::observed(task), grid)
    }
    fn given(&self, task: Task) -> String {
        super::channel_words(self.channels(), helmholtz::observed(task))
    }
    /// u = 0 on the boundary.
    fn fixed_zero(&self, grid: Grid) -> Vec<f32> {
        super::ring_mask(2, 1, grid)
    }
    fn metric(&self, _channel: usize) -> Metric {
        Metric::RelL2
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("plain parameters serialise")
    }
    fn reference_residual(&self, grid: Grid, fields: &[f64]) -> Vec<f64> {
        let (f, u) = fields.split_at(grid.len());
        helmholtz::residual(grid, 0.0, f, u)
    }
    fn preset(&self) -> (&'static str, &'static str) {
        ("poisson", include_str!("../../presets/poisson.toml"))
    }
}

impl Residual for PoissonParams {
    fn emit_residual<O: FieldOps>(&self, grid: Grid, o: &mut O, x: &O::V) -> O::V {
        helmholtz::emit(0.0, grid, o, x)
    }
}
