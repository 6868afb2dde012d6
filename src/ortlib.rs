//! Finding and loading ONNX Runtime (the shared library is loaded at run time, never linked).
//! Order: the path in the load options, `PIDDM_ORT_LIBRARY`, the location recorded at set-up.

use crate::error::{err, Result};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Where the set-up script installed ONNX Runtime, recorded when this crate was built.
pub const RECORDED_LIBRARY: Option<&str> = option_env!("PIDDM_ORT_LIBRARY");

static ENV: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The library this process uses: the first successful load wins for the whole process (ONNX
/// Runtime can be loaded once); a later request for a different file is an error.
pub fn environment(requested: Option<&str>) -> Result<&'static ort::environment::Environment> {
    let _g = INIT.lock().unwrap_or_else(|p| p.into_inner());
    let candidate: Option<(PathBuf, &str)> = match requested {
        Some(p) => Some((p.into(), "the load options")),
        None => match std::env::var("PIDDM_ORT_LIBRARY") {
            Ok(p) if !p.is_empty() => Some((p.into(), "PIDDM_ORT_LIBRARY")),
            _ => RECORDED_LIBRARY.map(|p| (p.into(), "the set-up record")),
        },
    };
    if let Some((loaded, env)) = ENV.get() {
        if let Some((want, from)) = &candidate {
            if requested.is_some() && want != loaded {
                return Err(err!(PIDDM_ERR_INVALID_ARGUMENT, "ONNX Runtime is already loaded from {} in this process; cannot switch to {} (from {from})", loaded.display(), want.display()));
            }
        }
        return Ok(env);
    }
    let Some((path, from)) = candidate else {
        return Err(err!(PIDDM_ERR_RUNTIME, "ONNX Runtime library not found: pass its path in the load options, set PIDDM_ORT_LIBRARY, or run scripts/setup.sh before building"));
    };
    if !path.is_file() {
        return Err(err!(
            PIDDM_ERR_RUNTIME,
            "ONNX Runtime library {} (from {from}) does not exist",
            path.display()
        ));
    }
    let builder = ort::init_from(&path).map_err(|e| {
        err!(
            PIDDM_ERR_RUNTIME,
            "cannot load ONNX Runtime from {} (from {from}): {e}",
            path.display()
        )
    })?;
    let env = builder.with_name("piddm").build().map_err(|e| {
        err!(
            PIDDM_ERR_RUNTIME,
            "cannot start ONNX Runtime from {}: {e}",
            path.display()
        )
    })?;
    let _ = ENV.set((path, env));
    Ok(&ENV.get().expect("just set").1)
}
