//! The solver examples (examples/: Fortran under MPI, C++, and PETSc where installed), built against
//! an installed piddm package and run by scripts/examples.sh on the shipped model with small counts.
//! The programs check themselves (their operator against the model's residual, PCG against the
//! problems' Cholesky solutions, the adjoint gradient against finite differences) and fail if a check
//! fails; here the languages are checked against each other and the report against its inputs.

#[path = "../../tests/support/mod.rs"]
mod support;

use piddm_trainer::apps::examples::{self, FieldFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{libdir, run};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kv(path: &Path) -> BTreeMap<String, String> {
    examples::read_kv(path).unwrap()
}

fn num(m: &BTreeMap<String, String>, k: &str) -> f64 {
    examples::num(m, k).unwrap()
}

#[test]
fn examples_build_run_and_agree() {
    // the script links target/<profile>/libpiddm.so
    assert!(
        libdir().ends_with("release"),
        "the examples need target/release/libpiddm.so: run the tests with --release"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = run(Command::new("bash")
        .arg(root().join("scripts/examples.sh"))
        .arg(&out)
        .current_dir(root())
        .env("PIDDM_TRAIN", env!("CARGO_BIN_EXE_piddm-train"))
        .env("PIDDM_EXAMPLES_BUILD", dir.path().join("build"))
        .env("PIDDM_EXAMPLES_PROBLEMS", "4")
        .env("PIDDM_EXAMPLES_STEPS", "10")
        .env("PIDDM_EXAMPLES_SEEDS", "4")
        .env("PIDDM_EXAMPLES_ITERATIONS", "40"));
    println!("{text}");

    // the problems file: 4 problems of (a, u, f) on the model's grid, a in its two phases
    let problems = FieldFile::read(&out.join("problems.f32")).unwrap();
    assert_eq!(
        (problems.count, problems.channels, problems.ny, problems.nx),
        (4, 3, 32, 32)
    );
    assert!(problems.field(0, 0).iter().all(|&a| a == 3.0 || a == 12.0));

    // Fortran under 2 MPI ranks and C++ ran the same Jacobi-PCG on the same problems from zero:
    // the same iteration counts (the surrogate starts differ: each rank draws its own seeds)
    let f = kv(&out.join("warm_start_fortran.txt"));
    let c = kv(&out.join("warm_start_cpp.txt"));
    assert_eq!(num(&f, "ranks"), 2.0);
    assert_eq!(num(&f, "problems"), 4.0);
    for tol in ["1e-4", "1e-6", "1e-8"] {
        let key = format!("iters_zero_{tol}");
        assert_eq!(num(&f, &key), num(&c, &key), "{key}: Fortran vs C++");
        assert!(num(&f, &key) > 10.0);
        assert!(num(&c, &format!("iters_surrogate_{tol}")) > 0.0);
    }
    assert!(num(&f, "stencil_max_difference") < 1e-2);
    // a 10-step surrogate is a rough but real answer: within 50 % of the solver's u
    assert!(num(&c, "surrogate_rel_l2_u") < 0.5);
    // PETSc's KSPCG + PCJACOBI is a second implementation of the same iteration
    let petsc = out.join("warm_start_petsc.txt");
    let have_petsc = Command::new("pkg-config")
        .args(["--exists", "PETSc"])
        .status()
        .is_ok_and(|s| s.success());
    assert_eq!(
        petsc.exists(),
        have_petsc,
        "PETSc installed but its example did not run"
    );
    if have_petsc {
        let p = kv(&petsc);
        for tol in ["1e-4", "1e-6", "1e-8"] {
            let key = format!("iters_zero_{tol}");
            assert!(
                (num(&p, &key) - num(&c, &key)).abs() <= 1.0,
                "{key}: PETSc vs C++"
            );
        }
    }

    // the inverse example: both starts ran, the surrogate's spread is a real spread
    let inv = kv(&out.join("inverse.txt"));
    let coverage = num(&inv, "coverage_2std");
    assert!(coverage > 0.3 && coverage <= 1.0, "coverage {coverage}");
    assert!(num(&inv, "iterations_constant") >= 1.0);
    for k in ["error_rate_a_constant", "error_rate_a_surrogate"] {
        let e = num(&inv, k);
        assert!((0.0..0.6).contains(&e), "{k} = {e}");
    }
    assert_eq!(num(&inv, "problems"), 4.0);
    assert!(num(&inv, "iterations_constant_to_1pct") <= num(&inv, "iterations_constant"));
    // the fair rule: both runs timed to the same level, neither past its own end
    assert!(num(&inv, "iterations_constant_fair") <= num(&inv, "iterations_constant"));
    assert!(num(&inv, "seconds_constant_fair") <= num(&inv, "seconds_constant"));
    assert!(num(&inv, "fair_reached_constant") + num(&inv, "fair_reached_surrogate") >= 4.0);
    assert!(text.contains("median seconds to within 1 % of the better final misfit"));
    let fields = FieldFile::read(&out.join("inverse.f32")).unwrap();
    assert_eq!((fields.count, fields.channels), (4, 7));
    let std_a = fields.field(0, 4);
    assert!(std_a.iter().all(|s| s.is_finite() && *s >= 0.0));
    assert!(std_a.iter().any(|&s| s > 0.0));
    // observed points: 5 % of the grid
    let observed = fields.field(0, 2).iter().filter(|&&m| m == 1.0).count();
    assert_eq!(observed as f64, num(&inv, "observed_points"));
    assert_eq!(observed, (0.05f64 * 1024.0).round() as usize);

    // the posterior example (short chains: a run of the machinery, not a converged reference):
    // both posteriors are real spreads of a over its two phases, scored on 2 problems
    let post = kv(&out.join("posterior.txt"));
    assert_eq!(num(&post, "problems"), 2.0);
    for k in ["coverage_mcmc", "coverage_surrogate"] {
        let c = num(&post, k);
        assert!(c > 0.3 && c <= 1.0, "{k} = {c}");
    }
    for k in ["error_rate_mcmc_mean", "error_rate_surrogate_mean"] {
        let e = num(&post, k);
        assert!((0.0..0.6).contains(&e), "{k} = {e}");
    }
    for k in ["sd_mcmc", "sd_surrogate", "ess", "mcmc_seconds_per_chain"] {
        assert!(num(&post, k) > 0.0, "{k}");
    }
    let acc = num(&post, "acceptance");
    assert!((0.05..0.6).contains(&acc), "pCN acceptance {acc}");
    // the exact sampler about the surrogate's answers: real chains of the same posterior, scored the same
    let a = num(&post, "acceptance_guided");
    assert!((0.05..0.6).contains(&a), "acceptance_guided = {a}");
    for k in [
        "ess_guided",
        "ess_per_second_guided",
        "ess_per_solve_guided",
        "ess_per_solve",
        "beta_guided",
    ] {
        assert!(num(&post, k) > 0.0, "{k}");
    }
    // a solve per proposal at most (a proposal that flips no phase needs none)
    let solves = num(&post, "solves_per_chain");
    assert!(
        solves > 0.0 && solves <= num(&post, "steps") + 1.0,
        "solves per chain {solves}"
    );
    let c = num(&post, "coverage_guided");
    assert!(c > 0.3 && c <= 1.0, "coverage_guided = {c}");
    for k in ["disagreement_guided_mcmc", "disagreement_mcmc_halves"] {
        let d = num(&post, k);
        assert!((0.0..0.6).contains(&d), "{k} = {d}");
    }
    assert!(text.contains("exact sampler, pCN against about the answers"));
    let pf = FieldFile::read(&out.join("posterior.f32")).unwrap();
    assert_eq!((pf.count, pf.channels), (2, 6));
    assert_eq!(pf.field(0, 0), problems.field(0, 0), "the true a");
    let sensors = pf.field(0, 1).iter().filter(|&&m| m == 1.0).count();
    assert_eq!(sensors, 50);
    // the MCMC mean of a lies between the phases; its std is at most half their gap (times the
    // sample std's n / (n - 1) correction, n >= 100 kept states)
    assert!(pf.field(0, 2).iter().all(|&a| (3.0..=12.0).contains(&a)));
    let sd = pf.field(0, 3);
    assert!(sd.iter().all(|&s| (0.0..=4.5 * 1.01).contains(&s)));
    assert!(sd.iter().any(|&s| s > 0.0));

    // a stopped run resumes: each finished problem left its record, so the same command again
    // recomputes no chain and writes the same fields
    let posterior = dir.path().join("build/programs/darcy_posterior");
    let model = root().join("examples/models/darcy32.onnx");
    let args = |o: &Path, rest: &[&str]| {
        let mut v = vec![
            model.display().to_string(),
            out.join("problems.f32").display().to_string(),
            o.display().to_string(),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let short = ["2", "50", "0.01", "2", "2000", "16"];
    let again = run(Command::new(&posterior).args(args(&out, &short)));
    assert_eq!(again.matches("resumed from").count(), 2, "{again}");
    assert!(!again.contains("pCN chain"), "{again}");
    assert_eq!(
        FieldFile::read(&out.join("posterior.f32")).unwrap().data,
        pf.data
    );
    // scored against a finished run's chains (PIDDM_POSTERIOR_REFERENCE): no chain is run, and with
    // the same model the surrogate's columns and fields come out as that run's, the guided sampler's
    // columns NaN (it needs this model's answers); a reference of other settings is refused
    let scored = out.join("scored");
    std::fs::create_dir_all(&scored).unwrap();
    let s = run(Command::new(&posterior)
        .args(args(&scored, &short))
        .env("PIDDM_POSTERIOR_REFERENCE", &out));
    assert!(!s.contains("pCN chain"), "{s}");
    let sp = kv(&scored.join("posterior.txt"));
    for k in [
        "error_rate_mcmc_mean",
        "error_rate_surrogate_mean",
        "coverage_surrogate",
        "crps_surrogate",
        "sd_ratio",
        "disagreement_surrogate_mcmc",
    ] {
        assert_eq!(num(&sp, k), num(&post, k), "{k}");
    }
    assert!(num(&sp, "ess_guided").is_nan());
    assert_eq!(
        FieldFile::read(&scored.join("posterior.f32")).unwrap().data,
        pf.data
    );
    let refused = Command::new(&posterior)
        .args(args(&scored, &["2", "50", "0.01", "2", "3000", "16"]))
        .env("PIDDM_POSTERIOR_REFERENCE", &out)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a record of these settings"));
    // a record for other settings is not taken: more steps recompute the problem
    std::fs::create_dir_all(out.join("other")).unwrap();
    for f in ["problem_0.txt", "problem_0.f32"] {
        std::fs::copy(out.join(f), out.join("other").join(f)).unwrap();
    }
    let other = run(Command::new(&posterior).args(args(
        &out.join("other"),
        &["1", "50", "0.01", "2", "200", "16"],
    )));
    assert!(!other.contains("resumed from"), "{other}");
    // tempered chains: replicas on a ladder, swaps between neighbours, T = 1 kept and scored alike
    let tempered = out.join("tempered");
    std::fs::create_dir_all(&tempered).unwrap();
    let t = run(Command::new(&posterior)
        .args(args(
            &tempered,
            &["1", "25", "0.01", "2", "300", "16", "1.5", "4", "100"],
        ))
        .env("PIDDM_POSTERIOR_THREADS", "1"));
    assert!(t.contains("pCN tempered chain 1"), "{t}");
    assert!(t.contains("guided tempered chain 1"), "{t}");
    let tp = kv(&tempered.join("posterior.txt"));
    assert_eq!(num(&tp, "problems"), 1.0);
    // a sweep is one proposal per replica: at most 4 solves per sweep and chain
    let solves = num(&tp, "solves_per_chain");
    assert!(
        solves > 300.0 && solves <= 4.0 * 300.0 + 4.0,
        "solves {solves}"
    );
    for k in ["coverage_mcmc", "coverage_guided"] {
        let c = num(&tp, k);
        assert!(c > 0.3 && c <= 1.0, "{k} = {c}");
    }

    // one summary table with the figures
    assert!(text.contains(
        "| warm start (fortran, 4 problems, 2 rank(s)) | median CG iterations to 1e-4 |"
    ));
    assert!(text.contains("| inverse (4 problems, 5 % of u observed) |"));
    for png in ["warm_start_fortran.png", "inverse.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
