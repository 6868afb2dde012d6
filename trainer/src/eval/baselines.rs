//! The paper's comparison on one family's test set: the teacher, PIDM, DiffusionPDE and ECI-sampling
//! beside the students, one row per method, on the same noise draws and problems as `eval`.
//!
//! Generation: every method from the same `samples` noise draws; residual (per-sample mean of R^2
//! where the PDE holds, physical units), MMSE / SMSE against the test set (normalised units), NFE
//! per sample (a backward pass counts as one) and seconds per sample, all measured in this run on
//! the same threads. Conditional tasks (forward, inverse, 3 % sparse): the methods that answer them
//! (DiffusionPDE, ECI, and the students' solve), scored with the family's metrics; every answer keeps
//! the observed entries (x_mix), as the runtime's do.

use super::method::Method;
use super::metrics::{gen_metrics, test_reference, ChannelError, Figure, GenMetrics, BATCH};
use super::problems::{draws, ProblemTask, Problems};
use crate::checkpoint::{load_for, CheckpointMeta, Net, PidmInfo, Role};
use crate::config::{InferConfig, Preset};
use crate::data::Dataset;
use crate::diffusion::sampler::{sample, Correction, Gradient, Hook, HookKind};
use crate::pde::ops::Tch;
use crate::pde::Pde;
use crate::physics::objective::emit_x_mix;
use crate::physics::ResidualOp;
use crate::stages::{solve::Student, RunPaths};
use crate::util::plot::{save_scatter_loglog, Point};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Kind, Tensor};

/// The goal, in numbers: PIDDM-1's residual against the lowest baseline's, its speed against
/// DiffusionPDE's (as run and at the published steps), its MMSE / SMSE against the teacher's.
#[derive(Clone, Debug, PartialEq)]
pub struct Goal {
    pub lowest_baseline: String,
    /// PIDDM-1's residual / the lowest baseline residual (goal: below 1).
    pub residual_ratio: f64,
    /// DiffusionPDE's seconds per sample / PIDDM-1's (goal: at least 30).
    pub speedup: f64,
    pub speedup_published: Option<f64>,
    /// PIDDM-1's MMSE and SMSE / the teacher's (goal: at most 1.5).
    pub mmse_ratio: f64,
    pub smse_ratio: f64,
    /// The same three ratios of the shipped model's samples (`piddm_one_call`), where it was run.
    pub shipped: Option<[f64; 3]>,
}

impl Goal {
    pub const SPEEDUP: f64 = 30.0;
    pub const STATS: f64 = 1.5;

    /// None when a row it needs (piddm_1, teacher, diffusionpde) is missing.
    pub fn of(generation: &BTreeMap<String, GenRow>) -> Option<Goal> {
        let (p, t, d) = (
            generation.get(Method::Piddm1.name())?,
            generation.get(Method::Teacher.name())?,
            generation.get(Method::DiffusionPde.name())?,
        );
        let (name, low) = Method::ALL
            .iter()
            .filter(|m| m.is_baseline())
            .filter_map(|m| generation.get(m.name()).map(|r| (m.name(), r.residual)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some(Goal {
            lowest_baseline: name.to_string(),
            residual_ratio: p.residual / low,
            speedup: d.seconds_per_sample / p.seconds_per_sample,
            speedup_published: d
                .seconds_per_sample_at_published_steps
                .map(|s| s / p.seconds_per_sample),
            mmse_ratio: p.mmse / t.mmse,
            smse_ratio: p.smse / t.smse,
            shipped: generation
                .get(Method::ShippedOneCall.name())
                .map(|g| [g.residual / low, g.mmse / t.mmse, g.smse / t.smse]),
        })
    }

    pub fn markdown(&self) -> String {
        let met = |ok: bool| if ok { "met" } else { "missed" };
        format!(
            "Goal: residual below every baseline's: {} (PIDDM-1 / {} = {:.3}); at least {}x less time \
             than DiffusionPDE: {} ({:.0}x as run{}); MMSE and SMSE at most {}x the teacher's: {} \
             ({:.2}x, {:.2}x).\n",
            met(self.residual_ratio < 1.0),
            self.lowest_baseline,
            self.residual_ratio,
            Self::SPEEDUP,
            met(self.speedup >= Self::SPEEDUP),
            self.speedup,
            self.speedup_published
                .map(|s| format!(", {s:.0}x at {DIFFUSIONPDE_PUBLISHED_STEPS} steps"))
                .unwrap_or_default(),
            Self::STATS,
            met(self.mmse_ratio <= Self::STATS && self.smse_ratio <= Self::STATS),
            self.mmse_ratio,
            self.smse_ratio,
        )
    }
}

/// DiffusionPDE's published setting, for the extrapolated cost.
pub const DIFFUSIONPDE_PUBLISHED_STEPS: usize = 2000;

#[derive(clap::Args, Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Generated samples per method (the same noise draws for all).
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Problems per conditional task.
    #[arg(long, default_value_t = 16)]
    pub problems: usize,
    /// Heun steps of DiffusionPDE's guided sampler.
    #[arg(long, default_value_t = 100)]
    pub dps_steps: usize,
    /// DiffusionPDE's observation weight (on the mean over C, H, W of the squared misfit,
    /// normalised units).
    #[arg(long, default_value_t = 1000.0)]
    pub zeta_obs: f64,
    /// DiffusionPDE's PDE weight (on the mean of R^2 where the PDE holds, physical units).
    #[arg(long, default_value_t = 1e-3)]
    pub zeta_pde: f64,
    /// Steps of ECI-sampling (first order: one network evaluation each).
    #[arg(long, default_value_t = 35)]
    pub eci_steps: usize,
    /// Adam steps of PIDDM-ref on lambda_infer * ||R||^2 (the preset's lambda and learning rate).
    #[arg(long, default_value_t = 10)]
    pub ref_steps: usize,
    /// Only these methods (comma-separated; default all), e.g. for a sweep of DiffusionPDE's
    /// weights.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<Method>,
    /// The exported model whose rows `piddm_one_call` and `piddm_card` are (through the runtime,
    /// as a solver calls it); without it those rows are left out.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
}

/// A generation row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenRow {
    pub residual: f64,
    pub residual_std: f64,
    pub mmse: f64,
    pub smse: f64,
    /// ||R|| / ||source term|| per sample, median (mean); absent in reports written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_residual: Option<Figure>,
    /// ||u - S(input)|| / ||S(input)|| per sample, median (mean); absent in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Figure>,
    pub nfe: usize,
    pub seconds_per_sample: f64,
    /// DiffusionPDE only: the cost at its published step count, extrapolated linearly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_sample_at_published_steps: Option<f64>,
}

impl GenRow {
    fn of(m: GenMetrics) -> Self {
        GenRow {
            residual: m.residual_mse,
            residual_std: m.residual_std,
            mmse: m.mmse,
            smse: m.smse,
            relative_residual: Some(m.relative_residual),
            consistency: Some(m.consistency),
            nfe: m.nfe,
            seconds_per_sample: m.seconds_per_sample,
            seconds_per_sample_at_published_steps: None,
        }
    }
}

/// A conditional row: the errors of the task's scored parts, cost per problem.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRow {
    pub errors: Vec<ChannelError>,
    /// Mean R^2 of the answers where the PDE holds.
    pub residual: f64,
    pub nfe: usize,
    pub seconds_per_problem: f64,
}

/// One family's comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FamilyReport {
    pub command: String,
    pub preset: String,
    pub settings: Settings,
    /// PIDM's residual weight and training steps beyond the teacher.
    pub pidm: Option<PidmInfo>,
    pub pidm_steps: Option<u64>,
    pub heun_steps: usize,
    pub infer: InferConfig,
    pub test_residual: f64,
    pub generation: BTreeMap<String, GenRow>,
    pub forward: BTreeMap<String, TaskRow>,
    pub inverse: BTreeMap<String, TaskRow>,
    pub sparse: BTreeMap<String, TaskRow>,
    /// Later runs of some methods that replaced their rows: (methods, command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<(Vec<Method>, String)>,
}

/// The checkpoints of a pipeline run directory and a PIDM teacher.
pub struct Inputs {
    pub run: PathBuf,
    pub pidm: Option<PathBuf>,
    pub command: String,
}

/// A student a wanted row uses (wanting one loads both).
fn student<'s, 'a>(s: &'s Option<Student<'a>>) -> Result<&'s Student<'a>> {
    s.as_ref().context("the students were not loaded")
}

fn load(path: &Path, role: Role, test: &Dataset) -> Result<(Net, CheckpointMeta)> {
    load_for(path, role, &test.meta).with_context(|| format!("loading {}", path.display()))
}

pub fn compare(preset: &Preset, settings: &Settings, inp: &Inputs) -> Result<FamilyReport> {
    let wanted = |m: Method| settings.methods.is_empty() || settings.methods.contains(&m);
    if wanted(Method::Pidm) && inp.pidm.is_none() {
        bail!("pidm needs --pidm (a checkpoint from `piddm-train pidm`), or leave it out with --methods");
    }
    let paths = RunPaths::new(&inp.run);
    let test = Dataset::load(&paths.test)?;
    let shipped = match &settings.model {
        Some(path) if Method::ALL.iter().any(|&m| m.is_shipped() && wanted(m)) => {
            Some(piddm::Model::load(path, &piddm::Options::default())?)
        }
        _ => None,
    };
    // The teacher only where a row samples it: the exported model's rows need none.
    let teacher = Method::ALL
        .into_iter()
        .any(|m| m.is_baseline() && wanted(m))
        .then(|| load(&paths.teacher, Role::Teacher, &test))
        .transpose()?;
    // A sweep of the teacher's samplers needs no students (nor their checkpoints yet).
    let students = Method::ALL
        .into_iter()
        .any(|m| m.needs_students() && wanted(m));
    let load_student = |path: &Path| -> Result<Option<(Net, CheckpointMeta)>> {
        students
            .then(|| load(path, Role::Student, &test))
            .transpose()
    };
    let s0 = load_student(&paths.student_lambda0)?;
    let s1 = load_student(&paths.student)?;
    // The training set's normalisation: a checkpoint's, or the exported model's card's.
    let norm = match (&teacher, &s1, &shipped) {
        (Some((_, m)), _, _) | (None, Some((_, m)), _) => m.data.normalisation.clone(),
        (None, None, Some(model)) => crate::data::normalisation::Normalisation {
            mean: model.card().normalisation.mean.clone(),
            scale: model.card().normalisation.scale.clone(),
        },
        (None, None, None) => bail!("no method to run: give --model for the exported model's rows"),
    };
    if let Some(model) = &shipped {
        let c = model.card();
        if c.pde.name != test.meta.pde.name() || c.grid.nx != test.meta.grid.n {
            bail!(
                "{} is a {} model on {} points, the test set {} on {}",
                settings.model.as_ref().unwrap().display(),
                c.pde.name,
                c.grid.nx,
                test.meta.pde.name(),
                test.meta.grid.n
            );
        }
    }
    let pidm = match &inp.pidm {
        Some(p) => {
            let (net, meta) = load(p, Role::Teacher, &test)?;
            if meta.pidm.is_none() {
                bail!("{} is a plain teacher, not a PIDM one", p.display());
            }
            if meta.data.normalisation != norm {
                bail!("{} was trained on another data set", p.display());
            }
            Some((net, meta))
        }
        None => None,
    };
    let norm = &norm;
    let op = ResidualOp {
        pde: test.meta.pde,
        grid: test.meta.grid,
    };
    let pde = test.meta.pde;
    let edm = teacher
        .as_ref()
        .map_or(crate::diffusion::edm::Edm::default(), |(_, m)| m.edm);
    let dev = teacher
        .as_ref()
        .map_or(tch::Device::Cpu, |(n, _)| n.vs.device());
    let teacher_net = || -> Result<&crate::nets::UNet> {
        Ok(&teacher
            .as_ref()
            .context("the teacher was not loaded")?
            .0
            .net)
    };
    let count = settings.samples.max(2) as i64;
    let mut p_preset = preset.clone();
    p_preset.eval.problems = settings.problems;
    let (eps, problems) = draws(&p_preset, &test, count, dev)?;
    let (_, reference, test_residual) = test_reference(&test, norm, &op, dev)?;
    let heun_steps = s1.as_ref().map_or(preset.sampler.steps, |(_, m)| {
        m.heun_steps(preset.sampler.steps)
    });
    let fixed = pde.family().fixed_zero(test.meta.grid);
    let (st0, st1) = (
        s0.as_ref().map(|(n, m)| Student::of(n, m)),
        s1.as_ref().map(|(n, m)| Student::of(n, m)),
    );
    let refine_cfg = InferConfig {
        steps: settings.ref_steps,
        ..preset.infer.clone()
    };

    // Generation.
    let mut generation = BTreeMap::new();
    let mut row =
        |name: Method, nfe: usize, run: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<()> {
            if !wanted(name) {
                return Ok(());
            }
            eprintln!(
                "baselines: {} generation, {count} samples, {nfe} NFE each",
                name
            );
            let t = Instant::now();
            let parts = eps
                .split(BATCH, 0)
                .iter()
                .map(run)
                .collect::<Result<Vec<_>>>()?;
            let (x, secs) = (Tensor::cat(&parts, 0), t.elapsed().as_secs_f64());
            if !bool::try_from(x.isfinite().all())? {
                eprintln!("baselines: {name} produced non-finite values");
            }
            let mut r = GenRow::of(gen_metrics(&x, &reference, norm, &op, nfe, secs)?);
            if name == Method::DiffusionPde {
                r.seconds_per_sample_at_published_steps = Some(
                    r.seconds_per_sample * DIFFUSIONPDE_PUBLISHED_STEPS as f64
                        / settings.dps_steps as f64,
                );
            }
            generation.insert(name.name().to_string(), r);
            Ok(())
        };
    let none = Hook::None;
    row(Method::Teacher, HookKind::None.nfe(heun_steps), &|e| {
        Ok(norm.to_physical(&sample(&edm, teacher_net()?, e, heun_steps, &none)))
    })?;
    if let Some((net, _)) = &pidm {
        row(Method::Pidm, HookKind::None.nfe(heun_steps), &|e| {
            Ok(norm.to_physical(&sample(&edm, &net.net, e, heun_steps, &none)))
        })?;
    }
    let guide = |observed: &Tensor, mask: &Tensor| {
        Hook::Gradient(Gradient {
            op,
            norm,
            observed: observed.shallow_clone(),
            mask: mask.shallow_clone(),
            zeta_obs: settings.zeta_obs,
            zeta_pde: settings.zeta_pde,
        })
    };
    let dps_nfe = HookKind::Gradient.nfe(settings.dps_steps);
    row(Method::DiffusionPde, dps_nfe, &|e| {
        let z = e.zeros_like();
        let x = sample(&edm, teacher_net()?, e, settings.dps_steps, &guide(&z, &z));
        Ok(norm.to_physical(&x))
    })?;
    let eci_nfe = HookKind::Correction.nfe(settings.eci_steps);
    row(Method::Eci, eci_nfe, &|e| {
        let z = e.zeros_like();
        let hook = Hook::Correction(Correction::new(norm, &z, &z, &fixed)?);
        Ok(norm.to_physical(&sample(&edm, teacher_net()?, e, settings.eci_steps, &hook)))
    })?;
    row(Method::StudentLambda0, 1, &|e| {
        Ok(student(&st0)?.generate(e))
    })?;
    row(Method::Piddm1, 1, &|e| Ok(student(&st1)?.generate(e)))?;
    let ref_nfe = 2 * (settings.ref_steps + 1);
    row(Method::PiddmRef, ref_nfe, &|e| {
        Ok(student(&st1)?.refine(e, &refine_cfg)?.x)
    })?;
    let model = || {
        shipped
            .as_ref()
            .context("the exported model was not loaded (--model)")
    };
    if shipped.is_some() {
        row(Method::ShippedOneCall, 1, &|e| {
            let m = model()?;
            let b = e.size()[0] as usize;
            let mut x = vec![0f32; e.numel()];
            m.generate_from(&crate::util::tensor::to_f32(e), b, &mut x, None)?;
            Ok(Tensor::from_slice(&x).reshape(e.size()))
        })?;
    }

    // Conditional tasks.
    let p = problems.truth.size()[0];
    let mut tasks: Vec<BTreeMap<String, TaskRow>> = Vec::new();
    for task in &problems.tasks {
        let mut rows = BTreeMap::new();
        let observed = problems
            .truth
            .where_self(&task.mask.gt(0.5), &problems.truth.zeros_like());
        let mut answer =
            |name: Method, nfe: usize, run: &dyn Fn() -> Result<Tensor>| -> Result<()> {
                if !wanted(name) {
                    return Ok(());
                }
                eprintln!("baselines: {name} on {} ({p} problems)", task.name);
                let t = Instant::now();
                let x = run()?;
                let secs = t.elapsed().as_secs_f64() / p as f64;
                let x = emit_x_mix(&mut Tch, &x, &observed, &task.mask);
                rows.insert(
                    name.name().to_string(),
                    task_row(&problems, &pde, &op, &x, task, nfe, secs)?,
                );
                Ok(())
            };
        answer(Method::DiffusionPde, dps_nfe, &|| {
            let x = sample(
                &edm,
                teacher_net()?,
                &problems.eps,
                settings.dps_steps,
                &guide(&observed, &task.mask),
            );
            Ok(norm.to_physical(&x))
        })?;
        answer(Method::Eci, eci_nfe, &|| {
            let hook = Hook::Correction(Correction::new(norm, &observed, &task.mask, &fixed)?);
            Ok(norm.to_physical(&sample(
                &edm,
                teacher_net()?,
                &problems.eps,
                settings.eci_steps,
                &hook,
            )))
        })?;
        let solve_nfe = 2 * (preset.infer.steps + 1);
        answer(Method::StudentLambda0, solve_nfe, &|| {
            Ok(student(&st0)?
                .solve(&problems.eps, &problems.truth, &task.mask, &preset.infer)?
                .x)
        })?;
        answer(Method::PiddmRef, solve_nfe, &|| {
            Ok(student(&st1)?
                .solve(&problems.eps, &problems.truth, &task.mask, &preset.infer)?
                .x)
        })?;
        if let Some(m) = &shipped {
            // through the runtime, as a solver calls it: the mask and the observations in
            // physical units; z drawn from seed 0 (the problems' eps are the random start's)
            let d = m.default_solve_params();
            let mask: Vec<u8> = crate::util::tensor::to_f32(&task.mask)
                .iter()
                .map(|&v| (v > 0.5) as u8)
                .collect();
            let obs = crate::util::tensor::to_f32(&observed);
            // the encoder and the student, then a forward and a backward pass per step
            let card_nfe = |steps: usize| 2 + 2 * steps;
            for (method, params) in [
                (
                    Method::ShippedOneCall,
                    piddm::SolveParams {
                        steps: 0,
                        start: piddm::card::Start::Amortised,
                        ..d
                    },
                ),
                (Method::ShippedCard, d),
            ] {
                if params.start == piddm::card::Start::Amortised && !m.has_amortised() {
                    continue; // no encoder: no one-call answer
                }
                answer(method, card_nfe(params.steps), &|| {
                    let mut x = vec![0f32; obs.len()];
                    m.solve(&obs, &mask, p as usize, &params, &mut x)?;
                    Ok(Tensor::from_slice(&x).reshape(problems.truth.size()))
                })?;
            }
        }
        tasks.push(rows);
    }
    let [forward, inverse, sparse]: [BTreeMap<String, TaskRow>; 3] = tasks
        .try_into()
        .map_err(|_| anyhow::anyhow!("three tasks expected"))?;
    Ok(FamilyReport {
        command: inp.command.clone(),
        preset: preset.name.clone(),
        settings: settings.clone(),
        pidm: pidm.as_ref().and_then(|(_, m)| m.pidm.clone()),
        pidm_steps: pidm
            .as_ref()
            .and_then(|(_, m)| m.pidm.as_ref().map(|i| m.step - i.teacher_step)),
        heun_steps,
        infer: preset.infer.clone(),
        test_residual,
        generation,
        forward,
        inverse,
        sparse,
        updates: Vec::new(),
    })
}

fn task_row(
    problems: &Problems,
    pde: &Pde,
    op: &ResidualOp,
    x: &Tensor,
    task: &ProblemTask,
    nfe: usize,
    secs: f64,
) -> Result<TaskRow> {
    Ok(TaskRow {
        errors: problems.score(pde, x, task)?,
        residual: f64::try_from(
            op.mse_per_sample(&x.to_kind(Kind::Double))
                .mean(Kind::Double),
        )?,
        nfe,
        seconds_per_problem: secs,
    })
}

/// Every family's report in `path` (a JSON object keyed by family), or none.
pub fn read_all(path: &Path) -> Result<BTreeMap<String, FamilyReport>> {
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a baselines report", path.display()))
}

/// Adds (or replaces) `pde`'s report in `dir`/baselines.json, rewrites baselines.md from every
/// family's, and draws `dir`/baselines-<pde>.png (residual against seconds per sample).
pub fn write(dir: &Path, pde: &str, report: &FamilyReport) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    // Families compared at the same time each merge their own rows: one writer at a time.
    let lock = std::fs::File::create(dir.join("baselines.lock"))?;
    lock.lock()
        .with_context(|| format!("locking {}", dir.display()))?;
    let json = dir.join("baselines.json");
    let mut all = read_all(&json)?;
    let entry = all.entry(pde.to_string()).or_insert_with(|| report.clone());
    // A run of some methods (a sweep) updates their rows only.
    if !report.settings.methods.is_empty() {
        let extend = |mine: &mut BTreeMap<String, TaskRow>, theirs: &BTreeMap<String, TaskRow>| {
            mine.extend(theirs.iter().map(|(k, v)| (k.clone(), v.clone())))
        };
        entry.generation.extend(
            report
                .generation
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        extend(&mut entry.forward, &report.forward);
        extend(&mut entry.inverse, &report.inverse);
        extend(&mut entry.sparse, &report.sparse);
        let methods = report.settings.methods.clone();
        entry.updates.retain(|(m, _)| *m != methods);
        entry.updates.push((methods, report.command.clone()));
    } else {
        *entry = report.clone();
    }
    let tmp = dir.join("baselines.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&all)? + "\n")?;
    std::fs::rename(&tmp, &json)?;
    render(dir, &all)
}

/// Writes `baselines.md` and each family's figure from the report (`piddm-train baselines-report`
/// redraws them from `baselines.json` alone).
pub fn render(dir: &Path, all: &BTreeMap<String, FamilyReport>) -> Result<()> {
    std::fs::write(dir.join("baselines.md"), markdown(all))?;
    all.iter()
        .try_for_each(|(pde, entry)| figure(dir, pde, entry))
}

fn figure(dir: &Path, pde: &str, entry: &FamilyReport) -> Result<()> {
    let points: Vec<Point> = Method::ALL
        .iter()
        .filter_map(|m| {
            entry.generation.get(m.name()).map(|r| Point {
                label: m.to_string(),
                x: r.seconds_per_sample,
                y: r.residual,
            })
        })
        .collect();
    save_scatter_loglog(
        &dir.join(format!("baselines-{pde}.png")),
        &format!("{pde}: PDE residual against cost, one point per method"),
        "seconds per sample",
        "mean R^2 (physical units)",
        &points,
    )
}

/// The best method of a column (lowest value) among `rows`.
fn best<R>(rows: &BTreeMap<String, R>, value: impl Fn(&R) -> f64) -> Option<&str> {
    rows.iter()
        .filter(|(_, r)| value(r).is_finite())
        .min_by(|a, b| value(a.1).total_cmp(&value(b.1)))
        .map(|(k, _)| k.as_str())
}

pub fn markdown(all: &BTreeMap<String, FamilyReport>) -> String {
    let mut s = String::from(
        "# Baselines beside PIDDM\n\nOne section per family: the same test set, noise draws and problems for every \
         method, measured in one run on the same threads. Residual: per-sample mean of R^2 where the PDE \
         holds, physical units (mean ± std over samples); MMSE / SMSE against the test set in normalised \
         units; NFE per sample, a backward pass counting as one. Conditional answers keep the observed \
         entries. piddm_one_call and piddm_card are the shipped model through the runtime (`--model`), \
         as a solver calls it: its one-step samples and its amortised encoder's one-call answer, and \
         its answer with the card's solve defaults, corrections and settling included; the other \
         PIDDM rows are the pipeline's student checkpoints in libtorch, before corrections.\n",
    );
    let goals: BTreeMap<&String, Goal> = all
        .iter()
        .filter_map(|(pde, r)| Goal::of(&r.generation).map(|g| (pde, g)))
        .collect();
    if !goals.is_empty() {
        s += &format!(
            "\nThe goal per family: PIDDM-1's residual below every baseline's (teacher, PIDM, DiffusionPDE, \
             ECI), at least {}x less time per sample than DiffusionPDE, MMSE and SMSE at most {}x the \
             teacher's.\n\n| family | lowest baseline | PIDDM-1 / it | DiffusionPDE's time / PIDDM-1's (as \
             run; at {DIFFUSIONPDE_PUBLISHED_STEPS} steps) | MMSE, SMSE / teacher's | shipped model's samples: \
             residual / the lowest baseline's; MMSE, SMSE / teacher's |\n|---|---|---|---|---|---|\n",
            Goal::SPEEDUP,
            Goal::STATS
        );
        for (pde, g) in &goals {
            s += &format!(
                "| {pde} | {} | {:.3} | {:.0}x; {} | {:.2}, {:.2} | {} |\n",
                g.lowest_baseline,
                g.residual_ratio,
                g.speedup,
                g.speedup_published
                    .map_or("-".into(), |v| format!("{v:.0}x")),
                g.mmse_ratio,
                g.smse_ratio,
                g.shipped
                    .map_or("-".into(), |[r, m, sd]| format!("{r:.1e}; {m:.2}, {sd:.2}"))
            );
        }
    }
    for (pde, r) in all {
        s += &format!(
            "\n## {pde}\n\nProduced by `{}` (preset `{}`). Teacher: {} Heun steps. DiffusionPDE: {} Heun \
             steps, zeta_obs {:e}, zeta_pde {:e}. ECI: {} steps. PIDDM-ref: {} Adam steps at lambda_infer \
             {:e}. Students' solves: {} steps, lambda_infer {:e}. PIDM: {}. Test set's own residual: {:.2e}. \
             Relative residual: ||R|| / ||source term||; consistency: ||u - S(input)|| / ||S(input)||, S the \
             family's solver of the sample's own input; per sample, median (mean).\n\n",
            r.command,
            r.preset,
            r.heun_steps,
            r.settings.dps_steps,
            r.settings.zeta_obs,
            r.settings.zeta_pde,
            r.settings.eci_steps,
            r.settings.ref_steps,
            r.infer.lambda,
            r.infer.steps,
            r.infer.lambda,
            match (&r.pidm, r.pidm_steps) {
                (Some(i), Some(k)) => format!(
                    "residual weight {:e}, {k} steps continuing the teacher from step {}",
                    i.weight, i.teacher_step
                ),
                _ => "not run".into(),
            },
            r.test_residual
        );
        for (methods, command) in &r.updates {
            let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
            s += &format!("Rows {} from `{command}`.\n\n", names.join(", "));
        }
        s += "| method | NFE | residual | MMSE | SMSE | relative residual | consistency | s / sample |\n|---|---|---|---|---|---|---|---|\n";
        for m in Method::ALL {
            let Some(g) = r.generation.get(m.name()) else {
                continue;
            };
            let extra = g
                .seconds_per_sample_at_published_steps
                .map(|v| format!(" ({v:.1} at {DIFFUSIONPDE_PUBLISHED_STEPS} steps)"))
                .unwrap_or_default();
            let pct = |f: &Option<Figure>| f.as_ref().map_or("-".into(), Figure::percent);
            s += &format!(
                "| {m} | {} | {:.3e} ± {:.2e} | {:.3e} | {:.3e} | {} | {} | {:.4}{extra} |\n",
                g.nfe,
                g.residual,
                g.residual_std,
                g.mmse,
                g.smse,
                pct(&g.relative_residual),
                pct(&g.consistency),
                g.seconds_per_sample
            );
        }
        let g = &r.generation;
        s += &format!(
            "\nLowest residual: {}; lowest MMSE: {}; lowest SMSE: {}; fastest: {}.\n",
            best(g, |x| x.residual).unwrap_or("-"),
            best(g, |x| x.mmse).unwrap_or("-"),
            best(g, |x| x.smse).unwrap_or("-"),
            best(g, |x| x.seconds_per_sample).unwrap_or("-"),
        );
        if let Some(goal) = goals.get(pde) {
            s += &format!("\n{}", goal.markdown());
        }
        s += "\n| task | method | NFE | errors | residual | s / problem |\n|---|---|---|---|---|---|\n";
        for (task, rows) in [
            ("forward", &r.forward),
            ("inverse", &r.inverse),
            ("sparse", &r.sparse),
        ] {
            for m in Method::ALL {
                let Some(t) = rows.get(m.name()) else {
                    continue;
                };
                let errors: Vec<String> = t
                    .errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} of {} {:.2} %",
                            e.metric.label(),
                            e.channel,
                            100.0 * e.value
                        )
                    })
                    .collect();
                s += &format!(
                    "| {task} | {m} | {} | {} | {:.3e} | {:.3} |\n",
                    t.nfe,
                    errors.join("; "),
                    t.residual,
                    t.seconds_per_problem
                );
            }
            let first = |t: &TaskRow| t.errors.first().map_or(f64::NAN, |e| e.value);
            if let Some(b) = best(rows, first) {
                s += &format!("| {task} | lowest first error: {b} | | | | |\n");
            }
        }
    }
    s
}

/// `piddm-train baselines`: the comparison of `inputs` merged into `dir`'s report; returns the
/// report's markdown.
pub fn run(preset: &Preset, settings: &Settings, inputs: &Inputs, dir: &Path) -> Result<String> {
    let r = compare(preset, settings, inputs)?;
    write(dir, preset.data.pde.name(), &r)?;
    Ok(std::fs::read_to_string(dir.join("baselines.md"))?)
}

/// `piddm-train baselines-report`: the markdown and figures redrawn from `dir`/baselines.json.
pub fn redraw(dir: &Path) -> Result<String> {
    render(dir, &read_all(&dir.join("baselines.json"))?)?;
    Ok(std::fs::read_to_string(dir.join("baselines.md"))?)
}
