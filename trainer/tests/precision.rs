//! The int8 graphs: ONNX Runtime's integer kernels against the QDQ arithmetic written out in tch,
//! and an exported int8 artifact through the runtime against its float32 graphs (the physics
//! float32 in both).

use piddm::card::{self, Part, Precision};
use piddm::{Model, Options};
use piddm_trainer::export::{self, graph::Graph, quantise};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(bytes: &[u8], x: &Tensor) -> Tensor {
    let env = piddm::ort_environment(None).unwrap();
    let mut s = ort::session::Session::builder(env)
        .unwrap()
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        .unwrap()
        .commit_from_memory(bytes)
        .unwrap();
    let v = Vec::<f32>::try_from(x.reshape([-1])).unwrap();
    let t = ort::value::Tensor::from_array((x.size(), v)).unwrap();
    let o = s.run(ort::inputs!["x" => t]).unwrap();
    let (shape, y) = o["y"].try_extract_tensor::<f32>().unwrap();
    Tensor::from_slice(y).reshape(shape.to_vec())
}

/// uint8 fake quantisation with the range's parameters, as ONNX's Quantize-/DequantizeLinear.
fn fq(t: &Tensor, (lo, hi): (f32, f32)) -> (Tensor, f64) {
    let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
    let s = (hi - lo) / 255.0;
    let zp = (-lo / s).round();
    let q = ((t / s).round() + zp).clamp(0.0, 255.0);
    ((q - zp) * s, s)
}

/// 7-bit per-output-channel weights and int32 biases at input scale x weight scale, dequantised.
fn qconv(x: &Tensor, sx: f64, w: &Tensor, b: &Tensor) -> Tensor {
    let sw = w.abs().amax([1, 2, 3], true) / 63.0;
    let wq = (w / &sw).round().clamp(-63.0, 63.0) * &sw;
    let sb = sw.reshape([-1]) * sx;
    let bq = (b / &sb).round() * &sb;
    x.conv2d(&wq, Some(&bq), [1, 1], [1, 1], [1, 1], 1)
}

/// A two-convolution network with a SiLU between, quantised: ONNX Runtime's fused integer
/// kernels (QLinearConv, QLinearSigmoid, QLinearMul) give what the QDQ arithmetic gives in tch,
/// within a few quantisation steps; the last convolution writes the network's result, so it and
/// the Mul after the network stay float32.
#[test]
fn int8_network_matches_its_qdq_arithmetic() {
    tch::manual_seed(3);
    let (b, c, h) = (4i64, 3i64, 8i64);
    let w1 = Tensor::randn([6, c, 3, 3], (Kind::Float, tch::Device::Cpu)) * 0.3;
    let b1 = Tensor::randn([6], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let w2 = Tensor::randn([2, 6, 3, 3], (Kind::Float, tch::Device::Cpu)) * 0.2;
    let b2 = Tensor::randn([2], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let vals = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
    let mut g = Graph::new();
    g.chw.insert("x".into(), [c, h, h]);
    g.network(true);
    let (cw1, cb1) = (
        g.constant("w", &w1.size(), &vals(&w1)),
        g.constant("b", &[6], &vals(&b1)),
    );
    let h1 = g.conv("x", &cw1, Some(&cb1), 3, 1, 1, 6);
    let a = g.silu(&h1);
    let (cw2, cb2) = (
        g.constant("w", &w2.size(), &vals(&w2)),
        g.constant("b", &[2], &vals(&b2)),
    );
    let h2 = g.conv(&a, &cw2, Some(&cb2), 3, 1, 1, 2);
    g.network(false);
    let y = g.scale(&h2, 2.0);
    g.rename(&y, "y");
    let net = g.net_nodes.clone();
    let dims = |ch| vec![None, Some(ch), Some(h), Some(h)];
    let m = export::model(g, "t", &[("x", dims(c))], &[("y", dims(2))]);

    let x = Tensor::randn([b, c, h, h], (Kind::Float, tch::Device::Cpu));
    let feed = vec![("x".to_string(), x.size(), vals(&x))];
    let tensors = quantise::calibrated_tensors(&m, &net);
    assert_eq!(
        tensors.len(),
        4,
        "x, h1, its sigmoid, the SiLU (not h2, the network's result): {tensors:?}"
    );
    let ranges = quantise::calibrate(&m, &tensors, &[feed]).unwrap();
    let span = |t: &Tensor| {
        (
            f64::try_from(t.min()).unwrap(),
            f64::try_from(t.max()).unwrap(),
        )
    };
    let rx = ranges["x"];
    assert_eq!(
        (rx.0 as f64, rx.1 as f64),
        span(&x),
        "the input's range is its feed's"
    );
    let h1 = x.conv2d(&w1, Some(&b1), [1, 1], [1, 1], [1, 1], 1);
    let r1 = ranges[&tensors[1]];
    assert!((r1.0 as f64 - span(&h1).0).abs() < 1e-5 && (r1.1 as f64 - span(&h1).1).abs() < 1e-5);
    let q = quantise::quantise(&m, &net, &ranges).unwrap();
    let got = run(&export::encode(&q).unwrap(), &x);

    // the same arithmetic in tch, in the graph's order
    let r = |i: usize| ranges[&tensors[i]];
    let (xq, sx) = fq(&x, r(0));
    let (h1q, _) = fq(&qconv(&xq, sx, &w1, &b1), r(1));
    let (sq, _) = fq(&h1q.sigmoid(), r(2));
    let (aq, sa) = fq(&(&h1q * &sq), r(3));
    let want = aq.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1) * 2.0;
    // one step of one SiLU value (a rounding tie resolved the other way), through the largest
    // weight and the scale
    let s2 = 2.0 * sa * f64::try_from(w2.abs().max()).unwrap();
    let exact = {
        let h = x.conv2d(&w1, Some(&b1), [1, 1], [1, 1], [1, 1], 1).silu();
        h.conv2d(&w2, Some(&b2), [1, 1], [1, 1], [1, 1], 1) * 2.0
    };
    let max = |t: Tensor| f64::try_from(t.abs().max()).unwrap();
    let off = max(&got - &want);
    eprintln!(
        "int8 vs its arithmetic {off}, vs float32 {}, a step {s2}",
        max(&got - &exact)
    );
    assert!(
        off <= s2,
        "int8 kernels vs QDQ arithmetic: {off} ({s2} a step)"
    );
    // and it is int8: farther from the float32 network than from its own arithmetic
    assert!(max(&got - &exact) > off, "{} vs {off}", max(&got - &exact));
    let fp32 = run(&export::encode(&m).unwrap(), &x);
    assert!(max(&fp32 - &exact) <= 1e-5 * max(exact.shallow_clone()));
}

/// The shipped Darcy student and encoder exported with int8 graphs: the card names and digests
/// them, the runtime loads either precision (and refuses int8 where a model has none), int8
/// samples stay near the float32 ones, their residual is the float32 residual graph's of the int8
/// sample (the physics is not quantised), and the one-call forward answer, settled through the
/// PDE, hardly moves.
#[test]
fn int8_export_loads_beside_fp32_and_keeps_the_physics() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("darcy32.onnx");
    let preset = piddm_trainer::config::Preset::load("cpu").unwrap();
    let results = root().join("trainer/results");
    let card = export::export_precision(
        &results.join("darcy32-student.ckpt"),
        &main,
        &preset.infer,
        Some((
            &results.join("darcy32-encoder.ckpt"),
            &preset.amortise.as_ref().unwrap().refine,
        )),
        serde_json::json!({}),
        Precision::Int8,
    )
    .unwrap();
    assert_eq!(
        card.parts(),
        [
            Part::Generate,
            Part::Refine,
            Part::Residual,
            Part::Amortised,
            Part::GenerateInt8,
            Part::AmortisedInt8
        ]
    );
    assert!(card.has_precision(Precision::Int8));
    assert!(card::sibling(&main, Part::GenerateInt8).ends_with("darcy32.int8.onnx"));
    // the int8 graphs come as a set
    let mut bad = card.clone();
    bad.files.amortised_int8 = None;
    bad.graph_sha256.as_mut().unwrap().amortised_int8 = None;
    bad.graph_structure_sha256.as_mut().unwrap().amortised_int8 = None;
    let e = bad.validate().unwrap_err();
    assert!(e.contains("int8"), "{e}");

    let load = |p: Precision| {
        Model::load(
            &main,
            &Options {
                precision: p,
                ..Options::default()
            },
        )
        .unwrap()
    };
    let (m32, m8) = (load(Precision::Fp32), load(Precision::Int8));
    assert_eq!(m8.precision(), Precision::Int8);
    let (c, ny, nx) = m32.shape();
    let (field, plane, n) = (c * ny * nx, ny * nx, 8);
    let (mut x32, mut x8) = (vec![0f32; n * field], vec![0f32; n * field]);
    m32.generate(11, n, &mut x32).unwrap();
    m8.generate(11, n, &mut x8).unwrap();
    assert!(m8.graph_uses(Part::GenerateInt8) == 1 && m8.graph_uses(Part::Generate) == 0);
    let rel = |a: &[f32], b: &[f32]| {
        let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let s: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (d / s).sqrt()
    };
    // Darcy's a is projected onto its two phases (`physics::phases`): int8 moves a few points
    // across the threshold, so a is compared by the share of points whose phase differs, u (the
    // solve of that a) by its relative L2
    let phases = piddm_trainer::pde::Pde::Darcy(Default::default())
        .family()
        .phases()
        .unwrap();
    for ch in 0..c {
        let pick = |v: &[f32]| -> Vec<f32> {
            (0..n)
                .flat_map(|p| v[p * field + ch * plane..p * field + (ch + 1) * plane].to_vec())
                .collect()
        };
        let (a8, a32) = (pick(&x8), pick(&x32));
        if ch == phases.channel {
            let mid = 0.5 * (phases.lo + phases.hi);
            let on =
                |v: f32| (v as f64 - phases.lo).abs() < 1e-3 || (v as f64 - phases.hi).abs() < 1e-3;
            assert!(a8.iter().chain(&a32).all(|&v| on(v)), "a off its phases");
            let flipped = a8
                .iter()
                .zip(&a32)
                .filter(|(p, q)| ((**p as f64) < mid) != ((**q as f64) < mid))
                .count() as f64
                / a8.len() as f64;
            assert!(
                flipped < 0.05,
                "int8 flips the phase of {flipped} of a's points"
            );
            continue;
        }
        let e = rel(&a8, &a32);
        assert!(
            e > 1e-4 && e < 0.1,
            "channel {ch}: int8 vs fp32 samples {e}"
        );
    }
    // the residual in the int8 generate graph is the float32 residual graph's
    let env = piddm::ort_environment(None).unwrap();
    let mut s = ort::session::Session::builder(env)
        .unwrap()
        .commit_from_file(card::sibling(&main, Part::GenerateInt8))
        .unwrap();
    let eps: Vec<f32> = m8.noise(11, n).unwrap();
    let t = ort::value::TensorRef::from_array_view(([n, c, ny, nx], eps.as_slice())).unwrap();
    let o = s.run(ort::inputs!["eps" => t]).unwrap();
    let (_, gx) = o["x"].try_extract_tensor::<f32>().unwrap();
    let (_, gr) = o["residual"].try_extract_tensor::<f32>().unwrap();
    assert!(
        rel(gx, &x8) <= 1e-5,
        "the runtime's int8 sample is the graph's"
    );
    let mut r = vec![0f32; n * plane];
    m32.residual(&x8, n, &mut r).unwrap();
    let scale = gr.iter().fold(0f32, |a, v| a.max(v.abs()));
    let off = gr
        .iter()
        .zip(&r)
        .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
    assert!(
        off <= 1e-4 * scale,
        "residual of the int8 sample: {off} of {scale}"
    );

    // forward problem (a given): the settled answers of both precisions agree closely
    let mask: Vec<u8> = (0..n * field).map(|i| (i % field < plane) as u8).collect();
    let one = piddm::SolveParams {
        steps: 0,
        start: card::Start::Amortised,
        ..m32.default_solve_params()
    };
    let (mut a32, mut a8) = (vec![0f32; n * field], vec![0f32; n * field]);
    m32.solve(&x32, &mask, n, &one, &mut a32).unwrap();
    m8.solve(&x32, &mask, n, &one, &mut a8).unwrap();
    assert!(m8.graph_uses(Part::AmortisedInt8) == 1);
    let u = |v: &[f32]| -> Vec<f32> {
        (0..n)
            .flat_map(|p| v[p * field + plane..(p + 1) * field].to_vec())
            .collect()
    };
    let e = rel(&u(&a8), &u(&a32));
    assert!(e < 1e-2, "forward answers, int8 vs fp32: {e}");

    // a model without int8 graphs refuses the precision, naming the way out
    let e = Model::load(
        root().join("examples/models/darcy32.onnx"),
        &Options {
            precision: Precision::Int8,
            ..Options::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("no int8 graphs") && e.contains("--precision int8"),
        "{e}"
    );
}
