//! A batch larger than one ONNX Runtime run (the runtime chunks it to bound activation memory) gives
//! every sample the answer it gets alone: generation, the residual and the solve.

use piddm::{Model, Options, SolveParams};
use std::path::PathBuf;

fn model() -> Model {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny.onnx");
    Model::load(
        p,
        &Options {
            intra_op_threads: 1,
            ..Options::default()
        },
    )
    .unwrap()
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn chunked_batches_give_each_sample_its_own_answer() {
    let m = model();
    let f = m.field_len();
    let (_, ny, nx) = m.shape();
    let batch = 150; // more than two chunks of 64 on this model
    let eps = m.noise(3, batch).unwrap();
    let mut x = vec![0f32; batch * f];
    let mut r = vec![0f32; batch * ny * nx];
    m.generate_from(&eps, batch, &mut x, Some(&mut r)).unwrap();
    for i in [0, 63, 64, 127, 128, 149] {
        let mut xi = vec![0f32; f];
        let mut ri = vec![0f32; ny * nx];
        m.generate_from(&eps[i * f..(i + 1) * f], 1, &mut xi, Some(&mut ri))
            .unwrap();
        assert!(max_rel(&x[i * f..(i + 1) * f], &xi) <= 1e-5, "sample {i}");
        assert!(
            max_rel(&r[i * ny * nx..(i + 1) * ny * nx], &ri) <= 1e-4,
            "residual {i}"
        );
    }
    let mut rr = vec![0f32; batch * ny * nx];
    m.residual(&x, batch, &mut rr).unwrap();
    assert!(max_rel(&rr, &r) <= 1e-4);

    // forward problems: a observed, u free; 3 steps of the solve
    let mut mask = vec![0u8; batch * f];
    for b in 0..batch {
        mask[b * f..b * f + ny * nx].fill(1);
    }
    let p = SolveParams {
        steps: 3,
        ..m.default_solve_params()
    };
    let mut out = vec![0f32; batch * f];
    let rep = m
        .solve_from(eps.clone(), &x, &mask, batch, &p, &mut out)
        .unwrap();
    let mut mean0 = 0.0;
    for i in 0..batch {
        let s = i * f..(i + 1) * f;
        let mut oi = vec![0f32; f];
        let ri = m
            .solve_from(
                eps[s.clone()].to_vec(),
                &x[s.clone()],
                &mask[s.clone()],
                1,
                &p,
                &mut oi,
            )
            .unwrap();
        mean0 += ri.loss_history[0] / batch as f64;
        if [0, 64, 149].contains(&i) {
            assert!(max_rel(&out[s], &oi) <= 1e-4, "solve sample {i}");
        }
    }
    assert!((rep.loss_history[0] - mean0).abs() <= 1e-5 * mean0.abs());
}
