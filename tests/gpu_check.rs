//! The CUDA check falls back cleanly where there is no GPU: the script says so and exits 0 before
//! installing anything, and the checker, given ONNX Runtime without CUDA, compares nothing and
//! exits 0 (on a GPU machine with the GPU build it compares and must pass).

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn script_without_a_gpu_says_so_and_exits_zero() {
    let fake = tempfile::tempdir().unwrap();
    // an nvidia-smi that finds no GPU, first on the path
    let smi = fake.path().join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new("bash")
        .arg(root().join("scripts/gpu-check.sh"))
        .env("PATH", path)
        .env("PIDDM_CACHE", fake.path().join("cache"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no NVIDIA GPU on this machine"), "{text}");
    assert!(
        !fake.path().join("cache").exists(),
        "it installed something without a GPU"
    );
}

#[test]
fn checker_without_cuda_compares_nothing_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_piddm-gpu-check"))
        .arg(root().join("tests/data/tiny.onnx"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cannot be used here") || text.contains("CUDA against CPU, generation"),
        "{text}"
    );
    // no model: usage, and a failure status
    let out = Command::new(env!("CARGO_BIN_EXE_piddm-gpu-check"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
