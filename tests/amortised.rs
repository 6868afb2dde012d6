//! The amortised part through the Rust API: the one-call answer touches no refine graph, the fast
//! path starts from it, an artifact from before the part existed loads and solves as it did, and
//! the new parameters' bad values are refused.

use piddm::card::{Part, Start};
use piddm::optim::Optimizer;
use piddm::{Model, Options, Status};
use std::path::PathBuf;

fn load(rel: &str) -> Model {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    Model::load(
        p,
        &Options {
            intra_op_threads: 1,
            ..Options::default()
        },
    )
    .unwrap()
}

/// Fresh one-step samples as the truth, and a forward mask (channel 0 observed).
fn problem(m: &Model, batch: usize) -> (Vec<f32>, Vec<u8>) {
    let f = m.field_len();
    let (_, ny, nx) = m.shape();
    let mut x = vec![0f32; batch * f];
    m.generate(11, batch, &mut x).unwrap();
    let mut mask = vec![0u8; batch * f];
    for b in 0..batch {
        mask[b * f..b * f + ny * nx].fill(1);
    }
    (x, mask)
}

#[test]
fn one_call_answer_runs_no_refine_graph() {
    let m = load("tests/data/tiny.onnx");
    assert!(m.has_amortised());
    let batch = 3;
    let (x, mask) = problem(&m, batch);
    let p = piddm::SolveParams {
        steps: 0,
        start: Start::Amortised,
        ..m.default_solve_params()
    };
    let before: Vec<u64> = [Part::Generate, Part::Refine, Part::Amortised]
        .iter()
        .map(|&q| m.graph_uses(q))
        .collect();
    let mut out = vec![0f32; x.len()];
    let r = m.solve(&x, &mask, batch, &p, &mut out).unwrap();
    assert_eq!(m.graph_uses(Part::Refine), before[1], "refine graph used");
    assert_eq!(
        m.graph_uses(Part::Generate),
        before[0],
        "generate graph used"
    );
    assert_eq!(m.graph_uses(Part::Amortised), before[2] + 1);
    assert_eq!(r.start, Start::Amortised);
    assert!(r.loss_history.is_empty(), "{:?}", r.loss_history);
    assert_eq!(r.misfit, 0.0, "observations are kept");
    assert!(out.iter().all(|v| v.is_finite()));
    for i in 0..out.len() {
        if mask[i] != 0 {
            assert_eq!(out[i], x[i]);
        }
    }
    // the same seed, the same answer; another seed (another z), another one
    let mut again = vec![0f32; x.len()];
    m.solve(&x, &mask, batch, &p, &mut again).unwrap();
    assert_eq!(out, again);
    let other = piddm::SolveParams { seed: 9, ..p };
    m.solve(&x, &mask, batch, &other, &mut again).unwrap();
    assert_ne!(out, again);
}

#[test]
fn fast_path_starts_from_the_one_call_answer() {
    let m = load("tests/data/tiny.onnx");
    let batch = 2;
    let (x, mask) = problem(&m, batch);
    let d = m.default_solve_params();
    assert_eq!(d.start, Start::Auto);
    assert_eq!(d.optimizer, Optimizer::Lbfgs);
    assert!(d.steps > 0);
    let mut fast = vec![0f32; x.len()];
    let r = m.solve(&x, &mask, batch, &d, &mut fast).unwrap();
    assert_eq!(r.start, Start::Amortised);
    assert_eq!(r.loss_history.len(), d.steps + 1);
    // L-BFGS keeps a trial only if it lowers the sample's loss
    for w in r.loss_history.windows(2) {
        assert!(w[1] <= w[0], "{:?}", r.loss_history);
    }
    // the first loss is the one-call answer's
    let one = piddm::SolveParams { steps: 0, ..d };
    let mut first = vec![0f32; x.len()];
    m.solve(&x, &mask, batch, &one, &mut first).unwrap();
    let zero = piddm::SolveParams {
        steps: 0,
        start: Start::Random,
        ..d
    };
    let refine_before = m.graph_uses(Part::Refine);
    let mut tmp = vec![0f32; x.len()];
    // steps 0 from a random start evaluates the loss once (the refine graph) for its answer
    let rr = m.solve(&x, &mask, batch, &zero, &mut tmp).unwrap();
    assert_eq!(m.graph_uses(Part::Refine), refine_before + 1);
    assert_eq!(rr.loss_history.len(), 1);
}

#[test]
fn artifact_without_the_part_loads_and_solves_as_before() {
    let old = load("tests/data/v2/tiny.onnx");
    let new = load("tests/data/tiny.onnx");
    assert!(!old.has_amortised());
    assert_eq!(old.card().format, 2);
    assert_eq!(old.card().weights_sha256, new.card().weights_sha256);
    let d = old.default_solve_params();
    assert_eq!((d.start, d.optimizer), (Start::Auto, Optimizer::Adam));
    let batch = 2;
    let (x, mask) = problem(&old, batch);
    // auto on an artifact without the part is the published solve: Adam from a random eps
    let mut a = vec![0f32; x.len()];
    let r = old.solve(&x, &mask, batch, &d, &mut a).unwrap();
    assert_eq!(r.start, Start::Random);
    assert_eq!(r.loss_history.len(), d.steps + 1);
    // and the new artifact reaches the same answer when asked for the same solve
    let same = piddm::SolveParams {
        start: Start::Random,
        optimizer: Optimizer::Adam,
        ..d
    };
    let mut b = vec![0f32; x.len()];
    new.solve(&x, &mask, batch, &same, &mut b).unwrap();
    assert_eq!(a, b, "same student, same solve, same bits");
    let e = old
        .solve(
            &x,
            &mask,
            batch,
            &piddm::SolveParams {
                start: Start::Amortised,
                ..d
            },
            &mut a,
        )
        .unwrap_err();
    assert_eq!(e.status, Status::PIDDM_ERR_INVALID_ARGUMENT);
    assert!(e.message.contains("no amortised part"), "{}", e.message);
}

#[test]
fn bad_values_of_the_fast_path_are_refused() {
    let m = load("tests/data/tiny.onnx");
    let (x, mask) = problem(&m, 1);
    let mut out = vec![0f32; x.len()];
    let d = m.default_solve_params();
    for (p, needle) in [
        (
            piddm::SolveParams {
                learning_rate: f64::NAN,
                ..d
            },
            "learning rate",
        ),
        (
            piddm::SolveParams {
                learning_rate: -0.1,
                optimizer: Optimizer::Lbfgs,
                ..d
            },
            "learning rate",
        ),
        (
            piddm::SolveParams {
                steps: 100_001,
                ..d
            },
            "steps",
        ),
        (
            piddm::SolveParams {
                lambda_infer: -1.0,
                steps: 0,
                ..d
            },
            "lambda_infer",
        ),
    ] {
        let e = m.solve(&x, &mask, 1, &p, &mut out).unwrap_err();
        assert_eq!(e.status, Status::PIDDM_ERR_INVALID_ARGUMENT, "{p:?}");
        assert!(e.message.contains(needle), "{}", e.message);
    }
    // an observation that is not finite where observed, also on the one-call path
    let mut bad = x.clone();
    bad[0] = f32::NAN;
    let one = piddm::SolveParams { steps: 0, ..d };
    let e = m.solve(&bad, &mask, 1, &one, &mut out).unwrap_err();
    assert_eq!(e.status, Status::PIDDM_ERR_NONFINITE);
}

/// Nothing observed and no PDE term: the loss is flat and its gradient exactly zero. L-BFGS keeps
/// each sample where it starts instead of searching for a descent direction without end (which
/// overflowed the stack and aborted the host process).
#[test]
fn lbfgs_on_a_flat_loss_returns() {
    let m = load("tests/data/tiny.onnx");
    let (x, _) = problem(&m, 2);
    let nothing = vec![0u8; x.len()];
    let p = piddm::SolveParams {
        steps: 3,
        lambda_infer: 0.0,
        optimizer: Optimizer::Lbfgs,
        ..m.default_solve_params()
    };
    let mut out = vec![0f32; x.len()];
    let r = m.solve(&x, &nothing, 2, &p, &mut out).unwrap();
    assert_eq!(r.loss_history, vec![0.0; 4]);
    // the answer is the start's: the one-call answer to the same (empty) observation, up to the
    // float rounding of another graph (refine against amortised) computing the same student
    let mut one = vec![0f32; x.len()];
    let zero_steps = piddm::SolveParams { steps: 0, ..p };
    m.solve(&x, &nothing, 2, &zero_steps, &mut one).unwrap();
    let scale = one.iter().fold(0f32, |a, v| a.max(v.abs()));
    let diff = out
        .iter()
        .zip(&one)
        .fold(0f32, |a, (u, v)| a.max((u - v).abs()));
    assert!(
        diff <= 1e-5 * scale,
        "max difference {diff} (scale {scale})"
    );
}

/// `noise_scale` multiplies the amortised start's z: the runtime's answer is the amortised graph's
/// own output for z = scale x the seed's draw (ONNX Runtime called directly), 0 gives every seed
/// the same answer, and a scale that is negative or not finite is refused by name.
#[test]
fn noise_scale_multiplies_the_encoders_z() {
    use piddm::card::io;
    let rel = "tests/data/tiny.onnx";
    let m = load(rel);
    let batch = 2;
    let (x, mask) = problem(&m, batch);
    let (c, ny, nx) = m.shape();
    let d = m.default_solve_params();
    assert_eq!(d.noise_scale, 1.0, "absent from the card: 1");
    let one = piddm::SolveParams {
        steps: 0,
        start: Start::Amortised,
        seed: 5,
        noise_scale: 0.5,
        ..d
    };
    let mut out = vec![0f32; x.len()];
    m.solve(&x, &mask, batch, &one, &mut out).unwrap();
    // the graph by itself: observed values where the mask is set, zero elsewhere
    let z: Vec<f32> = m.noise(5, batch).unwrap().iter().map(|v| v * 0.5).collect();
    let obs: Vec<f32> = x
        .iter()
        .zip(&mask)
        .map(|(&v, &k)| if k != 0 { v } else { 0.0 })
        .collect();
    let maskf: Vec<f32> = mask.iter().map(|&k| k as f32).collect();
    let main = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let mut s = ort::session::Session::builder(piddm::ort_environment(None).unwrap())
        .unwrap()
        .commit_from_file(piddm::card::sibling(&main, Part::Amortised))
        .unwrap();
    let dims = [batch, c, ny, nx];
    fn view(dims: [usize; 4], v: &[f32]) -> ort::value::TensorRef<'_, f32> {
        ort::value::TensorRef::from_array_view((dims, v)).unwrap()
    }
    let o = s
        .run(ort::inputs![io::OBSERVED => view(dims, &obs), io::MASK => view(dims, &maskf), io::Z => view(dims, &z)])
        .unwrap();
    let (_, want) = o[io::X_MIX].try_extract_tensor::<f32>().unwrap();
    let worst = want
        .iter()
        .zip(&out)
        .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
    assert!(
        worst <= 1e-5,
        "the runtime's answer is the graph's at z x 0.5: {worst}"
    );
    // scale 1 is the card's default answer; scale 0 answers the same for every seed
    let mut a = vec![0f32; x.len()];
    let mut b = vec![0f32; x.len()];
    m.solve(
        &x,
        &mask,
        batch,
        &piddm::SolveParams {
            noise_scale: 1.0,
            ..one
        },
        &mut a,
    )
    .unwrap();
    m.solve(
        &x,
        &mask,
        batch,
        &piddm::SolveParams {
            noise_scale: d.noise_scale,
            ..one
        },
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, out, "another scale, another answer");
    let zero = piddm::SolveParams {
        noise_scale: 0.0,
        ..one
    };
    m.solve(&x, &mask, batch, &zero, &mut a).unwrap();
    m.solve(
        &x,
        &mask,
        batch,
        &piddm::SolveParams { seed: 99, ..zero },
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b, "scale 0: the seed does not matter");
    for bad in [-0.5, f64::NAN, f64::INFINITY] {
        let e = m
            .solve(
                &x,
                &mask,
                batch,
                &piddm::SolveParams {
                    noise_scale: bad,
                    ..one
                },
                &mut a,
            )
            .unwrap_err();
        assert_eq!(e.status, Status::PIDDM_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("noise_scale"), "{}", e.message);
    }
}
