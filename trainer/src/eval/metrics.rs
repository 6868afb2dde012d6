//! The numbers every report is made of: the distribution metrics of generated samples against the
//! test set, per-part errors of conditional answers, their median and mean over problems, and the
//! spread of several answers to one observation.

use crate::data::{Dataset, Normalisation};
use crate::pde::{Grid, Metric, Pde, Scored};
use crate::physics::ResidualOp;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Clone, Debug, Serialize)]
pub struct GenMetrics {
    pub nfe: usize,
    pub residual_mse: f64,
    pub residual_std: f64,
    pub mmse: f64,
    pub smse: f64,
    /// Per sample ||R|| / ||source term|| ([`crate::pde::Consistency`]), over the samples.
    pub relative_residual: Figure,
    /// Per sample ||u - S(input)|| / ||S(input)||, S the family's own solver, over the samples.
    pub consistency: Figure,
    pub seconds_per_sample: f64,
}

/// The error of one wanted channel, averaged over problems.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelError {
    pub channel: String,
    pub metric: Metric,
    pub value: f64,
}

pub struct Moments {
    pub mean: Tensor,
    pub std: Tensor,
}

/// The test set on `dev` (physical), its moments in normalised units and its own mean residual:
/// what every generator is measured against.
pub fn test_reference(
    test: &Dataset,
    norm: &Normalisation,
    op: &ResidualOp,
    dev: tch::Device,
) -> anyhow::Result<(Tensor, Moments, f64)> {
    let truth = test.fields.to_device(dev);
    let reference = moments(&norm.to_normalised(&truth));
    let residual = f64::try_from(
        op.mse_per_sample(&truth.to_kind(Kind::Double))
            .mean(Kind::Double),
    )?;
    Ok((truth, reference, residual))
}

pub fn moments(x_norm: &Tensor) -> Moments {
    let x = x_norm.to_kind(Kind::Double);
    Moments {
        mean: x.mean_dim(0, false, Kind::Double),
        std: x.std_dim(0, false, false),
    }
}

/// Residual (mean and std over samples of the per-sample mean R^2), MMSE and SMSE against the
/// test set's moments (normalised units), and the samples' [`physical`] consistency, of physical
/// samples `x_phys`.
pub fn gen_metrics(
    x_phys: &Tensor,
    reference: &Moments,
    norm: &Normalisation,
    op: &ResidualOp,
    nfe: usize,
    secs: f64,
) -> anyhow::Result<GenMetrics> {
    let r = op.mse_per_sample(&x_phys.to_kind(Kind::Double));
    let m = moments(&norm.to_normalised(x_phys));
    let sq = |a: &Tensor, b: &Tensor| f64::try_from((a - b).square().mean(Kind::Double)).unwrap();
    let flat: Vec<f64> = Vec::try_from(x_phys.to_kind(Kind::Double).flatten(0, -1))?;
    let (relative_residual, consistency) = physical(&op.pde, op.grid, &flat)?;
    Ok(GenMetrics {
        nfe,
        residual_mse: f64::try_from(r.mean(Kind::Double)).unwrap(),
        residual_std: f64::try_from(r.std(false)).unwrap(),
        mmse: sq(&m.mean, &reference.mean),
        smse: sq(&m.std, &reference.std),
        relative_residual,
        consistency,
        seconds_per_sample: secs / x_phys.size()[0] as f64,
    })
}

/// The relative residual and the consistency error of every sample of `flat` ([B][C][n * n],
/// physical), each as a [`Figure`] over the samples; the family's solver runs once per sample,
/// in parallel. A sample that is not finite, or whose input the solver refuses, counts as NaN (so
/// the mean shows it) and is reported on stderr rather than ending the report.
pub fn physical(pde: &Pde, grid: Grid, flat: &[f64]) -> anyhow::Result<(Figure, Figure)> {
    use rayon::prelude::*;
    let family = pde.family();
    let resolver = family.resolver(grid)?;
    let field = pde.channels().len() * grid.len();
    let b = flat.len() / field;
    let each: Vec<Result<crate::pde::Consistency, String>> = flat
        .par_chunks(field)
        .map(|x| {
            if x.iter().any(|v| !v.is_finite()) {
                return Err("not finite".to_string());
            }
            crate::pde::consistency(family, resolver.as_ref(), grid, x)
                .map_err(|e| format!("{e:#}"))
        })
        .collect();
    let failed: Vec<(usize, &String)> = each
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().err().map(|e| (i, e)))
        .collect();
    if let Some((i, e)) = failed.first() {
        eprintln!(
            "consistency: {} of {b} samples not measured (sample {i}: {e}); they count as NaN",
            failed.len()
        );
    }
    let pick = |f: fn(&crate::pde::Consistency) -> f64| -> Vec<f64> {
        each.iter()
            .map(|c| c.as_ref().map_or(f64::NAN, f))
            .collect()
    };
    Ok((
        figure(&pick(|c| c.relative_residual)),
        figure(&pick(|c| c.error)),
    ))
}

/// Samples a generator handles at once.
pub const BATCH: i64 = 64;

/// `f` over `eps` in chunks of [`BATCH`]: the outputs concatenated, and the seconds it took.
pub fn batched(eps: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, f64) {
    let t0 = Instant::now();
    let out: Vec<Tensor> = eps.split(BATCH, 0).iter().map(&f).collect();
    (Tensor::cat(&out, 0), t0.elapsed().as_secs_f64())
}

/// One scored part's metric on every problem.
#[derive(Clone, Debug)]
pub struct PartScores {
    pub channel: String,
    pub metric: Metric,
    pub values: Vec<f64>,
}

impl PartScores {
    /// The mean over problems (summed in problem order).
    pub fn mean(&self) -> f64 {
        let p = self.values.len() as f64;
        self.values.iter().fold(0.0, |a, v| a + v / p)
    }

    pub fn error(&self) -> ChannelError {
        ChannelError {
            channel: self.channel.clone(),
            metric: self.metric,
            value: self.mean(),
        }
    }

    pub fn figure(&self) -> PartFigure {
        PartFigure {
            channel: self.channel.clone(),
            metric: self.metric,
            figure: figure(&self.values),
        }
    }
}

/// Each scored part's metric per problem, for answers `x` and the truth, both [P][C][plane]
/// (physical): on `scored` when the task fixes its parts, else on each problem's unobserved points
/// of `masks` (also [P][C][plane], 1 where observed).
pub fn part_scores(
    pde: &Pde,
    x: &[f32],
    truth: &[f32],
    plane: usize,
    scored: Option<&[Scored]>,
    masks: &[f32],
) -> Vec<PartScores> {
    let family = pde.family();
    let field = pde.channels().len() * plane;
    let mut out: Vec<PartScores> = Vec::new();
    for i in 0..truth.len() / field {
        let own;
        let parts = match scored {
            Some(s) => s,
            None => {
                own = family.unobserved_parts(&masks[i * field..(i + 1) * field], plane);
                &own[..]
            }
        };
        for (j, s) in parts.iter().enumerate() {
            let at = |v: &[f32]| s.pick_scored(&v[i * field..(i + 1) * field], plane);
            let metric = family.metric(s.channel);
            let v = metric.of(&at(x), &at(truth));
            if i == 0 {
                out.push(PartScores {
                    channel: s.label.clone(),
                    metric,
                    values: Vec::new(),
                });
            }
            out[j].values.push(v);
        }
    }
    out
}

/// Median and mean of one metric over the problems.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    pub median: f64,
    pub mean: f64,
}

impl Figure {
    /// "median % (mean %)", the cell every table shows a relative figure in; a figure below
    /// 0.005 % (a corrected sample's rounding) in two significant digits rather than as 0.00.
    pub fn percent(&self) -> String {
        format!("{} % ({} %)", percent(self.median), percent(self.mean))
    }
}

fn percent(v: f64) -> String {
    let p = 100.0 * v;
    if p != 0.0 && p.abs() < 5e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.2}")
    }
}

/// One scored part's [`Figure`].
#[derive(Clone, Debug, Serialize)]
pub struct PartFigure {
    pub channel: String,
    pub metric: Metric,
    #[serde(flatten)]
    pub figure: Figure,
}

impl PartFigure {
    /// "error rate of a" for table headers.
    pub fn label(&self) -> String {
        format!("{} of {}", self.metric.label(), self.channel)
    }
}

/// Median and mean of `v`.
pub fn figure(v: &[f64]) -> Figure {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len();
    let median = if m % 2 == 1 {
        s[m / 2]
    } else {
        0.5 * (s[m / 2 - 1] + s[m / 2])
    };
    Figure {
        median,
        mean: s.iter().sum::<f64>() / m as f64,
    }
}

/// A task's figures in one row: each scored part's median and mean over the problems.
#[derive(Clone, Debug, Serialize)]
pub struct TaskFigures {
    /// "forward", "inverse" or "sparse".
    pub task: String,
    /// What was given, in words.
    pub observed: String,
    pub errors: Vec<PartFigure>,
}

impl TaskFigures {
    pub fn of(task: &str, observed: &str, scores: &[PartScores]) -> Self {
        TaskFigures {
            task: task.to_string(),
            observed: observed.to_string(),
            errors: scores.iter().map(PartScores::figure).collect(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
/// The spread of several answers to each observation of one task: how often the truth lies within
/// their mean +- 2 std (over the unknown entries), and their mean as the answer.
pub struct TaskSpread {
    pub task: String,
    pub coverage: f64,
    /// Share of the unknown entries every answer agrees on ([`Ensemble`]), left out of coverage.
    pub determined: f64,
    pub mean_answer: TaskFigures,
}

/// A table's columns: every (task, scored part) of `rows`, in order of first appearance.
fn columns(rows: &[&[TaskFigures]]) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = Vec::new();
    for t in rows.iter().flat_map(|r| r.iter()) {
        for e in &t.errors {
            let col = (t.task.clone(), e.label());
            if !cols.contains(&col) {
                cols.push(col);
            }
        }
    }
    cols
}

/// The cell of column `(task, label)` in a row's `tasks`: "median % (mean %)", or "-".
fn cell(tasks: &[TaskFigures], (task, label): &(String, String)) -> String {
    tasks
        .iter()
        .filter(|t| &t.task == task)
        .flat_map(|t| &t.errors)
        .find(|e| &e.label() == label)
        .map_or("-".into(), |e| e.figure.percent())
}

/// One row of a [`task_table`]: its leading cells, its tasks' figures, its last cell.
pub struct TableRow<'a> {
    pub lead: Vec<String>,
    pub tasks: &'a [TaskFigures],
    pub last: String,
}

/// A markdown table with the columns `lead`, then one per (task, scored part) of the rows, each cell
/// "median (mean)" over the problems, then `last`.
pub fn task_table(lead: &[&str], last: &str, rows: &[TableRow]) -> String {
    let tasks: Vec<&[TaskFigures]> = rows.iter().map(|r| r.tasks).collect();
    let cols = columns(&tasks);
    let observed = |task: &str| {
        tasks
            .iter()
            .flat_map(|t| t.iter())
            .find(|t| t.task == task)
            .map_or(String::new(), |t| t.observed.clone())
    };
    let mut s = format!("| {} |", lead.join(" | "));
    for (task, label) in &cols {
        s += &format!(" {task} ({}): {label}, median (mean) |", observed(task));
    }
    s += &format!(" {last} |\n|");
    s += &"---|".repeat(lead.len() + cols.len() + 1);
    s += "\n";
    for r in rows {
        s += &format!("| {} |", r.lead.join(" | "));
        for c in &cols {
            s += &format!(" {} |", cell(r.tasks, c));
        }
        s += &format!(" {} |\n", r.last);
    }
    s
}

/// The spread in words: "80.7 % (forward), ..." of the truth within mean +- 2 std, and each
/// task's mean answer's figures.
pub fn spread_words(tasks: &[TaskSpread]) -> (String, String) {
    let cover: Vec<String> = tasks
        .iter()
        .map(|t| {
            if t.determined >= 0.999 {
                format!("- ({}: its unknown points determined)", t.task)
            } else if t.determined > 0.0 {
                format!(
                    "{:.1} % ({}; {:.1} % of its unknown points determined, left out)",
                    100.0 * t.coverage,
                    t.task,
                    100.0 * t.determined
                )
            } else {
                format!("{:.1} % ({})", 100.0 * t.coverage, t.task)
            }
        })
        .collect();
    let means: Vec<String> = tasks
        .iter()
        .flat_map(|t| {
            t.mean_answer.errors.iter().map(move |e| {
                format!(
                    "{} {} {:.2} % ({:.2} %)",
                    t.task,
                    e.label(),
                    100.0 * e.figure.median,
                    100.0 * e.figure.mean
                )
            })
        })
        .collect();
    (cover.join(", "), means.join("; "))
}

/// K answers to the same observations: their mean, pointwise std (K - 1 in the denominator), the
/// share of the `unknown` entries the observations determine (every answer the same to float32
/// rounding: std <= 1e-4 max(|mean|, the RMS of its channel's mean over the unknown entries); an
/// answer settled through the PDE has such points, its zero crossings included), and the
/// share of the other unknown entries where the truth lies within mean +- 2 std: a band of width
/// zero has no spread to calibrate.
pub struct Ensemble {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub coverage: f64,
    pub determined: f64,
}

/// The entries of a batch of fields ([B][channels][plane] flattened) that the answers supply (not
/// observed), with the layout that names each entry's channel.
pub struct Unknown {
    pub mask: Vec<bool>,
    pub channels: usize,
    pub plane: usize,
}

impl Unknown {
    /// Unknown where `observed` (one flag per entry) is 0.
    pub fn of_mask(observed: &[u8], channels: usize, plane: usize) -> Unknown {
        Unknown {
            mask: observed.iter().map(|&k| k == 0).collect(),
            channels,
            plane,
        }
    }

    fn channel(&self, i: usize) -> usize {
        i / self.plane % self.channels
    }

    /// The RMS of `mean` over each channel's unknown entries: the size of the values
    /// [`determined`] compares with, so that a settled field's zero crossings, where |mean| is
    /// nothing, count as settled.
    fn scales(&self, mean: &[f32]) -> Vec<f32> {
        let mut acc = vec![(0.0f64, 0usize); self.channels];
        for (i, (&m, _)) in mean
            .iter()
            .zip(&self.mask)
            .enumerate()
            .filter(|(_, (_, &u))| u)
        {
            let a = &mut acc[self.channel(i)];
            *a = (a.0 + f64::from(m).powi(2), a.1 + 1);
        }
        acc.iter()
            .map(|&(s, n)| (s / n.max(1) as f64).sqrt() as f32)
            .collect()
    }
}

pub fn ensemble(draws: &[Vec<f32>], truth: &[f32], unknown: &Unknown) -> Ensemble {
    let k = draws.len() as f64;
    let mean: Vec<f32> = (0..truth.len())
        .map(|i| (draws.iter().map(|d| d[i] as f64).sum::<f64>() / k) as f32)
        .collect();
    let std: Vec<f32> = (0..truth.len())
        .map(|i| {
            let v = draws
                .iter()
                .map(|d| (d[i] as f64 - mean[i] as f64).powi(2))
                .sum::<f64>();
            (v / (k - 1.0)).sqrt() as f32
        })
        .collect();
    let (coverage, determined) = band(&mean, &std, truth, unknown);
    Ensemble {
        mean,
        std,
        coverage,
        determined,
    }
}

/// Whether an unknown entry is determined: every answer the same to float32 rounding of values of
/// its channel's size (`scale`, [`Unknown::scales`]) or of its own, where larger.
fn determined(mean: f32, std: f32, scale: f32) -> bool {
    std <= 1e-4 * mean.abs().max(scale)
}

/// (coverage, determined) of the band mean +- 2 std over the `unknown` entries, as [`Ensemble`]
/// counts them.
pub fn band(mean: &[f32], std: &[f32], truth: &[f32], unknown: &Unknown) -> (f64, f64) {
    band_scaled(mean, std, &[1.0], truth, unknown)
}

/// [`band`] of a std that is the answers' std times a scale per sample (`scales`, one per
/// `truth.len() / scales.len()` entries): whether an entry is determined is judged on the
/// answers' own std, as the calibration judged it.
pub fn band_scaled(
    mean: &[f32],
    std: &[f32],
    scales: &[f64],
    truth: &[f32],
    unknown: &Unknown,
) -> (f64, f64) {
    let per = truth.len() / scales.len().max(1);
    let size = unknown.scales(mean);
    let (mut inside, mut total, mut fixed) = (0usize, 0usize, 0usize);
    for i in 0..truth.len() {
        if !unknown.mask[i] {
            continue;
        }
        let own = (f64::from(std[i]) / scales[i / per]) as f32;
        if determined(mean[i], own, size[unknown.channel(i)]) {
            fixed += 1;
        } else {
            total += 1;
            inside += ((mean[i] - truth[i]).abs() <= 2.0 * std[i]) as usize;
        }
    }
    (
        inside as f64 / total.max(1) as f64,
        fixed as f64 / (fixed + total).max(1) as f64,
    )
}

/// The factor s on the std for which mean +- 2 s std covers at least `coverage` of the unknown,
/// undetermined entries: split conformal prediction with the score |truth - mean| / (2 std), its
/// ceil((n + 1) coverage)-th smallest of n (the largest where that exceeds n); None without such
/// entries. On problems exchangeable with these, the band then covers a new entry with
/// probability at least `coverage`.
pub fn conformal_scale(
    mean: &[f32],
    std: &[f32],
    truth: &[f32],
    unknown: &Unknown,
    coverage: f64,
) -> Option<f64> {
    let size = unknown.scales(mean);
    let mut scores: Vec<f64> = (0..truth.len())
        .filter(|&i| unknown.mask[i] && !determined(mean[i], std[i], size[unknown.channel(i)]))
        .map(|i| (f64::from(mean[i]) - f64::from(truth[i])).abs() / (2.0 * f64::from(std[i])))
        .collect();
    if scores.is_empty() {
        return None;
    }
    scores.sort_by(f64::total_cmp);
    let n = scores.len();
    let k = (((n + 1) as f64 * coverage).ceil() as usize).clamp(1, n);
    Some(scores[k - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three answers over six entries worked by hand: an observed entry is skipped, entries the
    /// answers agree on are determined and left out, the rest covered or not by mean +- 2 std.
    #[test]
    fn ensemble_coverage_by_hand() {
        let draws = vec![
            vec![1.0, 2.0, 0.0, 5.0, 3.0, 9.0],
            vec![1.0, 2.0, 2.0, 5.0, 3.0, 9.0],
            vec![1.0, 2.0, 4.0, 5.0, 6.0, 9.0],
        ];
        // means 1, 2, 2, 5, 4, 9; std 0, 0, 2, 0, sqrt 3, 0
        let truth = [7.0, 2.0, 5.0, 5.5, 5.0, 9.0];
        let unknown = one_channel(vec![false, true, true, true, true, true]);
        let e = ensemble(&draws, &truth, &unknown);
        assert_eq!(e.mean, vec![1.0, 2.0, 2.0, 5.0, 4.0, 9.0]);
        assert!((e.std[4] - 3f32.sqrt()).abs() < 1e-6);
        // determined: entries 1, 3 and 5 (3 of 5 unknown); covered: entry 2 (|3| <= 4) and
        // entry 4 (|1| <= 3.46)
        assert!((e.determined - 0.6).abs() < 1e-12, "{}", e.determined);
        assert!((e.coverage - 1.0).abs() < 1e-12, "{}", e.coverage);
        let far = [7.0, 2.0, 7.0, 5.5, 5.0, 9.0]; // entry 2 now 5 away, 2 std = 4
        let e = ensemble(&draws, &far, &unknown);
        assert!((e.coverage - 0.5).abs() < 1e-12, "{}", e.coverage);
    }

    fn one_channel(mask: Vec<bool>) -> Unknown {
        let plane = mask.len();
        Unknown {
            mask,
            channels: 1,
            plane,
        }
    }

    /// A settled field's zero crossing: every answer the same to rounding of its channel's values
    /// (std 1e-7 beside values of size 1) is determined though its own |mean| is smaller still;
    /// a spread of 1e-3 there is not, nor is a spread of 1e-5 in a channel of values of size
    /// 1e-2 beside one of size 10 (each channel is judged by its own size).
    #[test]
    fn zero_crossings_of_a_settled_field_are_determined() {
        let draws = vec![vec![1.0, -1.0, 1e-8, 0.5], vec![1.0, -1.0, -1e-7, 0.5]];
        let truth = [1.0, -1.0, 3e-7, 0.5];
        let e = ensemble(&draws, &truth, &one_channel(vec![true; 4]));
        assert_eq!(e.determined, 1.0);
        let draws = vec![vec![1.0, -1.0, 1e-3, 0.5], vec![1.0, -1.0, -1e-3, 0.5]];
        let e = ensemble(&draws, &truth, &one_channel(vec![true; 4]));
        assert_eq!(e.determined, 0.75);
        let two = Unknown {
            mask: vec![true; 4],
            channels: 2,
            plane: 2,
        };
        let draws = vec![
            vec![10.0, -10.0, 1e-2, 2e-2],
            vec![10.0, -10.0, 1e-2, 2e-2 + 2e-5],
        ];
        let e = ensemble(&draws, &[10.0, -10.0, 1e-2, 2e-2], &two);
        assert_eq!(e.determined, 0.75);
    }

    /// The conformal scale worked by hand: scores 0.1, 0.2, ..., 1.0 over ten undetermined
    /// entries (one observed and one determined left out); at 0.8 coverage the
    /// ceil(11 * 0.8) = 9th smallest, 0.9, after which the band covers 9 of the 10.
    #[test]
    fn conformal_scale_by_hand() {
        let n = 12;
        let mean = vec![0f32; n];
        let mut std = vec![0.5f32; n];
        std[11] = 0.0; // determined (truth 0 too)
        let mut truth: Vec<f32> = (1..=n).map(|i| i as f32 / 10.0).collect();
        truth[11] = 0.0;
        let mut mask = vec![true; n];
        mask[10] = false;
        let unknown = one_channel(mask);
        truth[10] = 99.0; // observed: never scored
        let s = conformal_scale(&mean, &std, &truth, &unknown, 0.8).unwrap();
        assert!((s - 0.9).abs() < 1e-6, "{s}");
        let wide: Vec<f32> = std.iter().map(|v| v * s as f32).collect();
        let (cov, det) = band(&mean, &wide, &truth, &unknown);
        assert!((cov - 0.9).abs() < 1e-12, "{cov}");
        assert!((det - 1.0 / 11.0).abs() < 1e-12, "{det}");
        // asking for more than n allows takes the largest score
        let s = conformal_scale(&mean, &std, &truth, &unknown, 0.99).unwrap();
        assert!((s - 1.0).abs() < 1e-6, "{s}");
        let none = one_channel(vec![false; 12]);
        assert!(conformal_scale(&mean, &std, &truth, &none, 0.9).is_none());
    }

    #[test]
    fn percent_cells_keep_small_figures_visible() {
        let f = |median, mean| Figure { median, mean }.percent();
        assert_eq!(f(0.0525, 0.06), "5.25 % (6.00 %)");
        assert_eq!(f(2.1e-9, 0.0), "2.1e-7 % (0.00 %)");
        assert_eq!(f(4.9e-5, 5e-5), "4.9e-3 % (0.01 %)");
    }

    /// Parts fixed by the task and parts found per problem from its mask score the same points.
    #[test]
    fn part_scores_by_parts_and_by_mask() {
        let pde = Pde::parse("darcy").unwrap();
        let grid = crate::pde::Grid::new(4).unwrap();
        let plane = grid.len();
        let truth: Vec<f32> = (0..2 * 2 * plane).map(|i| 1.0 + i as f32).collect();
        let mut x = truth.clone();
        x[plane] *= 1.5; // problem 0, u, first point
        x[2 * plane] = 0.0; // problem 1, a, first point: the wrong side of the threshold
        let task = crate::pde::Task::Forward;
        let fwd = pde.family().scored(task, grid);
        let mask: Vec<f32> = [
            pde.family().task_mask(task, grid),
            pde.family().task_mask(task, grid),
        ]
        .concat();
        let a = part_scores(&pde, &x, &truth, plane, Some(&fwd), &mask);
        let b = part_scores(&pde, &x, &truth, plane, None, &mask);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].channel, "u");
        assert_eq!(a[0].values, b[0].values);
        let u0: f64 = (1..=plane).map(|v| (v as f64 + plane as f64).powi(2)).sum();
        let want = 0.5 * (1.0 + plane as f64) / u0.sqrt();
        assert!((a[0].values[0] - want).abs() < 1e-12, "{:?}", a[0].values);
        assert_eq!(a[0].values[1], 0.0);
        // the inverse task scores a by its error rate: one point of 16 wrong in problem 1
        let inv = pde.family().scored(crate::pde::Task::Inverse, grid);
        let c = part_scores(&pde, &x, &truth, plane, Some(&inv), &mask);
        assert_eq!(c[0].values, vec![0.0, 1.0 / 16.0]);
        assert_eq!(figure(&[3.0, 1.0, 2.0, 10.0]).median, 2.5);
    }
}
