//! The C API. Every entry point runs inside [`wrap`]: errors and panics become a status, the message
//! goes to a thread-local read by `piddm_last_error`, and nothing unwinds into the caller.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]

use crate::error::{err, piddm_status, Result};
use crate::model::{Device, Model, Options, SolveParams};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// ABI version: bumped only when an existing declaration changes incompatibly.
pub const PIDDM_ABI_VERSION: u32 = 1;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn wrap(f: impl FnOnce() -> Result<()>) -> piddm_status {
    set_error("");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => piddm_status::PIDDM_OK,
        Ok(Err(e)) => {
            set_error(&e.message);
            e.status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("internal error (please report): {what}"));
            piddm_status::PIDDM_ERR_PANIC
        }
    }
}

fn non_null<T>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() {
        return Err(err!(PIDDM_ERR_NULL, "{name} is NULL"));
    }
    Ok(())
}

unsafe fn slice<'a, T>(p: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    non_null(p, name)?;
    Ok(std::slice::from_raw_parts(p, len))
}

unsafe fn slice_mut<'a, T>(p: *mut T, len: usize, name: &str) -> Result<&'a mut [T]> {
    non_null(p, name)?;
    Ok(std::slice::from_raw_parts_mut(p, len))
}

/// A loaded model (opaque).
pub struct piddm_model {
    inner: Model,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_device {
    PIDDM_DEVICE_CPU = 0,
    PIDDM_DEVICE_CUDA = 1,
}

/// Load options. Fill with `piddm_options_default` first, then change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_options {
    /// A `piddm_device` value (an integer here, so that an out-of-range value is an error, not
    /// undefined behaviour).
    pub device: i32,
    /// CUDA device ordinal (with PIDDM_DEVICE_CUDA).
    pub device_id: i32,
    /// Nonzero: if CUDA cannot be used, run on the CPU instead of failing with PIDDM_ERR_DEVICE.
    pub cuda_fallback_to_cpu: i32,
    /// ONNX Runtime intra-op threads per call; 0 = one per core. Set it under MPI so ranks sharing a
    /// node do not oversubscribe.
    pub intra_op_threads: i32,
    /// Path of libonnxruntime.so, or NULL: then PIDDM_ORT_LIBRARY, then the location recorded at set-up.
    pub ort_library: *const c_char,
}

/// Parameters of `piddm_solve`. `piddm_solve_params_default` fills the model card's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_solve_params {
    /// Adam steps on eps.
    pub steps: u32,
    pub learning_rate: f64,
    /// Weight of the PDE residual in the loss.
    pub lambda_infer: f64,
    /// Seed of the initial eps: the same seed gives the same answer.
    pub seed: u64,
}

/// What `piddm_solve` did.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_solve_report {
    pub steps: u32,
    /// Mean loss over the batch before the first step and after the last.
    pub initial_loss: f64,
    pub final_loss: f64,
    /// RMS misfit to the observations over observed entries, physical units.
    pub misfit: f64,
    /// Mean squared PDE residual of the answer over the interior, averaged over the batch.
    pub residual: f64,
    /// Optional caller-owned buffer (may be NULL) receiving the loss before each step and after the
    /// last: min(steps + 1, loss_history_len) values are written.
    pub loss_history: *mut f64,
    pub loss_history_len: usize,
}

/// The ABI version of the loaded library; compare with PIDDM_ABI_VERSION from the header.
#[no_mangle]
pub extern "C" fn piddm_abi_version() -> u32 {
    PIDDM_ABI_VERSION
}

/// The library version, e.g. "0.1.0". Static storage: never free it.
#[no_mangle]
pub extern "C" fn piddm_version() -> *const c_char {
    static V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr() as *const c_char
}

/// The message of this thread's last failed call ("" after a successful one). Thread-local; valid
/// until this thread's next piddm call. Never NULL; never free it.
#[no_mangle]
pub extern "C" fn piddm_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A short name of a status code (static storage).
#[no_mangle]
pub extern "C" fn piddm_status_name(status: piddm_status) -> *const c_char {
    let s: &'static str = match status {
        piddm_status::PIDDM_OK => "PIDDM_OK\0",
        piddm_status::PIDDM_ERR_NULL => "PIDDM_ERR_NULL\0",
        piddm_status::PIDDM_ERR_INVALID_ARGUMENT => "PIDDM_ERR_INVALID_ARGUMENT\0",
        piddm_status::PIDDM_ERR_SIZE => "PIDDM_ERR_SIZE\0",
        piddm_status::PIDDM_ERR_NONFINITE => "PIDDM_ERR_NONFINITE\0",
        piddm_status::PIDDM_ERR_IO => "PIDDM_ERR_IO\0",
        piddm_status::PIDDM_ERR_FORMAT => "PIDDM_ERR_FORMAT\0",
        piddm_status::PIDDM_ERR_RUNTIME => "PIDDM_ERR_RUNTIME\0",
        piddm_status::PIDDM_ERR_DEVICE => "PIDDM_ERR_DEVICE\0",
        piddm_status::PIDDM_ERR_PANIC => "PIDDM_ERR_PANIC\0",
    };
    s.as_ptr() as *const c_char
}

/// Fills `opts` with the defaults: CPU, no fallback needed, ONNX Runtime's thread default, library
/// found as documented for `ort_library`.
#[no_mangle]
pub unsafe extern "C" fn piddm_options_default(opts: *mut piddm_options) -> piddm_status {
    wrap(|| {
        non_null(opts, "opts")?;
        *opts = piddm_options {
            device: piddm_device::PIDDM_DEVICE_CPU as i32,
            device_id: 0,
            cuda_fallback_to_cpu: 0,
            intra_op_threads: 0,
            ort_library: std::ptr::null(),
        };
        Ok(())
    })
}

unsafe fn cstr(p: *const c_char, name: &str) -> Result<String> {
    non_null(p, name)?;
    CStr::from_ptr(p)
        .to_str()
        .map(|s| s.to_string())
        .map_err(|_| err!(PIDDM_ERR_INVALID_ARGUMENT, "{name} is not valid UTF-8"))
}

/// Loads the model at `path` (the main .onnx file; its .refine.onnx and .residual.onnx siblings
/// must sit beside it). `opts` may be NULL for the defaults. On success `*out` owns a new model:
/// release it with `piddm_model_free`. On failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_load(
    path: *const c_char,
    opts: *const piddm_options,
    out: *mut *mut piddm_model,
) -> piddm_status {
    wrap(|| {
        non_null(out, "out")?;
        *out = std::ptr::null_mut();
        let path = cstr(path, "path")?;
        let mut o = Options::default();
        if !opts.is_null() {
            let c = *opts;
            o.device = match c.device {
                0 => Device::Cpu,
                1 => Device::Cuda {
                    device_id: c.device_id,
                },
                d => return Err(err!(PIDDM_ERR_INVALID_ARGUMENT, "unknown device {d}")),
            };
            if c.intra_op_threads < 0 {
                return Err(err!(
                    PIDDM_ERR_INVALID_ARGUMENT,
                    "intra_op_threads must be >= 0, got {}",
                    c.intra_op_threads
                ));
            }
            o.intra_op_threads = c.intra_op_threads as usize;
            o.cuda_fallback_to_cpu = c.cuda_fallback_to_cpu != 0;
            if !c.ort_library.is_null() {
                o.ort_library = Some(PathBuf::from(cstr(c.ort_library, "opts->ort_library")?));
            }
        }
        let m = Model::load(&path, &o)?;
        *out = Box::into_raw(Box::new(piddm_model { inner: m }));
        Ok(())
    })
}

/// Releases a model and sets `*model` to NULL. Accepts NULL and `*model == NULL` (no-op). The
/// model must not be in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_free(model: *mut *mut piddm_model) {
    let _ = wrap(|| {
        if !model.is_null() && !(*model).is_null() {
            drop(Box::from_raw(*model));
            *model = std::ptr::null_mut();
        }
        Ok(())
    });
}

/// batch * channels * ny * nx, refusing an overflow.
fn field_count(model: &Model, batch: usize) -> Result<usize> {
    batch
        .checked_mul(model.field_len())
        .ok_or_else(|| err!(PIDDM_ERR_SIZE, "batch {batch} is too large"))
}

unsafe fn model_ref<'a>(m: *const piddm_model) -> Result<&'a Model> {
    non_null(m, "model")?;
    Ok(&(*m).inner)
}

/// The model's field shape: channels, ny, nx. Arrays are [batch][channels][ny][nx] (Fortran:
/// (nx, ny, channels, batch)).
#[no_mangle]
pub unsafe extern "C" fn piddm_model_shape(
    m: *const piddm_model,
    channels: *mut usize,
    ny: *mut usize,
    nx: *mut usize,
) -> piddm_status {
    wrap(|| {
        let m = model_ref(m)?;
        non_null(channels, "channels")?;
        non_null(ny, "ny")?;
        non_null(nx, "nx")?;
        let (c, y, x) = m.shape();
        (*channels, *ny, *nx) = (c, y, x);
        Ok(())
    })
}

/// The model card (JSON, UTF-8) of the model: PDE, grid, channel names and units, normalisation,
/// defaults, provenance, evaluation figures. Owned by the model; valid until it is freed.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_card(
    m: *const piddm_model,
    json: *mut *const c_char,
) -> piddm_status {
    wrap(|| {
        let model = model_ref(m)?;
        non_null(json, "json")?;
        *json = model.card_cstr().as_ptr();
        Ok(())
    })
}

/// Generates `batch` samples in one network evaluation each, with eps drawn from `seed` (the same
/// seed gives the same bits). `out` holds batch * channels * ny * nx floats (out_len), written in
/// place, physical units.
#[no_mangle]
pub unsafe extern "C" fn piddm_generate(
    m: *mut piddm_model,
    seed: u64,
    batch: usize,
    out: *mut f32,
    out_len: usize,
) -> piddm_status {
    wrap(|| {
        let m = model_ref(m)?;
        let out = slice_mut(out, out_len, "out")?;
        m.generate(seed, batch, out)
    })
}

/// The PDE residual of caller fields: `fields` [batch][channels][ny][nx], `residual` receives
/// [batch][1][ny][nx] (zero on the boundary). `mean_sq` (may be NULL) receives the mean over the
/// batch of each sample's mean squared residual over the interior.
#[no_mangle]
pub unsafe extern "C" fn piddm_residual(
    m: *mut piddm_model,
    fields: *const f32,
    batch: usize,
    residual: *mut f32,
    residual_len: usize,
    mean_sq: *mut f64,
) -> piddm_status {
    wrap(|| {
        let model = model_ref(m)?;
        let n = field_count(model, batch)?;
        let fields = slice(fields, n, "fields")?;
        let r = slice_mut(residual, residual_len, "residual")?;
        let ms = model.residual(fields, batch, r)?;
        if !mean_sq.is_null() {
            *mean_sq = ms;
        }
        Ok(())
    })
}

/// Fills `params` with the model card's solve defaults (seed 0).
#[no_mangle]
pub unsafe extern "C" fn piddm_solve_params_default(
    m: *const piddm_model,
    params: *mut piddm_solve_params,
) -> piddm_status {
    wrap(|| {
        let model = model_ref(m)?;
        non_null(params, "params")?;
        let d = model.default_solve_params();
        *params = piddm_solve_params {
            steps: d.steps as u32,
            learning_rate: d.learning_rate,
            lambda_infer: d.lambda_infer,
            seed: d.seed,
        };
        Ok(())
    })
}

/// Solves a forward, inverse or reconstruction problem by optimising eps: `observed` and `mask`
/// are [batch][channels][ny][nx]; entries with mask != 0 are observations (physical units), the
/// others are ignored (NaN allowed there). The answer (observations kept where observed) goes to
/// `out` (out_len = batch * channels * ny * nx). `params` NULL: the card's defaults. `report` may
/// be NULL. On failure `out` may hold partial results.
#[no_mangle]
pub unsafe extern "C" fn piddm_solve(
    m: *mut piddm_model,
    observed: *const f32,
    mask: *const u8,
    batch: usize,
    params: *const piddm_solve_params,
    out: *mut f32,
    out_len: usize,
    report: *mut piddm_solve_report,
) -> piddm_status {
    wrap(|| {
        let model = model_ref(m)?;
        let n = field_count(model, batch)?;
        let observed = slice(observed, n, "observed")?;
        let mask = slice(mask, n, "mask")?;
        let out = slice_mut(out, out_len, "out")?;
        let p = if params.is_null() {
            model.default_solve_params()
        } else {
            let p = *params;
            SolveParams {
                steps: p.steps as usize,
                learning_rate: p.learning_rate,
                lambda_infer: p.lambda_infer,
                seed: p.seed,
            }
        };
        let r = model.solve(observed, mask, batch, &p, out)?;
        if !report.is_null() {
            let rep = &mut *report;
            rep.steps = r.steps as u32;
            rep.initial_loss = r.loss_history.first().copied().unwrap_or(f64::NAN);
            rep.final_loss = r.loss_history.last().copied().unwrap_or(f64::NAN);
            rep.misfit = r.misfit;
            rep.residual = r.residual;
            if !rep.loss_history.is_null() {
                let k = rep.loss_history_len.min(r.loss_history.len());
                std::slice::from_raw_parts_mut(rep.loss_history, k)
                    .copy_from_slice(&r.loss_history[..k]);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside an entry point becomes PIDDM_ERR_PANIC with a message, and the next call
    /// on the thread starts clean.
    #[test]
    fn panics_become_a_status() {
        let s = wrap(|| panic!("boom"));
        assert_eq!(s, piddm_status::PIDDM_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(piddm_last_error()) }
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("internal error") && msg.contains("boom"),
            "{msg}"
        );
        assert_eq!(wrap(|| Ok(())), piddm_status::PIDDM_OK);
        assert_eq!(
            unsafe { CStr::from_ptr(piddm_last_error()) }
                .to_bytes()
                .len(),
            0
        );
        let name = unsafe { CStr::from_ptr(piddm_status_name(piddm_status::PIDDM_ERR_PANIC)) };
        assert_eq!(name.to_str().unwrap(), "PIDDM_ERR_PANIC");
    }
}
