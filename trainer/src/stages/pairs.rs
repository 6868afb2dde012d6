//! The teacher's pair sets (eps, ODE(eps)) the students are distilled on: drawn deterministically
//! from the teacher's seed and the set's number, cached beside the student.

use crate::checkpoint::{load_role, Role};
use crate::diffusion::{sampler::heun_sample, Edm};
use crate::util::{progress, seed::seed_tch, st};
use anyhow::Result;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A pair set: standard normal eps and the teacher's ODE(eps), normalised units.
pub struct Pairs {
    pub eps: Tensor,
    pub x0: Tensor,
}

const PAIRS_KEY: &str = "piddm.pairs";

/// Draws pair set number `k` (deterministic in the teacher checkpoint's seed and k), or reads it from
/// `cache` when a file there was made from the same teacher and settings.
pub fn pairs(
    teacher: &Path,
    k: u64,
    count: usize,
    heun_steps: usize,
    cache: Option<&Path>,
) -> Result<Pairs> {
    let (net, meta) = load_role(teacher, Role::Teacher)?;
    let tag = serde_json::json!({"teacher_step": meta.step, "teacher_seed": meta.seed, "k": k,
        "count": count, "heun_steps": heun_steps, "grid": meta.data.grid.n})
    .to_string();
    if let Some(c) = cache {
        if let Ok((mut t, m)) = st::read(c, PAIRS_KEY, "pair set") {
            if m == tag {
                if let (Some(eps), Some(x0)) = (t.remove("eps"), t.remove("x0")) {
                    return Ok(Pairs { eps, x0 });
                }
            }
        }
    }
    let dev = net.vs.device();
    let (c, n) = (meta.unet.channels, meta.data.grid.n as i64);
    seed_tch(meta.seed ^ 0x05EE_D0F9_A1B5, k);
    let eps = Tensor::randn([count as i64, c, n, n], (Kind::Float, dev));
    let bar = progress::bar(count as u64);
    bar.set_message(format!("pairs ({} NFE each)", Edm::heun_nfe(heun_steps)));
    let t0 = std::time::Instant::now();
    let mut outs = Vec::new();
    for chunk in eps.split(64, 0) {
        outs.push(heun_sample(&meta.edm, &net.net, &chunk, heun_steps));
        bar.inc(chunk.size()[0] as u64);
    }
    bar.finish_and_clear();
    eprintln!(
        "pairs: {count} teacher samples in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let x0 = Tensor::cat(&outs, 0);
    if let Some(c) = cache {
        st::write(
            c,
            &[
                ("eps".into(), eps.shallow_clone()),
                ("x0".into(), x0.shallow_clone()),
            ],
            PAIRS_KEY,
            tag,
        )?;
    }
    Ok(Pairs { eps, x0 })
}

/// Where pair set k of a student written to `out` is cached.
pub fn pairs_cache(out: &Path, k: u64) -> PathBuf {
    out.with_file_name(format!("pairs-{k}.safetensors"))
}
