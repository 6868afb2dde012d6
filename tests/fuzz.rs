//! Property tests of everything that reads a model file: the protobuf scan, the model card parser
//! and the whole loader, driven by generated and mutated inputs. None may panic, hang or allocate
//! without bound; what they accept must satisfy the limits.
//!
//! `scripts/test.sh` runs a short pass. The long run (its count and result are recorded in the
//! README's "Reliability" section):
//!   PIDDM_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture

mod support;

use piddm::card::{ModelCard, CARD_KEY};
use piddm::limits::*;
use piddm::{artifact, Model, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::{Path, PathBuf};

fn cases(default: u32) -> u32 {
    std::env::var("PIDDM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    })
}

fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny.onnx")
}

fn card_json() -> String {
    let bytes = std::fs::read(model()).unwrap();
    let s = artifact::scan(&bytes).unwrap();
    s.metadata(CARD_KEY).unwrap().unwrap().to_string()
}

/// JSON values that probe the card's checks: extremes, wrong types, nesting.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0.0f64),
            Just(-1.0),
            Just(1e308),
            Just(-1e308),
            Just(f64::MIN_POSITIVE),
            any::<f64>().prop_filter("finite", |v| v.is_finite())
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(3u64),
            Just(4096),
            Just(4097),
            Just(1 << 24),
            Just(u64::MAX)
        ]
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every (path, leaf or subtree) of a JSON value, to pick one to replace.
fn paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn replace(v: &mut serde_json::Value, path: &[String], new: serde_json::Value) {
    let mut p = v;
    for k in path {
        p = match p {
            serde_json::Value::Object(m) => m.get_mut(k).unwrap(),
            serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    *p = new;
}

/// A card that parsed must be within every limit (the checks are the contract, not a hope).
fn assert_within_limits(c: &ModelCard) {
    let n = c.channels.len() * c.grid.nx * c.grid.ny;
    assert!(n <= MAX_FIELD_VALUES && c.grid.nx <= MAX_GRID && c.grid.ny <= MAX_GRID);
    assert!(c.grid.nx >= 3 && c.grid.ny >= 3 && !c.channels.is_empty());
    assert!(c.defaults.steps as u64 <= MAX_STEPS);
    assert!(c.defaults.learning_rate.is_finite() && c.defaults.learning_rate > 0.0);
    assert!(c
        .normalisation
        .scale
        .iter()
        .all(|s| s.is_finite() && *s != 0.0));
}

/// Mutations of a byte string: flips, insertions, deletions, truncation, splices of random runs.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Overwrite(usize, Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let e = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        // varint-looking bytes: large lengths and field numbers
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![Just(0xffu8), Just(0x80), Just(0x7f), Just(0x0a), Just(0x72)],
                1..12
            )
        )
            .prop_map(|(i, b)| Edit::Overwrite(i, b)),
    ];
    prop::collection::vec(e, 1..4)
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(i, x) => {
                if !b.is_empty() {
                    b[i % n] ^= x;
                }
            }
            Edit::Insert(i, x) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, x.iter().copied());
            }
            Edit::Delete(i, k) => {
                let at = i % n;
                let end = (at + k).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Edit::Truncate(i) => b.truncate(i % n),
            Edit::Overwrite(i, x) => {
                let at = i % n;
                for (j, v) in x.iter().enumerate() {
                    if at + j < b.len() {
                        b[at + j] = *v;
                    }
                }
            }
        }
    }
    b
}

#[test]
fn card_parser_never_panics_and_accepts_only_cards_within_limits() {
    let base: serde_json::Value = serde_json::from_str(&card_json()).unwrap();
    let mut all = Vec::new();
    paths(&base, &mut Vec::new(), &mut all);
    let n = cases(3000);
    let accepted = std::cell::Cell::new(0u64);
    runner(n)
        .run(
            &(0..all.len(), json_value(), any::<bool>(), edits()),
            |(which, value, bytewise, edits)| {
                let text = if bytewise {
                    String::from_utf8_lossy(&apply(card_json().into_bytes(), &edits)).into_owned()
                } else {
                    let mut v = base.clone();
                    replace(&mut v, &all[which], value);
                    v.to_string()
                };
                if let Ok(c) = ModelCard::from_json(&text) {
                    assert_within_limits(&c);
                    accepted.set(accepted.get() + 1);
                }
                Ok(())
            },
        )
        .unwrap();
    println!("card parser: {n} cases, {} accepted", accepted.get());
}

#[test]
fn scan_never_panics_on_arbitrary_bytes() {
    let n = cases(20000);
    runner(n)
        .run(&prop::collection::vec(any::<u8>(), 0..512), |b| {
            if let Ok(s) = artifact::scan(&b) {
                if let Some(g) = s.graph {
                    assert!(g.len() <= b.len());
                }
            }
            Ok(())
        })
        .unwrap();
    println!("scan: {n} cases");
}

fn copy_artifact(dir: &Path) -> PathBuf {
    let main = dir.join("m.onnx");
    for p in support::parts(&model()) {
        std::fs::copy(
            piddm::card::sibling(&model(), p),
            piddm::card::sibling(&main, p),
        )
        .unwrap();
    }
    main
}

/// The whole loader on mutated files (any of the three), with weight verification on for most
/// inputs and off for some, so that mutated graphs also reach ONNX Runtime. What loads must run.
#[test]
fn loader_never_panics_on_mutated_files() {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let main = copy_artifact(dir.path());
    let parts = support::parts(&main);
    let originals: Vec<Vec<u8>> = parts
        .iter()
        .map(|&p| std::fs::read(piddm::card::sibling(&main, p)).unwrap())
        .collect();
    let n = cases(300);
    let (loaded, unverified) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    runner(n)
        .run(
            &(0usize..parts.len(), edits(), 0u32..50),
            |(part, edits, verify_draw)| {
                let path = piddm::card::sibling(&main, parts[part]);
                let mutated = apply(originals[part].clone(), &edits);
                std::fs::write(&path, &mutated).unwrap();
                let options = Options {
                    intra_op_threads: 1,
                    verify_weights: verify_draw != 0,
                    ..Options::default()
                };
                unverified.set(unverified.get() + (verify_draw == 0) as u64);
                let r = Model::load(&main, &options);
                // PIDDM_FUZZ_KEEP=DIR keeps the inputs that ONNX Runtime's binding choked on
                if let (Err(e), Ok(keep)) = (&r, std::env::var("PIDDM_FUZZ_KEEP")) {
                    if e.message.contains("ONNX Runtime cannot read this graph") {
                        let name = format!("{:?}-{}.onnx", parts[part], mutated.len());
                        std::fs::write(Path::new(&keep).join(name), &mutated).unwrap();
                    }
                }
                if let Ok(m) = r {
                    loaded.set(loaded.get() + 1);
                    let mut out = vec![0f32; m.field_len()];
                    let _ = m.generate(1, 1, &mut out);
                }
                std::fs::write(&path, &originals[part]).unwrap();
                Ok(())
            },
        )
        .unwrap();
    println!(
        "loader: {n} cases ({} unverified), {} loaded",
        unverified.get(),
        loaded.get()
    );
}
