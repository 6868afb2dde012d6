//! Latency of one-step generation, side by side in one run: through the C ABI, through `ort`
//! directly on the same graph, and the tch student; plus the achieved GFLOP/s of generate against
//! the best fp32 sgemm measured here (2048^3 in libtorch, in ONNX Runtime's MatMul, in numpy's BLAS),
//! with the processor and its vector extensions. Then the solve path through the
//! C ABI beside `piddm_generate` in the same rounds: the one-call answer, the card's defaults and the
//! published solve, per sample, at batch 1 and 16.
//!
//! piddm-bench --model examples/models/darcy32.onnx --student trainer/results/darcy32-student.ckpt

use anyhow::{Context, Result};
use clap::Parser;
use onnx_protobuf::{Message, ModelProto};
use piddm::card::Precision;
use piddm::ffi;
use piddm_trainer::apps::capi::Handle;
use piddm_trainer::stages::solve::Student;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    model: PathBuf,
    /// The student checkpoint the model was exported from (for the tch column).
    #[arg(long)]
    student: Option<PathBuf>,
    /// Seconds of timing per cell.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Write the table (markdown) here as well.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Further models whose solve path is timed in the same run (repeatable): every shipped
    /// model's answers against its own generation.
    #[arg(long = "solve-path")]
    solve_path: Vec<PathBuf>,
}

/// What loading costs: whole loads with and without verifying the weights (alternating, medians
/// over 9 each), the hashing alone over the graphs, and what the first call needing each other
/// part adds (its session is made then): the first residual, one-call answer and default solve
/// against a second one.
fn load_cost(model: &std::path::Path) -> Result<String> {
    let opts = |verify: bool| piddm::Options {
        verify_weights: verify,
        ..piddm::Options::default()
    };
    let load = |verify: bool| -> Result<f64> {
        let t = Instant::now();
        let m = piddm::Model::load(model, &opts(verify)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let s = t.elapsed().as_secs_f64();
        drop(m);
        Ok(s)
    };
    load(true)?; // warm the file cache and ONNX Runtime
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        on.push(load(true)?);
        off.push(load(false)?);
    }
    let m = piddm::Model::load(model, &opts(true)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files: Vec<Vec<u8>> = m
        .card()
        .parts()
        .iter()
        .map(|&p| std::fs::read(piddm::card::sibling(model, p)))
        .collect::<std::io::Result<_>>()?;
    let hash = time_per_call(1.0, || {
        for f in &files {
            let g = piddm::artifact::scan(f).unwrap().graph.unwrap();
            std::hint::black_box(piddm::artifact::graph_sha256(g));
        }
    });
    let bytes: usize = files
        .iter()
        .map(|f| piddm::artifact::scan(f).unwrap().graph.unwrap().len())
        .sum();
    // first calls against second ones, on a fresh model each round (medians over 5)
    let field = m.field_len();
    let plane = m.shape().1 * m.shape().2;
    let mut x = vec![0f32; field];
    m.generate(1, 1, &mut x)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mask: Vec<u8> = (0..field).map(|i| (i < plane) as u8).collect();
    let one = piddm::SolveParams {
        steps: 0,
        start: piddm::card::Start::Amortised,
        ..m.default_solve_params()
    };
    let defaults = m.default_solve_params();
    let e = |e: piddm::Error| anyhow::anyhow!("{e}");
    let (mut residual, mut one_call, mut solve) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let fresh = piddm::Model::load(model, &opts(true)).map_err(e)?;
        let mut out = vec![0f32; field];
        let mut r = vec![0f32; plane];
        let twice = |f: &mut dyn FnMut() -> piddm::Result<()>| -> Result<f64> {
            let t = Instant::now();
            f().map_err(e)?;
            let first = t.elapsed().as_secs_f64();
            let t = Instant::now();
            f().map_err(e)?;
            Ok(first - t.elapsed().as_secs_f64())
        };
        residual.push(twice(&mut || fresh.residual(&x, 1, &mut r).map(drop))?);
        if fresh.has_amortised() {
            one_call.push(twice(&mut || {
                fresh.solve(&x, &mask, 1, &one, &mut out).map(drop)
            })?);
        }
        solve.push(twice(&mut || {
            fresh.solve(&x, &mask, 1, &defaults, &mut out).map(drop)
        })?);
    }
    let (on, off) = (median(&mut on), median(&mut off));
    let first = |v: &mut Vec<f64>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{:+.1} ms", 1e3 * median(v))
        }
    };
    Ok(format!(
        "\nLoad ({} graphs, {:.1} MB of graph bytes; the session of generation only, the others made on first use), medians of 9 alternating loads: weights verified {:.1} ms, not verified {:.1} ms (difference {:+.1} ms); sha256 of the graphs alone {:.1} ms. What the first call needing another part adds over a second one (medians of 5 fresh loads): residual {}, one-call answer {}, the card's default solve {}.\n",
        files.len(),
        bytes as f64 / 1e6,
        1e3 * on,
        1e3 * off,
        1e3 * (on - off),
        1e3 * hash,
        first(&mut residual),
        first(&mut one_call),
        first(&mut solve),
    ))
}

/// Multiply-adds x 2 of the convolutions in a generate graph, per sample.
fn conv_flops(path: &PathBuf) -> Result<f64> {
    let m = ModelProto::parse_from_bytes(&std::fs::read(path)?)?;
    let g = m.graph.as_ref().context("no graph")?;
    let dims: HashMap<&str, &Vec<i64>> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), &t.dims))
        .collect();
    let n = {
        let d = &g.input[0];
        let tt = match &d.type_.value {
            Some(onnx_protobuf::type_proto::Value::TensorType(t)) => t,
            _ => anyhow::bail!("input is not a tensor"),
        };
        match &tt.shape.dim[2].value {
            Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v)) => *v,
            _ => anyhow::bail!("spatial size is not static"),
        }
    };
    let mut size: HashMap<String, i64> = HashMap::from([(g.input[0].name.clone(), n)]);
    let mut flops = 0.0;
    for node in &g.node {
        let h = node
            .input
            .first()
            .and_then(|i| size.get(i))
            .copied()
            .unwrap_or(n);
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.ints.clone())
        };
        let out = match node.op_type.as_str() {
            "Conv" => {
                let w = dims.get(node.input[1].as_str()).context("conv weight")?;
                let s = attr("strides").map_or(1, |v| v[0]);
                let p = attr("pads").map_or(0, |v| v[0]);
                let ho = (h + 2 * p - w[2]) / s + 1;
                flops += 2.0 * (w[0] * w[1] * w[2] * w[3] * ho * ho) as f64;
                ho
            }
            "ConvTranspose" => 2 * h,
            _ => h,
        };
        for o in &node.output {
            size.insert(o.clone(), out);
        }
    }
    Ok(flops)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time_per_call(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    let mut calls = 0u32;
    while t0.elapsed().as_secs_f64() < seconds || calls < 3 {
        f();
        calls += 1;
    }
    t0.elapsed().as_secs_f64() / calls as f64
}

/// The solve path beside generation, per sample: `piddm_generate`, the one-call answer and the
/// card's defaults alternate in rounds (medians); the published solve (random start, 200 Adam
/// steps) is timed once per batch.
fn solve_path(model: &std::path::Path, seconds: f64) -> Result<String> {
    let handle = Handle::load(model)?;
    let (c, ny, nx) = handle.shape()?;
    let field = c * ny * nx;
    if !handle.has_amortised()? {
        return Ok(format!(
            "\nSolve path: {} has no amortised part.\n",
            model.display()
        ));
    }
    let d = handle.defaults()?;
    let one = ffi::piddm_solve_params {
        steps: 0,
        start: ffi::piddm_start::PIDDM_START_AMORTISED as i32,
        ..d
    };
    let published = ffi::piddm_solve_params {
        steps: 200,
        learning_rate: 0.05,
        start: ffi::piddm_start::PIDDM_START_RANDOM as i32,
        optimizer: ffi::piddm_optimizer::PIDDM_OPTIMIZER_ADAM as i32,
        ..d
    };
    let mut s = format!(
        "\nSolve path of {} through the C ABI (the second half of each sample's values observed, the family's inverse task: channel 1 of a two-channel field, the later half of the rows of a one-channel one, the later levels of Navier-Stokes; where the card fits the determined modes, the fit included), ms per answer; the card's defaults are {} {} step(s) from the amortised start (learning rate {}, lambda_infer {:e}). Medians over 9 rounds in which generate, one call and defaults alternate; the published solve timed once.\n\n\
         | batch | generate | one call (steps 0) | one call / generate | card's defaults | defaults / generate | published solve (200 Adam steps) |\n|---|---|---|---|---|---|---|\n",
        model.display(),
        d.steps,
        if d.optimizer == ffi::piddm_optimizer::PIDDM_OPTIMIZER_LBFGS as i32 { "L-BFGS" } else { "Adam" },
        d.learning_rate,
        d.lambda_infer
    );
    for batch in [1usize, 16] {
        let n = batch * field;
        let mut x = vec![0f32; n];
        handle.generate(5, batch, &mut x)?;
        let mask: Vec<u8> = (0..n).map(|i| ((i % field) >= field / 2) as u8).collect();
        let mut out = vec![0f32; n];
        let mut solve = |p: &ffi::piddm_solve_params| {
            handle
                .solve_into(&x, &mask, batch, p, &mut out)
                .expect("piddm_solve");
        };
        let mut gen_out = vec![0f32; n];
        let mut gen = || {
            handle
                .generate(1, batch, &mut gen_out)
                .expect("piddm_generate")
        };
        let per = seconds / 9.0 / 3.0;
        let (mut tg, mut to, mut td) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..9 {
            tg.push(time_per_call(per, &mut gen));
            to.push(time_per_call(per, || solve(&one)));
            td.push(time_per_call(per, || solve(&d)));
        }
        let t = Instant::now();
        solve(&published);
        let tp = t.elapsed().as_secs_f64();
        let (g, o, dd) = (median(&mut tg), median(&mut to), median(&mut td));
        let ms = |t: f64| 1e3 * t / batch as f64;
        s += &format!(
            "| {batch} | {:.3} | {:.3} | {:.2}x | {:.3} | {:.2}x | {:.1} |\n",
            ms(g),
            ms(o),
            o / g,
            ms(dd),
            dd / g,
            ms(tp)
        );
    }
    Ok(s)
}

/// Generation's kernel time by operator: ONNX Runtime's profiler over 10 calls at `batch` of the
/// generate graph of `precision` (all cores, the runtime's optimisation level). Returns the
/// wall time per call and (operator, share of the kernels' time), largest first.
fn profile(
    model: &std::path::Path,
    precision: Precision,
    batch: usize,
) -> Result<(f64, Vec<(String, f64)>)> {
    let part = precision.part(piddm::card::Part::Generate);
    let bytes = std::fs::read(piddm::card::sibling(model, part))?;
    let dir = std::env::temp_dir().join(format!("piddm-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = piddm::ort_environment(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut session = ort::session::Session::builder(env)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_profiling(dir.join("generate"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_memory(&bytes)?;
    let field = {
        let m = piddm::Model::load(model, &piddm::Options::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (c, ny, nx) = m.shape();
        [batch, c, ny, nx]
    };
    let eps: Vec<f32> = (0..field.iter().product::<usize>())
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let mut call = || {
        let t = ort::value::TensorRef::from_array_view((field, eps.as_slice())).unwrap();
        std::hint::black_box(session.run(ort::inputs!["eps" => t]).unwrap());
    };
    call();
    let t = Instant::now();
    for _ in 0..9 {
        call();
    }
    let per_call = t.elapsed().as_secs_f64() / 9.0;
    let path = session.end_profiling()?;
    let events: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    std::fs::remove_dir_all(&dir).ok();
    let mut by_op: HashMap<String, f64> = HashMap::new();
    for e in events.as_array().context("a profile is a JSON array")? {
        let kernel = e["cat"] == "Node"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        if let (true, Some(op), Some(d)) =
            (kernel, e["args"]["op_name"].as_str(), e["dur"].as_f64())
        {
            *by_op.entry(op.to_string()).or_default() += d;
        }
    }
    let total: f64 = by_op.values().sum();
    let mut shares: Vec<(String, f64)> = by_op.into_iter().map(|(k, v)| (k, v / total)).collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((per_call, shares))
}

/// Where fp32 generation's time goes at batch 64 and what bounds it: the convolutions' own rate
/// against the floor, and the share of everything else; the int8 graphs' profile beside it.
fn profile_section(model: &std::path::Path, flops: f64, best: f64, int8: bool) -> Result<String> {
    let batch = 64;
    let (t32, p32) = profile(model, Precision::Fp32, batch)?;
    let q = if int8 {
        Some(profile(model, Precision::Int8, batch)?)
    } else {
        None
    };
    let share = |p: &[(String, f64)], ops: &[&str]| -> f64 {
        p.iter()
            .filter(|(k, _)| ops.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    };
    let conv = share(&p32, &["Conv", "FusedConv"]);
    let conv_rate = flops * batch as f64 / (conv * t32) / 1e9;
    // If the convolutions ran at the floor's rate and the rest took what it takes now.
    let other = (1.0 - conv) * t32;
    let at_floor = flops * batch as f64 / (best * 1e9);
    let bound = at_floor / (at_floor + other);
    let mut s =
        format!(
        "\nWhere generation's time goes (ONNX Runtime's profiler, 10 calls at batch {batch}, the \
         generate graph, kernel time by operator): in fp32 the convolutions take {:.1} % of it and \
         run at {conv_rate:.1} GFLOP/s, {:.2} of the best sgemm; the other {:.1} % is the work \
         between them (below), which alone bounds generation at {bound:.2} of the floor even with \
         the convolutions at the floor's rate.\n\n| operator | fp32 share |{}\n|---|---|{}\n",
        100.0 * conv,
        conv_rate / best,
        100.0 * (1.0 - conv),
        if q.is_some() { " int8 share | int8 operator |" } else { "" },
        if q.is_some() { "---|---|" } else { "" },
    );
    for i in 0..10 {
        let a = p32.get(i);
        let b = q.as_ref().and_then(|(_, p)| p.get(i));
        if a.is_none() && b.is_none() {
            break;
        }
        let cell = |x: Option<&(String, f64)>| {
            x.map_or(("-".to_string(), "-".to_string()), |(k, v)| {
                (k.clone(), format!("{:.1} %", 100.0 * v))
            })
        };
        let (ka, va) = cell(a);
        s += &format!("| {ka} | {va} |");
        if q.is_some() {
            let (kb, vb) = cell(b);
            s += &format!(" {vb} | {kb} |");
        }
        s += "\n";
    }
    s += &format!(
        "\nWall time per call in the profiled session: fp32 {:.2} ms per sample{}.\n",
        1e3 * t32 / batch as f64,
        q.as_ref().map_or(String::new(), |(t, _)| format!(
            ", int8 {:.2} ms per sample",
            1e3 * t / batch as f64
        ))
    );
    Ok(s)
}

/// fp32 against int8 through the C ABI, the two models alternating in rounds: generation at
/// batch 1, 8 and 64, the one-call answer (forward problem) at batch 1 and 16; ms per sample.
fn precision_table(model: &std::path::Path, seconds: f64) -> Result<String> {
    let h32 = Handle::load_precision(model, Precision::Fp32)?;
    let h8 = Handle::load_precision(model, Precision::Int8)?;
    let (c, ny, nx) = h32.shape()?;
    let field = c * ny * nx;
    let amortised = h32.has_amortised()?;
    let mut s = format!(
        "\nReduced precision, {} through the C ABI (`piddm_options.precision`), ms per sample; \
         medians over 9 rounds in which the two alternate.\n\n| call | batch | fp32 | int8 | int8 speed-up |\n|---|---|---|---|---|\n",
        model.display()
    );
    let mut row =
        |what: &str, batch: usize, f32_call: &mut dyn FnMut(), i8_call: &mut dyn FnMut()| {
            let per = seconds / 9.0 / 2.0;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for r in 0..9 {
                if r % 2 == 0 {
                    a.push(time_per_call(per, &mut *f32_call));
                    b.push(time_per_call(per, &mut *i8_call));
                } else {
                    b.push(time_per_call(per, &mut *i8_call));
                    a.push(time_per_call(per, &mut *f32_call));
                }
            }
            let (a, b) = (median(&mut a), median(&mut b));
            s += &format!(
                "| {what} | {batch} | {:.3} | {:.3} | {:.2}x |\n",
                1e3 * a / batch as f64,
                1e3 * b / batch as f64,
                a / b
            );
        };
    for batch in [1usize, 8, 64] {
        let (mut o1, mut o2) = (vec![0f32; batch * field], vec![0f32; batch * field]);
        row(
            "generate",
            batch,
            &mut || h32.generate(1, batch, &mut o1).expect("piddm_generate"),
            &mut || h8.generate(1, batch, &mut o2).expect("piddm_generate"),
        );
    }
    if amortised {
        let one = ffi::piddm_solve_params {
            steps: 0,
            start: ffi::piddm_start::PIDDM_START_AMORTISED as i32,
            ..h32.defaults()?
        };
        for batch in [1usize, 16] {
            let n = batch * field;
            let mut x = vec![0f32; n];
            h32.generate(5, batch, &mut x)?;
            let mask: Vec<u8> = (0..n).map(|i| ((i % field) < field / 2) as u8).collect();
            let (mut o1, mut o2) = (vec![0f32; n], vec![0f32; n]);
            row(
                "one call",
                batch,
                &mut || {
                    h32.solve_into(&x, &mask, batch, &one, &mut o1)
                        .expect("piddm_solve");
                },
                &mut || {
                    h8.solve_into(&x, &mask, batch, &one, &mut o2)
                        .expect("piddm_solve");
                },
            );
        }
    }
    Ok(s)
}

/// The processor's model name and the vector extensions the kernels can use, from /proc/cpuinfo.
fn cpu_words() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_bf16",
        "amx_int8",
    ];
    let have: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| flags.split_whitespace().any(|f| f == *w))
        .collect();
    format!(
        "{} ({} logical cores; {})",
        field("model name").unwrap_or_else(|| "unknown CPU".into()),
        info.lines().filter(|l| l.starts_with("processor")).count(),
        if have.is_empty() {
            "no AVX2".into()
        } else {
            have.join(", ")
        }
    )
}

/// GFLOP/s of a 2048^3 fp32 matmul, each way this machine offers one in the same run: libtorch's,
/// ONNX Runtime's MatMul (MLAS) with the runtime's session settings (optimisation level 3, default
/// threads), and numpy's BLAS through the set-up's Python (`PIDDM_PYTHON`) where there is one.
/// Generation is measured against the best: the floor the machine really has.
fn gemm_floor(seconds: f64) -> Result<Vec<(&'static str, f64)>> {
    let n = 2048usize;
    let flop = 2.0 * (n as f64).powi(3);
    let a = Tensor::randn([n as i64, n as i64], tch::kind::FLOAT_CPU);
    let b = Tensor::randn([n as i64, n as i64], tch::kind::FLOAT_CPU);
    let mut out = vec![(
        "libtorch",
        flop / time_per_call(seconds, || {
            let _ = a.matmul(&b);
        }) / 1e9,
    )];

    let mut g = piddm_trainer::export::graph::Graph::new();
    let y = g.node("MatMul", &["a", "b"], vec![]);
    g.rename(&y, "y");
    let dims = vec![Some(n as i64), Some(n as i64)];
    let m = piddm_trainer::export::model(
        g,
        "gemm",
        &[("a", dims.clone()), ("b", dims.clone())],
        &[("y", dims)],
    );
    let env = piddm::ort_environment(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut session = ort::session::Session::builder(env)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_memory(&m.write_to_bytes()?)?;
    let (av, bv) = (
        Vec::<f32>::try_from(a.reshape([-1]))?,
        Vec::<f32>::try_from(b.reshape([-1]))?,
    );
    let t = time_per_call(seconds, || {
        let ta = ort::value::TensorRef::from_array_view(([n, n], av.as_slice())).unwrap();
        let tb = ort::value::TensorRef::from_array_view(([n, n], bv.as_slice())).unwrap();
        let o = session.run(ort::inputs!["a" => ta, "b" => tb]).unwrap();
        std::hint::black_box(&o["y"]);
    });
    out.push(("ONNX Runtime MatMul", flop / t / 1e9));

    if let Ok(py) = std::env::var("PIDDM_PYTHON") {
        let script = format!(
            "import numpy as np, time\n\
             a = np.random.rand({n}, {n}).astype(np.float32); b = np.random.rand({n}, {n}).astype(np.float32)\n\
             a @ b\n\
             t = time.perf_counter(); k = 0\n\
             while time.perf_counter() - t < {seconds}: a @ b; k += 1\n\
             print({flop} * k / (time.perf_counter() - t) / 1e9)\n"
        );
        let run = std::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .output();
        if let Ok(o) = run {
            if let Ok(v) = String::from_utf8_lossy(&o.stdout).trim().parse::<f64>() {
                out.push(("numpy (its wheel's OpenBLAS)", v));
            }
        }
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let flops = conv_flops(&args.model)?;

    // The machine's fp32 floor, same process.
    let floors = gemm_floor(args.seconds)?;
    let (best_name, best) =
        floors
            .iter()
            .copied()
            .fold(("none", 0.0), |m, f| if f.1 > m.1 { f } else { m });
    let gemm = floors[0].1;

    // The C ABI.
    let handle = Handle::load(&args.model)?;
    let (c, ny, nx) = handle.shape()?;
    let field = c * ny * nx;

    // ort directly on the same generate graph.
    let env = piddm::ort_environment(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut session = ort::session::Session::builder(env)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(&args.model)?;

    // The C ABI's own work beyond ONNX Runtime is dominated by drawing the noise: time it alone.
    let rust_model = piddm::Model::load(&args.model, &piddm::Options::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let tch_student = match &args.student {
        Some(p) => Some(piddm_trainer::checkpoint::load_ema(p)?),
        None => None,
    };

    let mut rows = Vec::new();
    for batch in [1usize, 8, 64] {
        let mut out = vec![0f32; batch * field];
        let eps: Vec<f32> = (0..batch * field)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        // C ABI and ort direct alternate in short rounds, so drifts of the machine hit both alike;
        // per-call times are the medians over rounds, the overhead the median of per-round ratios.
        let mut capi_call = || handle.generate(1, batch, &mut out).expect("piddm_generate");
        let mut direct_out = vec![0f32; batch * field];
        let mut direct_call = || {
            let t = ort::value::TensorRef::from_array_view(([batch, c, ny, nx], eps.as_slice()))
                .unwrap();
            let o = session.run(ort::inputs!["eps" => t]).unwrap();
            let (_, x) = o["x"].try_extract_tensor::<f32>().unwrap();
            direct_out.copy_from_slice(x);
        };
        let rounds = 15;
        let per_round = args.seconds / rounds as f64 / 2.0;
        let (mut tc, mut td, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let (a, b) = if r % 2 == 0 {
                let a = time_per_call(per_round, &mut capi_call);
                (a, time_per_call(per_round, &mut direct_call))
            } else {
                let b = time_per_call(per_round, &mut direct_call);
                (time_per_call(per_round, &mut capi_call), b)
            };
            tc.push(a);
            td.push(b);
            ratio.push(a / b - 1.0);
        }
        let (capi, direct, overhead) = (median(&mut tc), median(&mut td), median(&mut ratio));
        let tch_t = tch_student.as_ref().map(|(net, meta)| {
            let st = Student::of(net, meta);
            let e =
                Tensor::from_slice(&eps).reshape([batch as i64, c as i64, ny as i64, nx as i64]);
            time_per_call(args.seconds, || {
                let _ = st.generate(&e).to_kind(Kind::Float);
            })
        });
        let noise = time_per_call(args.seconds / 3.0, || {
            std::hint::black_box(rust_model.noise(1, batch).unwrap());
        });
        rows.push((batch, capi, direct, tch_t, overhead, noise));
    }
    let floor_words: Vec<String> = floors.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
    let mut s = format!(
        "One-step generation, {} ({}x{}, {} channels): {:.3} GFLOP per sample (convolutions). \
         Machine: {}. fp32 sgemm 2048^3, GFLOP/s: {}; the best, {best_name}, is the floor.\n\n\
         | batch | C ABI ms/sample | ort direct ms/sample | tch ms/sample | C ABI GFLOP/s | fraction of the best sgemm | fraction of libtorch's GEMM | C ABI vs ort | noise draw, % of call |\n|---|---|---|---|---|---|---|---|---|\n",
        args.model.display(), ny, nx, c, flops / 1e9, cpu_words(), floor_words.join(", ")
    );
    for (batch, capi, direct, tch_t, overhead, noise) in &rows {
        let per = |t: f64| 1e3 * t / *batch as f64;
        let gf = flops * *batch as f64 / capi / 1e9;
        s += &format!(
            "| {batch} | {:.3} | {:.3} | {} | {:.1} | {:.2} | {:.2} | {:+.1} % | {:.3} % |\n",
            per(*capi),
            per(*direct),
            tch_t.map_or("-".into(), |t| format!("{:.3}", per(t))),
            gf,
            gf / best,
            gf / gemm,
            100.0 * overhead,
            100.0 * noise / capi
        );
    }
    let int8 = piddm::Model::load(&args.model, &piddm::Options::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .card()
        .has_precision(Precision::Int8);
    s += &profile_section(&args.model, flops, best, int8)?;
    if int8 {
        s += &precision_table(&args.model, args.seconds)?;
    }
    s += &load_cost(&args.model)?;
    for m in std::iter::once(&args.model).chain(&args.solve_path) {
        s += &solve_path(m, args.seconds)?;
    }
    s += "\nC ABI: `piddm_generate` (noise drawn inside, seed fixed); C ABI vs ort: median over 15 alternating rounds of (C ABI / ort direct - 1); noise draw: the time `piddm_generate` spends drawing eps (its own work beyond ONNX Runtime; argument checks and the panic guard are below a microsecond), as a share of the call; ort direct: the same generate graph through `ort` with a prepared eps; tch: the student checkpoint in libtorch. Threads: each library's default (all cores).\n";
    print!("{s}");
    if let Some(p) = args.out {
        std::fs::write(p, s)?;
    }
    Ok(())
}
