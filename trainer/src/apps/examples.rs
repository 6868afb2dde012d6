//! What the solver examples in `examples/` read and write, and their report.
//!
//! The examples (Fortran and C++ programs linking the runtime) take their Darcy problems from a
//! *field file* written here by the numerical solver, so the coefficients are fresh draws the model
//! never saw and every example sees the same ones. A field file is raw little-endian:
//!   8 bytes "PIDDMF32", then u32 count, channels, ny, nx, then count*channels*ny*nx float32
//!   laid out [count][channel][ny][nx] (Fortran: x(nx, ny, channels, count)).
//! A problems file has three channels: a, the solver's u (relative residual <= 1e-10), and f.
//! The examples write their numbers as `key = value` lines and their fields as field files;
//! `report` turns a directory of them into one summary table and PNG figures.

use crate::pde::{Grid, Pde};
use crate::util::plot::{save_fields, Column};
use anyhow::{bail, ensure, Context, Result};
use piddm::card::ModelCard;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"PIDDMF32";

/// Fields [count][channels][ny][nx], float32.
pub struct FieldFile {
    pub count: usize,
    pub channels: usize,
    pub ny: usize,
    pub nx: usize,
    pub data: Vec<f32>,
}

impl FieldFile {
    pub fn plane(&self) -> usize {
        self.ny * self.nx
    }
    /// Channel `c` of sample `s`, row-major [ny][nx].
    pub fn field(&self, s: usize, c: usize) -> &[f32] {
        let p = self.plane();
        let start = (s * self.channels + c) * p;
        &self.data[start..start + p]
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        ensure!(
            self.data.len() == self.count * self.channels * self.plane(),
            "field file: {} values for shape [{}, {}, {}, {}]",
            self.data.len(),
            self.count,
            self.channels,
            self.ny,
            self.nx
        );
        let mut bytes = Vec::with_capacity(24 + 4 * self.data.len());
        bytes.extend_from_slice(MAGIC);
        for d in [self.count, self.channels, self.ny, self.nx] {
            bytes.extend_from_slice(&u32::try_from(d)?.to_le_bytes());
        }
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        crate::util::fs::write_atomic(path, &bytes)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            bail!("{} is not a piddm field file", path.display());
        }
        let dim = |k: usize| u32::from_le_bytes(bytes[8 + 4 * k..12 + 4 * k].try_into().unwrap());
        let (count, channels, ny, nx) = (
            dim(0) as usize,
            dim(1) as usize,
            dim(2) as usize,
            dim(3) as usize,
        );
        let len = count * channels * ny * nx;
        ensure!(
            bytes.len() == 24 + 4 * len,
            "{} is truncated: {} bytes for shape [{count}, {channels}, {ny}, {nx}]",
            path.display(),
            bytes.len()
        );
        let data = bytes[24..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(FieldFile {
            count,
            channels,
            ny,
            nx,
            data,
        })
    }
}

/// The PDE of a model card, with its parameters, as the trainer knows it.
pub fn card_pde(card: &ModelCard) -> Result<Pde> {
    Pde::from_parts(&card.pde.name, &card.pde.parameters)
        .with_context(|| format!("the model card's PDE '{}'", card.pde.name))
}

/// `count` problems for a model card's PDE, parameters and grid, drawn from `seed` with the family's
/// numerical solver: [count][the model's channels][n][n], physical units.
pub fn problems(card: &ModelCard, count: usize, seed: u64) -> Result<FieldFile> {
    let pde = card_pde(card)?;
    let (c, ny, nx) = (card.channels.len(), card.grid.ny, card.grid.nx);
    ensure!(
        nx == ny && c == pde.channels().len(),
        "a {} model needs {} channels on a square grid, the card has {c} on {ny}x{nx}",
        pde.name(),
        pde.channels().len()
    );
    let sampler = pde.family().sampler(Grid::new(nx)?)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(count * c * nx * ny);
    for _ in 0..count {
        data.extend(sampler.sample(&mut rng)?.fields.iter().map(|&v| v as f32));
    }
    Ok(FieldFile {
        count,
        channels: c,
        ny,
        nx,
        data,
    })
}

/// `count` Darcy problems for the solver examples: [count][a, u, f][n][n], physical units (the
/// model's channels and the constant source the examples' own solvers need).
pub fn darcy_problems(card: &ModelCard, count: usize, seed: u64) -> Result<FieldFile> {
    let Pde::Darcy(params) = card_pde(card)? else {
        bail!(
            "the solver examples need a Darcy model, not a {} model",
            card.pde.name
        );
    };
    let mut p = problems(card, count, seed)?;
    let plane = p.nx * p.ny;
    p.data = p
        .data
        .chunks(2 * plane)
        .flat_map(|s| {
            s.iter()
                .copied()
                .chain(std::iter::repeat_n(params.source as f32, plane))
        })
        .collect();
    p.channels = 3;
    Ok(p)
}

/// How the surrogate's total time compares with the classical path's: "N x the time" when it is
/// slower, the saving in percent when it is faster.
fn time_change(classical: f64, surrogate: f64) -> String {
    if surrogate > classical {
        format!("{:.1}x the time", surrogate / classical)
    } else {
        format!("{:.1} % less time", 100.0 * (1.0 - surrogate / classical))
    }
}

/// The `key = value` lines the examples write.
pub fn read_kv(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// The number under `key`.
pub fn num(kv: &BTreeMap<String, String>, key: &str) -> Result<f64> {
    kv.get(key)
        .with_context(|| format!("missing `{key}`"))?
        .parse()
        .with_context(|| format!("`{key}` is not a number"))
}

fn figure(fields: &Path, png: &Path, columns: &[Column]) -> Result<()> {
    let f = FieldFile::read(fields)?;
    let rows: Vec<Vec<&[f32]>> = (0..f.count)
        .map(|s| (0..f.channels).map(|c| f.field(s, c)).collect())
        .collect();
    save_fields(png, &rows, f.nx, columns, 6)
}

/// The summary table of the examples' results in `dir`, with PNG figures written beside them.
pub fn report(dir: &Path) -> Result<String> {
    let mut out = String::from(
        "| example | measure | from zero / constant | from the surrogate | saving |\n|---|---|---|---|---|\n",
    );
    let mut figures = Vec::new();
    for lang in ["fortran", "cpp", "petsc"] {
        let kv_path = dir.join(format!("warm_start_{lang}.txt"));
        if !kv_path.exists() {
            continue;
        }
        let kv = read_kv(&kv_path)?;
        let name = format!(
            "warm start ({lang}, {} problems, {} rank(s))",
            num(&kv, "problems")?,
            num(&kv, "ranks")?
        );
        for tol in ["1e-4", "1e-6", "1e-8"] {
            let (z, s) = (
                num(&kv, &format!("iters_zero_{tol}"))?,
                num(&kv, &format!("iters_surrogate_{tol}"))?,
            );
            out += &format!(
                "| {name} | median CG iterations to {tol} | {z} | {s} | {:.1} % |\n",
                100.0 * (1.0 - s / z)
            );
            let (tz, ts) = (
                num(&kv, &format!("seconds_zero_{tol}"))?,
                num(&kv, &format!("seconds_surrogate_{tol}"))?,
            );
            let change = time_change(tz, ts);
            out += &format!(
                "| {name} | median seconds to {tol} (inference included) | {tz:.2e} | {ts:.2e} | {change} |\n"
            );
        }
        if kv.contains_key("surrogate_rel_l2_u") {
            out += &format!(
                "| {name} | surrogate u: relative L2 to the solver | | {:.2} % | |\n",
                100.0 * num(&kv, "surrogate_rel_l2_u")?
            );
        }
        if kv.contains_key("surrogate_initial_rel_residual") {
            out += &format!(
                "| {name} | relative residual of the start, norm(f - A u0) / norm(f) | 1 | {:.3} | |\n",
                num(&kv, "surrogate_initial_rel_residual")?
            );
        }
        let fields = dir.join(format!("warm_start_{lang}.f32"));
        if fields.exists() {
            let png = dir.join(format!("warm_start_{lang}.png"));
            figure(
                &fields,
                &png,
                &[
                    Column::field("a"),
                    Column::field("solver u"),
                    Column::field("surrogate u"),
                    Column::error("surrogate error"),
                ],
            )?;
            figures.push(format!(
                "{} (rows: problems; columns: a, solver u, surrogate u, surrogate error)",
                png.display()
            ));
        }
    }
    let kv_path = dir.join("inverse.txt");
    if kv_path.exists() {
        let kv = read_kv(&kv_path)?;
        let name = format!(
            "inverse ({} problems, {:.0} % of u observed)",
            num(&kv, "problems")?,
            100.0 * num(&kv, "observed_fraction")?
        );
        let (it_c, it_s) = (
            num(&kv, "iterations_constant")?,
            num(&kv, "iterations_surrogate_to_reach")?,
        );
        out += &format!(
            "| {name} | median L-BFGS iterations to the constant start's final misfit | {it_c} | {it_s} | {:.1} % |\n",
            100.0 * (1.0 - it_s / it_c)
        );
        let (c1, s1) = (
            num(&kv, "iterations_constant_to_1pct")?,
            num(&kv, "iterations_surrogate_to_1pct")?,
        );
        out += &format!(
            "| {name} | median iterations to within 1 % of that misfit | {c1} | {s1} | {:.1} % |\n",
            100.0 * (1.0 - s1 / c1)
        );
        let (sc, sr, si) = (
            num(&kv, "seconds_constant")?,
            num(&kv, "seconds_surrogate_to_reach")?,
            num(&kv, "surrogate_seconds_per_problem")?,
        );
        out += &format!(
            "| {name} | median seconds of those iterations (surrogate: + inference) | {sc:.3} | {sr:.3} + {si:.3} | {} |\n",
            time_change(sc, sr + si)
        );
        if kv.contains_key("seconds_constant_fair") {
            // each run to within 1 % of the better final misfit: what a user waits for either way
            let (fc, fs) = (
                num(&kv, "seconds_constant_fair")?,
                num(&kv, "seconds_surrogate_fair")?,
            );
            out += &format!(
                "| {name} | median seconds to within 1 % of the better final misfit ({} and {} iterations; surrogate: + inference) | {fc:.3} | {fs:.3} + {si:.3} | {} |\n",
                num(&kv, "iterations_constant_fair")?,
                num(&kv, "iterations_surrogate_fair")?,
                time_change(fc, fs + si)
            );
        }
        out += &format!(
            "| {name} | median error rate of a after the inversion | {:.2} % | {:.2} % | |\n",
            100.0 * num(&kv, "error_rate_a_constant")?,
            100.0 * num(&kv, "error_rate_a_surrogate")?
        );
        out += &format!(
            "| {name} | surrogate alone ({} seeds): error rate of the mean a; truth within 2 std | | {:.2} %; {:.1} % | |\n",
            num(&kv, "seeds")?,
            100.0 * num(&kv, "error_rate_a_surrogate_mean")?,
            100.0 * num(&kv, "coverage_2std")?
        );
        let fields = dir.join("inverse.f32");
        if fields.exists() {
            let png = dir.join("inverse.png");
            figure(
                &fields,
                &png,
                &[
                    Column::field("true a"),
                    Column::field("true u"),
                    Column::field("observed points"),
                    Column::field("surrogate mean a"),
                    Column::field("its std"),
                    Column::field("inversion from constant"),
                    Column::field("from surrogate"),
                ],
            )?;
            figures.push(format!(
                "{} (rows: problems; columns: true a, true u, observed points, surrogate mean a, its std, inversion from constant, from surrogate)",
                png.display()
            ));
        }
    }
    let kv_path = dir.join("posterior.txt");
    if kv_path.exists() {
        let kv = read_kv(&kv_path)?;
        let name = format!(
            "posterior ({} problems, {} sensors, noise {} of peak u)",
            num(&kv, "problems")?,
            num(&kv, "sensors")?,
            num(&kv, "noise")?
        );
        let pct = |k: &str| -> Result<String> { Ok(format!("{:.2} %", 100.0 * num(&kv, k)?)) };
        out += &format!(
            "| {name} | mean error rate of the posterior mean a (MCMC: {} x {} pCN steps; surrogate: {} one-call answers) | {} | {} | |\n",
            num(&kv, "chains")?,
            num(&kv, "steps")?,
            num(&kv, "answers")?,
            pct("error_rate_mcmc_mean")?,
            pct("error_rate_surrogate_mean")?
        );
        out += &format!(
            "| {name} | truth within mean +- 2 std | {} | {} | |\n",
            pct("coverage_mcmc")?,
            pct("coverage_surrogate")?
        );
        out += &format!(
            "| {name} | mean std of a; CRPS | {:.3}; {:.3} | {:.3}; {:.3} | std ratio {:.2} |\n",
            num(&kv, "sd_mcmc")?,
            num(&kv, "crps_mcmc")?,
            num(&kv, "sd_surrogate")?,
            num(&kv, "crps_surrogate")?,
            num(&kv, "sd_ratio")?
        );
        out += &format!(
            "| {name} | seconds (one chain; the surrogate's answers to one problem) | {:.2} | {:.3} | {:.0}x less time |\n",
            num(&kv, "mcmc_seconds_per_chain")?,
            num(&kv, "surrogate_seconds_per_problem")?,
            num(&kv, "time_ratio_chain_over_surrogate")?
        );
        out += &format!(
            "| {name} | MCMC convergence: max split R-hat; points over 1.1; effective samples | {:.2}; {}; {:.0} | | |\n",
            num(&kv, "rhat_max_median")?,
            pct("rhat_points_over_1.1")?,
            num(&kv, "ess")?
        );
        // the exact posterior again, chains moving about the surrogate's answers (written since the
        // guided sampler exists; older files lack it)
        if kv.contains_key("ess_guided") {
            out += &format!(
                "| {name} | exact sampler, pCN against about the answers: effective samples per second; per 1000 solves | {:.3}; {:.3} | {:.3}; {:.3} | {:.2}x per second |\n",
                num(&kv, "ess_per_second")?,
                1e3 * num(&kv, "ess_per_solve")?,
                num(&kv, "ess_per_second_guided")?,
                1e3 * num(&kv, "ess_per_solve_guided")?,
                num(&kv, "ess_per_second_guided")? / num(&kv, "ess_per_second")?
            );
            out += &format!(
                "| {name} | exact sampler: tuned beta; points over R-hat 1.1; steps to the typical misfit | {:.4}; {}; {:.0} | {:.4}; {}; {:.0} | |\n",
                num(&kv, "beta")?,
                pct("rhat_points_over_1.1")?,
                num(&kv, "steps_to_typical")?,
                num(&kv, "beta_guided")?,
                pct("rhat_points_over_1.1_guided")?,
                num(&kv, "steps_to_typical_guided")?
            );
            out += &format!(
                "| {name} | phases of the two samplers' means disagree (yardstick: pCN's chains split in halves) | {} | {} | |\n",
                pct("disagreement_mcmc_halves")?,
                pct("disagreement_guided_mcmc")?
            );
        }
        let fields = dir.join("posterior.f32");
        if fields.exists() {
            let png = dir.join("posterior.png");
            let titles = [
                "true a",
                "sensors",
                "MCMC mean a",
                "MCMC std",
                "surrogate mean a",
                "surrogate std",
            ];
            figure(&fields, &png, &titles.map(Column::field))?;
            figures.push(format!(
                "{} (rows: problems; columns: {})",
                png.display(),
                titles.join(", ")
            ));
        }
    }
    if !figures.is_empty() {
        out += "\n";
    }
    for f in figures {
        out += &format!("figure: {f}\n");
    }
    Ok(out)
}

/// `piddm-train problems`: `count` fresh Darcy problems for the model at `model` (its card is all it
/// reads: no ONNX Runtime session), as a field file at `out`.
pub fn write_problems(model: &Path, count: usize, seed: u64, out: &Path) -> Result<()> {
    let (card, _) = crate::export::read_card(model)?;
    darcy_problems(&card, count, seed)
        .with_context(|| model.display().to_string())?
        .write(out)?;
    eprintln!("wrote {count} problems to {}", out.display());
    Ok(())
}
