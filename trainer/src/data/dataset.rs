//! PDE data sets: generation with the numerical solver, and their safetensors file.
//!
//! File layout: one tensor `fields`, float32 [N, C, n, n] in physical units (channels in the PDE's
//! order), and the metadata key `piddm.dataset` holding [`DatasetMeta`] as JSON.

use super::normalisation::{Normalisation, SIGMA_DATA};
use crate::pde::{Grid, Pde};
use crate::util::progress;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

pub const META_KEY: &str = "piddm.dataset";
pub const FIELDS: &str = "fields";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub format: u32,
    /// The family and its parameters.
    pub pde: Pde,
    pub grid: Grid,
    pub seed: u64,
    pub count: usize,
    pub channels: Vec<String>,
    pub normalisation: Normalisation,
    /// Largest relative linear-solver residual over the set.
    pub max_solver_residual: f64,
}

pub struct Dataset {
    pub meta: DatasetMeta,
    /// Physical units, [N, C, n, n], float32.
    pub fields: Tensor,
}

/// Generates `count` samples; sample i depends only on (seed, i), so the result does not depend on
/// the number of threads.
pub fn generate(pde: Pde, grid: Grid, count: usize, seed: u64) -> Result<Dataset> {
    if count < 2 {
        bail!("a data set needs at least 2 samples, got {count}");
    }
    let n = grid.n;
    pde.family().validate()?;
    let sampler = pde.family().sampler(grid)?;
    let bar = progress::bar(count as u64);
    bar.set_message(format!("{} {n}x{n}", pde.name()));
    let t0 = std::time::Instant::now();
    let samples: Vec<(Vec<f32>, f64)> = (0..count)
        .into_par_iter()
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(i as u64);
            let s = sampler.sample(&mut rng)?;
            bar.inc(1);
            Ok((
                s.fields.iter().map(|&v| v as f32).collect(),
                s.solver_residual,
            ))
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "generated {count} {} samples at {n}x{n} in {secs:.2} s ({:.0} samples/s)",
        pde.name(),
        count as f64 / secs
    );
    let max_rel = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let flat: Vec<f32> = samples.into_iter().flat_map(|s| s.0).collect();
    let c = pde.channels().len() as i64;
    let fields = Tensor::from_slice(&flat).reshape([count as i64, c, n as i64, n as i64]);
    let normalisation = channel_normalisation(&fields);
    let meta = DatasetMeta {
        format: FORMAT_VERSION,
        pde,
        grid,
        seed,
        count,
        channels: pde.channels().iter().map(|c| c.0.to_string()).collect(),
        normalisation,
        max_solver_residual: max_rel,
    };
    Ok(Dataset { meta, fields })
}

fn channel_normalisation(fields: &Tensor) -> Normalisation {
    let f = fields.to_kind(tch::Kind::Double);
    let dims = [0i64, 2, 3];
    let mean = Vec::<f64>::try_from(f.mean_dim(dims.as_slice(), false, tch::Kind::Double)).unwrap();
    let std = Vec::<f64>::try_from(f.std_dim(dims.as_slice(), false, false)).unwrap();
    Normalisation {
        mean,
        scale: std.iter().map(|s| s.max(1e-12) / SIGMA_DATA).collect(),
    }
}

impl Dataset {
    /// Writes atomically: a temporary file beside the target, renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = [(FIELDS.to_string(), self.fields.shallow_clone())];
        crate::util::st::write(path, &tensors, META_KEY, serde_json::to_string(&self.meta)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (mut tensors, meta_json) = crate::util::st::read(path, META_KEY, "data set")?;
        let corrupt = |why: String| {
            anyhow::anyhow!("{} is not a valid piddm data set: {why}", path.display())
        };
        let meta: DatasetMeta = serde_json::from_str(&meta_json)
            .and_then(|mut v: serde_json::Value| {
                crate::pde::migrate_legacy(&mut v);
                serde_json::from_value(v)
            })
            .map_err(|e| corrupt(format!("bad metadata ({e})")))?;
        if meta.format != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format {} (this build reads {FORMAT_VERSION})",
                meta.format
            )));
        }
        let fields = tensors
            .remove(FIELDS)
            .ok_or_else(|| corrupt("no 'fields' tensor".into()))?;
        let n = meta.grid.n as i64;
        let expected = vec![meta.count as i64, meta.channels.len() as i64, n, n];
        if fields.size() != expected {
            return Err(corrupt(format!(
                "fields are {:?}, metadata says {:?}",
                fields.size(),
                expected
            )));
        }
        Ok(Dataset { meta, fields })
    }
}

/// `piddm-train data`: the family `pde` with the `KEY=VALUE` parameter `settings`, `count` samples
/// on an `res` x `res` grid from `seed`, written to `out`.
pub fn generate_file(
    pde: &str,
    settings: &[String],
    res: usize,
    count: usize,
    seed: u64,
    out: &Path,
) -> Result<()> {
    let pde = Pde::from_parts(pde, &crate::pde::parse_settings(settings)?)?;
    let d = generate(pde, Grid::new(res)?, count, seed)?;
    d.save(out)?;
    eprintln!(
        "wrote {} (max solver residual {:.1e})",
        out.display(),
        d.meta.max_solver_residual
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_seeded_saves_and_loads() {
        let grid = Grid::new(16).unwrap();
        let p = Pde::parse("darcy").unwrap();
        let d1 = generate(p, grid, 6, 5).unwrap();
        let d2 = generate(p, grid, 6, 5).unwrap();
        assert!(d1.fields.equal(&d2.fields));
        assert!(d1.meta.max_solver_residual <= 1e-10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        d1.save(&path).unwrap();
        let back = Dataset::load(&path).unwrap();
        assert!(back.fields.equal(&d1.fields));
        assert_eq!(back.meta, d1.meta);
        // Normalised channels have std sigma_data and round-trip.
        let x = back.meta.normalisation.to_normalised(&back.fields);
        let std = Vec::<f64>::try_from(x.to_kind(tch::Kind::Double).std_dim(
            [0i64, 2, 3].as_slice(),
            false,
            false,
        ))
        .unwrap();
        assert!(std.iter().all(|s| (s - SIGMA_DATA).abs() < 1e-5), "{std:?}");
        let y = back.meta.normalisation.to_physical(&x);
        assert!(f64::try_from((y - &back.fields).abs().max()).unwrap() < 1e-5);
    }

    #[test]
    fn corrupt_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Dataset::load(&dir.path().join("nope.safetensors"))
            .err()
            .unwrap();
        assert!(format!("{missing:#}").contains("cannot read data set"));
        let d = generate(Pde::parse("darcy").unwrap(), Grid::new(8).unwrap(), 3, 1).unwrap();
        let path = dir.path().join("d.safetensors");
        d.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let e = Dataset::load(&path).err().unwrap();
        assert!(
            format!("{e:#}").contains("not a valid piddm data set"),
            "{e:#}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Dataset::load(&path).is_err());
    }
}
