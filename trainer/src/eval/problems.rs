//! The evaluation's conditional problems: the first test samples, a noise draw for each, and the
//! family's tasks (forward, inverse, and a sparse share of what the inverse observes), drawn from the
//! test seed so that every method evaluated on a test set answers the same ones; and their scoring.

use super::metrics::{part_scores, ChannelError, PartScores};
use crate::config::Preset;
use crate::data::Dataset;
use crate::pde::{sparse_points, Grid, Pde, Scored, Task, SPARSE_FRACTION};
use crate::util::tensor::to_f32;
use anyhow::Result;
use rand::SeedableRng;
use tch::{Kind, Tensor};

/// One conditional task over the evaluation's problems.
pub struct ProblemTask {
    /// "forward", "inverse" or "sparse".
    pub name: &'static str,
    /// [P, C, n, n], 1 where observed.
    pub mask: Tensor,
    /// What is given, in words.
    pub observed: String,
    /// The task's scored parts, or (None) each problem's unobserved points.
    pub scored: Option<Vec<Scored>>,
}

impl ProblemTask {
    /// The family's `task` over `p` problems on `grid`, its mask on `dev`.
    pub fn of(pde: &Pde, task: Task, p: i64, grid: Grid, dev: tch::Device) -> ProblemTask {
        let family = pde.family();
        let (c, n) = (pde.channels().len() as i64, grid.n as i64);
        ProblemTask {
            name: task.name(),
            mask: Tensor::from_slice(&family.task_mask(task, grid))
                .reshape([1, c, n, n])
                .to_device(dev)
                .expand([p, c, n, n], false)
                .contiguous(),
            observed: family.given(task),
            scored: Some(family.scored(task, grid)),
        }
    }

    /// The sparse task: what the family's sparse task draws from (by default what the inverse
    /// task observes), at `points` only ([P, 1, n, n], 1 where observed, a `fraction` of the
    /// points); scored where each problem is unobserved.
    pub fn sparse(pde: &Pde, points: &Tensor, grid: Grid, fraction: f64) -> ProblemTask {
        let p = points.size()[0];
        let family = pde.family();
        let source = family.sparse_source(grid);
        let inverse = family.task_mask(Task::Inverse, grid);
        let (c, n) = (pde.channels().len() as i64, grid.n as i64);
        let observed = if source == inverse {
            family.given(Task::Inverse)
        } else {
            let k: Vec<usize> = (0..c as usize)
                .filter(|&k| source[k * grid.len()..(k + 1) * grid.len()].contains(&1.0))
                .collect();
            crate::pde::channel_words(pde.channels(), &k)
        };
        ProblemTask {
            name: "sparse",
            mask: Tensor::from_slice(&source)
                .reshape([1, c, n, n])
                .to_device(points.device())
                .expand([p, c, n, n], false)
                * points,
            observed: format!(
                "{:.0} % of {}",
                100.0 * fraction,
                observed.trim_start_matches("all of ")
            ),
            scored: None,
        }
    }

    /// Each scored part's metric per problem for answers `x` against `truth` (physical,
    /// [P, C, n, n]).
    pub fn part_scores(&self, pde: &Pde, x: &Tensor, truth: &Tensor) -> Vec<PartScores> {
        let plane = (truth.size()[2] * truth.size()[3]) as usize;
        part_scores(
            pde,
            &to_f32(x),
            &to_f32(truth),
            plane,
            self.scored.as_deref(),
            &to_f32(&self.mask),
        )
    }

    /// Mean over channels of the observed fraction.
    pub fn observed_fraction(&self) -> Result<f64> {
        let per_channel = self
            .mask
            .mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double);
        let per_channel = Vec::<f64>::try_from(per_channel)?;
        Ok(per_channel.iter().sum::<f64>() / per_channel.len().max(1) as f64)
    }
}

/// The evaluation's problems: the first test samples (physical), a noise draw for each, and the
/// family's tasks (forward, inverse, and 3 % of what the inverse observes).
pub struct Problems {
    pub truth: Tensor,
    pub eps: Tensor,
    pub tasks: Vec<ProblemTask>,
}

impl Problems {
    /// Errors of answers `x` to `task`, averaged over problems, one per scored part with the
    /// family's metric.
    pub fn score(&self, pde: &Pde, x: &Tensor, task: &ProblemTask) -> Result<Vec<ChannelError>> {
        Ok(task
            .part_scores(pde, x, &self.truth)
            .iter()
            .map(PartScores::error)
            .collect())
    }
}

/// The evaluation's random draws from the test seed: noise for `count` generated samples, and the
/// problems. Every method evaluated on a test set sees these.
pub fn draws(
    preset: &Preset,
    test: &Dataset,
    count: i64,
    dev: tch::Device,
) -> Result<(Tensor, Problems)> {
    let n = test.meta.grid.n as i64;
    let c = test.meta.channels.len() as i64;
    tch::manual_seed(preset.data.test_seed as i64);
    let eps = Tensor::randn([count, c, n, n], (Kind::Float, dev));
    let p = (preset.eval.problems as i64).min(test.meta.count as i64);
    let truth = test.fields.to_device(dev).narrow(0, 0, p);
    let eps_p = Tensor::randn([p, c, n, n], (Kind::Float, dev));
    let pde = test.meta.pde;
    let grid = test.meta.grid;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(preset.data.test_seed);
    let sparse = sparse_points(&mut rng, (p * n * n) as usize, SPARSE_FRACTION);
    let sparse = Tensor::from_slice(&sparse)
        .reshape([p, 1, n, n])
        .to_device(dev);
    Ok((
        eps,
        Problems {
            truth,
            eps: eps_p,
            tasks: vec![
                ProblemTask::of(&pde, Task::Forward, p, grid, dev),
                ProblemTask::of(&pde, Task::Inverse, p, grid, dev),
                ProblemTask::sparse(&pde, &sparse, grid, SPARSE_FRACTION),
            ],
        },
    ))
}
