//! The C API. Every entry point runs inside [`wrap`]: errors and panics become a status, the message
//! goes to a thread-local read by `piddm_last_error`, and nothing unwinds into the caller. Sizes
//! are checked against [`crate::limits`] before anything is allocated.
//!
//! Structs the caller passes start with `size`, set by their `*_init` to `sizeof` as the caller was
//! compiled; the library refuses a size it does not know with `PIDDM_ERR_ABI` before reading on.
//! Fields are only ever appended and a later library accepts every earlier size ([`Versioned`]):
//! it reads the fields that size holds and takes the defaults for the rest.
#![allow(non_camel_case_types, clippy::missing_safety_doc)]
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::card::{Precision, Start};
use crate::error::{err, panic_message, piddm_status, Result};
use crate::model::{Device, Model, Options, SolveParams};
use crate::optim::Optimizer;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

/// ABI version: bumped only when an existing declaration changes incompatibly. 2: `size`-prefixed
/// structs filled by `*_init`, signed `steps`, const model handles.
pub const PIDDM_ABI_VERSION: u32 = 2;

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
            let what = panic_message(p.as_ref());
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

/// # Safety
/// `p` is NULL or points at `len` readable values that stay valid for `'a`.
unsafe fn slice<'a, T>(p: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    non_null(p, name)?;
    // SAFETY: non-null, and the caller documents `len` values at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// # Safety
/// `p` is NULL or points at `len` writable values that stay valid for `'a`.
unsafe fn slice_mut<'a, T>(p: *mut T, len: usize, name: &str) -> Result<&'a mut [T]> {
    non_null(p, name)?;
    // SAFETY: non-null, and the caller documents `len` writable values at `p`.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// The sizes a struct has had, oldest first: a later library accepts every earlier one (fields are
/// only appended, so an earlier layout is a prefix of this one).
trait Versioned: Sized {
    fn sizes() -> Vec<usize> {
        vec![std::mem::size_of::<Self>()]
    }
}

/// Checks the leading `size` of a caller's struct against the sizes this library knows; returns it.
///
/// # Safety
/// `p` is NULL or points at a struct that starts with a `size_t`.
unsafe fn check_size<T: Versioned>(p: *const T, name: &str, init: &str) -> Result<usize> {
    non_null(p, name)?;
    // SAFETY: non-null, and every struct of this API starts with a size_t.
    let size = unsafe { p.cast::<usize>().read() };
    let want = std::mem::size_of::<T>();
    if !T::sizes().contains(&size) {
        return Err(err!(
            PIDDM_ERR_ABI,
            "{name}->size is {size}, but this library's {} is {want} bytes: fill it with {init} \
             (a program built against another piddm.h must be rebuilt against this one)",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("struct")
        ));
    }
    Ok(size)
}

/// The size a `*_init` was given must be one this library knows.
fn init_size<T: Versioned>(size: usize, what: &str) -> Result<()> {
    let want = std::mem::size_of::<T>();
    if !T::sizes().contains(&size) {
        return Err(err!(
            PIDDM_ERR_ABI,
            "{what} of {size} bytes asked for, but this library's is {want} bytes: \
             the program was built against another piddm.h; rebuild it against this one"
        ));
    }
    Ok(())
}

/// A loaded model (opaque). Handles made by `piddm_model_clone` share it.
pub struct piddm_model {
    inner: Arc<Model>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_device {
    PIDDM_DEVICE_CPU = 0,
    PIDDM_DEVICE_CUDA = 1,
}

/// Load options. Fill with `piddm_options_init(&opts, sizeof opts)`, then change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_options {
    /// sizeof(piddm_options) as the caller was compiled; set by piddm_options_init.
    pub size: usize,
    /// A `piddm_device` value (an integer here, so that an out-of-range value is an error, not
    /// undefined behaviour).
    pub device: i32,
    /// CUDA device ordinal (with PIDDM_DEVICE_CUDA).
    pub device_id: i32,
    /// Nonzero: if CUDA cannot be used, run on the CPU instead of failing with PIDDM_ERR_DEVICE.
    pub cuda_fallback_to_cpu: i32,
    /// Threads per call, 0 to PIDDM_MAX_THREADS; 0 = one per core. A single sample runs on ONNX
    /// Runtime's intra-op threads; a batch is split into that many parts run side by side, each
    /// single-threaded (the same numbers, faster for networks this small). Set it under MPI so
    /// ranks sharing a node do not oversubscribe.
    pub intra_op_threads: i32,
    /// Path of libonnxruntime.so, or NULL: then PIDDM_ORT_LIBRARY, then the location recorded at set-up.
    pub ort_library: *const c_char,
    /// Nonzero (the default): recompute each graph's sha256 at load and refuse a file whose graph
    /// does not match its model card. 0 skips the check (and accepts cards that predate it).
    pub verify_weights: i32,
    /// A piddm_precision: the networks' arithmetic (PIDDM_PRECISION_FP32 by default). INT8 loads
    /// the model's int8 graphs and fails with PIDDM_ERR_INVALID_ARGUMENT where it has none.
    /// Appended to ABI 2 with `reserved`: a program built against a piddm.h without them passes
    /// the shorter size and gets fp32.
    pub precision: i32,
    /// 0. (It keeps this size apart from the earlier one, whose last 4 bytes were padding.)
    pub reserved: i32,
}

/// The arithmetic of the networks a model runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_precision {
    /// float32 throughout.
    PIDDM_PRECISION_FP32 = 0,
    /// The networks in int8 (weights per output channel, activations per tensor, calibrated when
    /// the model was exported); the physics and the refine gradient stay float32.
    PIDDM_PRECISION_INT8 = 1,
}

/// Parameters of `piddm_solve`. `piddm_solve_params_init` fills the model card's defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_solve_params {
    /// sizeof(piddm_solve_params) as the caller was compiled; set by piddm_solve_params_init.
    pub size: usize,
    /// Optimiser steps on eps after the start, 0 to PIDDM_MAX_STEPS (signed, so that a negative
    /// count is an error). 0 with the amortised start: the one-call answer.
    pub steps: i64,
    pub learning_rate: f64,
    /// Weight of the PDE residual in the loss.
    pub lambda_infer: f64,
    /// Seed of the initial eps (random start) or of z (amortised start): the same seed gives the
    /// same answer.
    pub seed: u64,
    /// A piddm_start: where the solve starts. Appended to ABI 2: a program built against a
    /// piddm.h without it passes the shorter size and gets the card's default.
    pub start: i32,
    /// A piddm_optimizer for the steps (appended as `start`).
    pub optimizer: i32,
    /// Scale of z for the amortised start (finite, >= 0): 1 draws it as the encoder was trained,
    /// 0 gives the encoder's central answer (every seed the same), other values narrow or widen
    /// the spread of answers over seeds. The random start ignores it. Appended after `optimizer`:
    /// a shorter size gets the card's default.
    pub noise_scale: f64,
}

impl Versioned for piddm_solve_params {
    fn sizes() -> Vec<usize> {
        vec![
            std::mem::offset_of!(piddm_solve_params, start),
            std::mem::offset_of!(piddm_solve_params, noise_scale),
            std::mem::size_of::<Self>(),
        ]
    }
}
impl Versioned for piddm_options {
    fn sizes() -> Vec<usize> {
        vec![
            // ABI 2 before `precision`: its last field and the padding after it.
            std::mem::offset_of!(piddm_options, precision).next_multiple_of(8),
            std::mem::size_of::<Self>(),
        ]
    }
}
impl Versioned for piddm_solve_report {}

/// Where `piddm_solve` starts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_start {
    /// The amortised encoder's answer if the model has one (`piddm_model_has_amortised`), else a
    /// random eps: the card's default.
    PIDDM_START_AUTO = 0,
    /// eps drawn from `seed` (the published Algorithm 3).
    PIDDM_START_RANDOM = 1,
    /// The amortised encoder's answer (z drawn from `seed`); PIDDM_ERR_INVALID_ARGUMENT on a model
    /// without one. With steps = 0 this is the one-call answer: no loss is evaluated.
    PIDDM_START_AMORTISED = 2,
}

/// The optimiser of `piddm_solve`'s steps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum piddm_optimizer {
    /// Adam on eps with `learning_rate`.
    PIDDM_OPTIMIZER_ADAM = 0,
    /// Per-sample L-BFGS with backtracking; the first step moves eps by `learning_rate` (RMS).
    PIDDM_OPTIMIZER_LBFGS = 1,
}

/// The C values of `start` and `optimizer`, one table each for both directions.
const STARTS: [(piddm_start, Start); 3] = [
    (piddm_start::PIDDM_START_AUTO, Start::Auto),
    (piddm_start::PIDDM_START_RANDOM, Start::Random),
    (piddm_start::PIDDM_START_AMORTISED, Start::Amortised),
];
const OPTIMIZERS: [(piddm_optimizer, Optimizer); 2] = [
    (piddm_optimizer::PIDDM_OPTIMIZER_ADAM, Optimizer::Adam),
    (piddm_optimizer::PIDDM_OPTIMIZER_LBFGS, Optimizer::Lbfgs),
];

fn start_from_c(v: i32) -> Result<Start> {
    STARTS
        .iter()
        .find(|(c, _)| *c as i32 == v)
        .map(|&(_, s)| s)
        .ok_or_else(|| {
            err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "params->start is {v}, not a piddm_start (PIDDM_START_AUTO, _RANDOM or _AMORTISED)"
            )
        })
}

fn start_to_c(s: Start) -> i32 {
    STARTS
        .iter()
        .find(|(_, r)| *r == s)
        .map(|&(c, _)| c as i32)
        .expect("STARTS lists every Start")
}

fn optimizer_from_c(v: i32) -> Result<Optimizer> {
    OPTIMIZERS
        .iter()
        .find(|(c, _)| *c as i32 == v)
        .map(|&(_, o)| o)
        .ok_or_else(|| {
            err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "params->optimizer is {v}, not a piddm_optimizer (PIDDM_OPTIMIZER_ADAM or _LBFGS)"
            )
        })
}

fn optimizer_to_c(o: Optimizer) -> i32 {
    OPTIMIZERS
        .iter()
        .find(|(_, r)| *r == o)
        .map_or(piddm_optimizer::PIDDM_OPTIMIZER_ADAM as i32, |&(c, _)| {
            c as i32
        })
}

/// What `piddm_solve` did. Fill with `piddm_solve_report_init(&rep, sizeof rep)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct piddm_solve_report {
    /// sizeof(piddm_solve_report) as the caller was compiled; set by piddm_solve_report_init.
    pub size: usize,
    pub steps: i64,
    /// Mean loss over the batch before the first step and after the last (NaN for the one-call
    /// answer, which evaluates no loss).
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

/// A short name of a status code (static storage); any integer is accepted, and one that is not a
/// status gives "PIDDM_UNKNOWN_STATUS".
#[no_mangle]
pub extern "C" fn piddm_status_name(status: i32) -> *const c_char {
    use piddm_status::*;
    const NAMES: [(piddm_status, &str); 11] = [
        (PIDDM_OK, "PIDDM_OK\0"),
        (PIDDM_ERR_NULL, "PIDDM_ERR_NULL\0"),
        (PIDDM_ERR_INVALID_ARGUMENT, "PIDDM_ERR_INVALID_ARGUMENT\0"),
        (PIDDM_ERR_SIZE, "PIDDM_ERR_SIZE\0"),
        (PIDDM_ERR_NONFINITE, "PIDDM_ERR_NONFINITE\0"),
        (PIDDM_ERR_IO, "PIDDM_ERR_IO\0"),
        (PIDDM_ERR_FORMAT, "PIDDM_ERR_FORMAT\0"),
        (PIDDM_ERR_RUNTIME, "PIDDM_ERR_RUNTIME\0"),
        (PIDDM_ERR_DEVICE, "PIDDM_ERR_DEVICE\0"),
        (PIDDM_ERR_PANIC, "PIDDM_ERR_PANIC\0"),
        (PIDDM_ERR_ABI, "PIDDM_ERR_ABI\0"),
    ];
    let s = NAMES
        .iter()
        .find(|(k, _)| *k as i32 == status)
        .map_or("PIDDM_UNKNOWN_STATUS\0", |(_, n)| n);
    s.as_ptr() as *const c_char
}

/// Fills `opts` with the defaults (CPU, no fallback, ONNX Runtime's thread default, the library
/// found as documented for `ort_library`, weights verified) and sets `opts->size`. `size` must be
/// `sizeof(piddm_options)`; otherwise PIDDM_ERR_ABI and nothing is written.
#[no_mangle]
pub unsafe extern "C" fn piddm_options_init(opts: *mut piddm_options, size: usize) -> piddm_status {
    wrap(|| {
        non_null(opts, "opts")?;
        init_size::<piddm_options>(size, "piddm_options")?;
        let d = piddm_options {
            size,
            device: piddm_device::PIDDM_DEVICE_CPU as i32,
            device_id: 0,
            cuda_fallback_to_cpu: 0,
            intra_op_threads: 0,
            ort_library: std::ptr::null(),
            verify_weights: Options::default().verify_weights as i32,
            precision: piddm_precision::PIDDM_PRECISION_FP32 as i32,
            reserved: 0,
        };
        // SAFETY: non-null; the caller's struct holds `size` bytes, a prefix of this layout
        // (checked above), and `d` is a live value of at least that size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&d as *const piddm_options).cast::<u8>(),
                opts.cast::<u8>(),
                size,
            )
        };
        Ok(())
    })
}

/// The caller's options of `size` bytes (a size [`check_size`] accepted), the fields an earlier
/// layout lacks at their defaults.
///
/// # Safety
/// `opts` points at `size` readable bytes.
unsafe fn read_options(opts: *const piddm_options, size: usize) -> piddm_options {
    let mut c = piddm_options {
        size,
        device: 0,
        device_id: 0,
        cuda_fallback_to_cpu: 0,
        intra_op_threads: 0,
        ort_library: std::ptr::null(),
        verify_weights: 1,
        precision: piddm_precision::PIDDM_PRECISION_FP32 as i32,
        reserved: 0,
    };
    // SAFETY: `size` bytes are readable at `opts` and at most sizeof(piddm_options) fit in `c`;
    // an earlier layout is a prefix of this one.
    unsafe {
        std::ptr::copy_nonoverlapping(
            opts.cast::<u8>(),
            (&mut c as *mut piddm_options).cast::<u8>(),
            size.min(std::mem::size_of::<piddm_options>()),
        )
    };
    if size < std::mem::size_of::<piddm_options>() {
        // the earlier layout's padding, not fields
        c.precision = piddm_precision::PIDDM_PRECISION_FP32 as i32;
        c.reserved = 0;
    }
    c
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn cstr(p: *const c_char, name: &str) -> Result<String> {
    non_null(p, name)?;
    // SAFETY: non-null and NUL-terminated, as the API requires of every string argument.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map(|s| s.to_string())
        .map_err(|_| err!(PIDDM_ERR_INVALID_ARGUMENT, "{name} is not valid UTF-8"))
}

/// Loads the model at `path` (the main .onnx file; its .refine.onnx and .residual.onnx siblings
/// must sit beside it). Every file must be a regular file of at most PIDDM_MAX_FILE_BYTES whose
/// model card is valid and, unless `verify_weights` is 0, whose graph matches the card's sha256.
/// `opts` may be NULL for the defaults. On success `*out` owns a new model: release it with
/// `piddm_model_free`. On failure `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_load(
    path: *const c_char,
    opts: *const piddm_options,
    out: *mut *mut piddm_model,
) -> piddm_status {
    wrap(|| {
        non_null(out, "out")?;
        // SAFETY: `out` is non-null and points at a handle the caller owns.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the API requires a NUL-terminated path.
        let path = unsafe { cstr(path, "path") }?;
        let mut o = Options::default();
        if !opts.is_null() {
            // SAFETY: non-null; the header requires a piddm_options, which starts with its size.
            let size = unsafe { check_size(opts, "opts", "piddm_options_init") }?;
            // SAFETY: its size says it is this library's piddm_options or the earlier one, which
            // ends before `precision`; only the fields that size holds are read.
            let c = unsafe { read_options(opts, size) };
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
            o.verify_weights = c.verify_weights != 0;
            o.precision = match (c.precision, c.reserved) {
                (0, 0) => Precision::Fp32,
                (1, 0) => Precision::Int8,
                (_, 0) => {
                    return Err(err!(
                    PIDDM_ERR_INVALID_ARGUMENT,
                    "opts->precision is {}, not a piddm_precision (PIDDM_PRECISION_FP32 or _INT8)",
                    c.precision
                ))
                }
                (_, r) => {
                    return Err(err!(
                        PIDDM_ERR_INVALID_ARGUMENT,
                        "opts->reserved is {r}; it must be 0"
                    ))
                }
            };
            if !c.ort_library.is_null() {
                // SAFETY: a non-NULL ort_library is a NUL-terminated path, as documented.
                let lib = unsafe { cstr(c.ort_library, "opts->ort_library") }?;
                o.ort_library = Some(PathBuf::from(lib));
            }
        }
        let m = Model::load(&path, &o)?;
        let handle = Box::into_raw(Box::new(piddm_model { inner: Arc::new(m) }));
        // SAFETY: checked non-null above.
        unsafe { *out = handle };
        Ok(())
    })
}

/// A second handle to the same loaded model (nothing is reloaded or copied). Each handle is
/// released with its own `piddm_model_free`; the model goes when the last one does. On failure
/// `*out` is set to NULL.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_clone(
    m: *const piddm_model,
    out: *mut *mut piddm_model,
) -> piddm_status {
    wrap(|| {
        non_null(out, "out")?;
        // SAFETY: `out` is non-null and points at a handle the caller owns.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: `m` is NULL or a live handle from piddm_model_load / piddm_model_clone.
        let inner = Arc::clone(&unsafe { handle(m) }?.inner);
        let h = Box::into_raw(Box::new(piddm_model { inner }));
        // SAFETY: checked non-null above.
        unsafe { *out = h };
        Ok(())
    })
}

/// Releases a handle and sets `*model` to NULL. Accepts NULL and `*model == NULL` (no-op). The
/// handle must not be in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_free(model: *mut *mut piddm_model) {
    let _ = wrap(|| {
        // SAFETY: `model` is NULL or points at a handle the caller owns; a non-NULL handle came
        // from Box::into_raw in this library and is released once, since it is NULLed here.
        unsafe {
            if !model.is_null() && !(*model).is_null() {
                drop(Box::from_raw(*model));
                *model = std::ptr::null_mut();
            }
        }
        Ok(())
    });
}

/// # Safety
/// `m` is NULL or a live handle.
unsafe fn handle<'a>(m: *const piddm_model) -> Result<&'a piddm_model> {
    non_null(m, "model")?;
    // SAFETY: non-null, and the caller passes a live handle.
    Ok(unsafe { &*m })
}

/// # Safety
/// `m` is NULL or a live handle.
unsafe fn model_ref<'a>(m: *const piddm_model) -> Result<&'a Model> {
    // SAFETY: forwarded from the caller.
    Ok(&unsafe { handle(m) }?.inner)
}

/// batch * channels * ny * nx, within the limits (checked before anything is allocated).
fn field_count(model: &Model, batch: usize) -> Result<usize> {
    model.check_batch(batch)?;
    Ok(batch * model.field_len())
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
        // SAFETY: `m` is NULL or a live handle.
        let m = unsafe { model_ref(m) }?;
        non_null(channels, "channels")?;
        non_null(ny, "ny")?;
        non_null(nx, "nx")?;
        let (c, y, x) = m.shape();
        // SAFETY: all three checked non-null; they point at the caller's size_t values.
        unsafe { (*channels, *ny, *nx) = (c, y, x) };
        Ok(())
    })
}

/// The channels of the model's residual map (`piddm_residual`): 1, or, for a family whose
/// channels are time levels (Navier-Stokes), one per level.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_residual_channels(
    m: *const piddm_model,
    residual_channels: *mut usize,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let m = unsafe { model_ref(m) }?;
        non_null(residual_channels, "residual_channels")?;
        // SAFETY: checked non-null; points at the caller's size_t.
        unsafe { *residual_channels = m.residual_channels() };
        Ok(())
    })
}

/// The model card (JSON, UTF-8) of the model: PDE, grid, channel names and units, normalisation,
/// defaults, provenance, evaluation figures. Owned by the model; valid until its last handle is freed.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_card(
    m: *const piddm_model,
    json: *mut *const c_char,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        non_null(json, "json")?;
        // SAFETY: checked non-null; the string lives as long as the model.
        unsafe { *json = model.card_cstr().as_ptr() };
        Ok(())
    })
}

/// Generates `batch` samples (1 to PIDDM_MAX_BATCH) in one network evaluation each, with eps drawn
/// from `seed` (the same seed gives the same bits). `out` holds batch * channels * ny * nx floats
/// (out_len), written in place, physical units.
#[no_mangle]
pub unsafe extern "C" fn piddm_generate(
    m: *const piddm_model,
    seed: u64,
    batch: usize,
    out: *mut f32,
    out_len: usize,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let m = unsafe { model_ref(m) }?;
        // SAFETY: `out` is NULL or holds out_len writable floats, as documented.
        let out = unsafe { slice_mut(out, out_len, "out") }?;
        m.generate(seed, batch, out)
    })
}

/// The PDE residual of caller fields: `fields` [batch][channels][ny][nx], `residual` receives
/// [batch][residual_channels][ny][nx] (`piddm_model_residual_channels`: 1 but for a model whose
/// channels are time levels), zero where no equation holds (the boundary ring, a first level).
/// `mean_sq` (may be NULL) receives the mean over the batch of each sample's mean squared residual
/// over the points where one holds.
#[no_mangle]
pub unsafe extern "C" fn piddm_residual(
    m: *const piddm_model,
    fields: *const f32,
    batch: usize,
    residual: *mut f32,
    residual_len: usize,
    mean_sq: *mut f64,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        let n = field_count(model, batch)?;
        // SAFETY: `fields` is NULL or holds batch * channels * ny * nx floats, as documented.
        let fields = unsafe { slice(fields, n, "fields") }?;
        // SAFETY: `residual` is NULL or holds residual_len writable floats.
        let r = unsafe { slice_mut(residual, residual_len, "residual") }?;
        let ms = model.residual(fields, batch, r)?;
        if !mean_sq.is_null() {
            // SAFETY: non-null; points at the caller's double.
            unsafe { *mean_sq = ms };
        }
        Ok(())
    })
}

/// Sets `*has` to 1 when the model has the amortised encoder (`piddm_solve` can answer in one
/// call with steps = 0), else 0.
#[no_mangle]
pub unsafe extern "C" fn piddm_model_has_amortised(
    m: *const piddm_model,
    has: *mut i32,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        non_null(has, "has")?;
        // SAFETY: non-null; points at the caller's int32_t.
        unsafe { *has = i32::from(model.has_amortised()) };
        Ok(())
    })
}

fn solve_params(model: &Model, size: usize) -> piddm_solve_params {
    let d = model.default_solve_params();
    piddm_solve_params {
        size,
        steps: d.steps as i64,
        learning_rate: d.learning_rate,
        lambda_infer: d.lambda_infer,
        seed: d.seed,
        start: start_to_c(d.start),
        optimizer: optimizer_to_c(d.optimizer),
        noise_scale: d.noise_scale,
    }
}

/// Fills `params` with the model card's solve defaults (seed 0) and sets `params->size`. `size`
/// must be `sizeof(piddm_solve_params)` of this or an earlier piddm.h (only the fields that size
/// holds are written); otherwise PIDDM_ERR_ABI and nothing is written.
#[no_mangle]
pub unsafe extern "C" fn piddm_solve_params_init(
    m: *const piddm_model,
    params: *mut piddm_solve_params,
    size: usize,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        non_null(params, "params")?;
        init_size::<piddm_solve_params>(size, "piddm_solve_params")?;
        let p = solve_params(model, size);
        // SAFETY: non-null; the caller's struct holds `size` bytes, a prefix of this layout
        // (checked above), and `p` is a live value of at least that size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&p as *const piddm_solve_params).cast::<u8>(),
                params.cast::<u8>(),
                size,
            )
        };
        Ok(())
    })
}

/// Zeroes `report` and sets `report->size` (then set `loss_history` if you want it). `size` must
/// be `sizeof(piddm_solve_report)`; otherwise PIDDM_ERR_ABI and nothing is written.
#[no_mangle]
pub unsafe extern "C" fn piddm_solve_report_init(
    report: *mut piddm_solve_report,
    size: usize,
) -> piddm_status {
    wrap(|| {
        non_null(report, "report")?;
        init_size::<piddm_solve_report>(size, "piddm_solve_report")?;
        let r = piddm_solve_report {
            size,
            steps: 0,
            initial_loss: 0.0,
            final_loss: 0.0,
            misfit: 0.0,
            residual: 0.0,
            loss_history: std::ptr::null_mut(),
            loss_history_len: 0,
        };
        // SAFETY: non-null, and the caller's struct is sizeof(piddm_solve_report) bytes.
        unsafe { report.write(r) };
        Ok(())
    })
}

/// The solve parameters `params` gives (NULL: the card's defaults), an earlier layout's missing
/// fields from the card.
///
/// # Safety
/// `params` is NULL or points at a piddm_solve_params whose `size` field is set.
unsafe fn solve_params_from_c(
    model: &Model,
    params: *const piddm_solve_params,
) -> Result<SolveParams> {
    Ok(if params.is_null() {
        model.default_solve_params()
    } else {
        // SAFETY: non-null; a piddm_solve_params starts with its size.
        let size = unsafe { check_size(params, "params", "piddm_solve_params_init") }?;
        // an earlier layout is a prefix: its fields over the card's defaults for the rest
        let mut p = solve_params(model, size);
        // SAFETY: the caller's struct holds `size` bytes (a size this library knows, at most
        // its own), read into a local of this library's full size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                params.cast::<u8>(),
                (&mut p as *mut piddm_solve_params).cast::<u8>(),
                size,
            )
        };
        if p.steps < 0 {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "steps must be 0 to {}, got {}",
                crate::limits::MAX_STEPS,
                p.steps
            ));
        }
        SolveParams {
            steps: usize::try_from(p.steps).unwrap_or(usize::MAX),
            learning_rate: p.learning_rate,
            lambda_infer: p.lambda_infer,
            seed: p.seed,
            start: start_from_c(p.start)?,
            optimizer: optimizer_from_c(p.optimizer)?,
            noise_scale: p.noise_scale,
        }
    })
}

/// Solves a forward, inverse or reconstruction problem by optimising eps: `observed` and `mask`
/// are [batch][channels][ny][nx]; entries with mask != 0 are observations (physical units), the
/// others are ignored (NaN allowed there). The answer (observations kept where observed; with the
/// card's `corrections`, settled through the PDE against them; with its `determined`, the input's
/// coarse modes that the observations determine fitted to them through the resolve graph) goes to
/// `out` (out_len = batch * channels * ny * nx). `params` NULL: the card's defaults. `report` may
/// be NULL; if not, it must be filled by piddm_solve_report_init first. On failure `out` may hold
/// partial results and `report` is unchanged.
#[no_mangle]
pub unsafe extern "C" fn piddm_solve(
    m: *const piddm_model,
    observed: *const f32,
    mask: *const u8,
    batch: usize,
    params: *const piddm_solve_params,
    out: *mut f32,
    out_len: usize,
    report: *mut piddm_solve_report,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        let n = field_count(model, batch)?;
        // SAFETY: `observed` and `mask` are NULL or hold n values each, `out` out_len, as documented.
        let (observed, mask, out) = unsafe {
            (
                slice(observed, n, "observed")?,
                slice(mask, n, "mask")?,
                slice_mut(out, out_len, "out")?,
            )
        };
        if !report.is_null() {
            // SAFETY: non-null; the header requires a piddm_solve_report, which starts with its size.
            unsafe { check_size(report, "report", "piddm_solve_report_init") }?;
        }
        // SAFETY: `params` is NULL or a piddm_solve_params the caller initialised.
        let p = unsafe { solve_params_from_c(model, params) }?;
        let r = model.solve(observed, mask, batch, &p, out)?;
        if !report.is_null() {
            // SAFETY: checked non-null and of this library's size above.
            let rep = unsafe { &mut *report };
            rep.steps = r.steps as i64;
            rep.initial_loss = r.loss_history.first().copied().unwrap_or(f64::NAN);
            rep.final_loss = r.loss_history.last().copied().unwrap_or(f64::NAN);
            rep.misfit = r.misfit;
            rep.residual = r.residual;
            if !rep.loss_history.is_null() {
                let k = rep.loss_history_len.min(r.loss_history.len());
                // SAFETY: a non-NULL loss_history holds loss_history_len writable doubles.
                unsafe { std::slice::from_raw_parts_mut(rep.loss_history, k) }
                    .copy_from_slice(&r.loss_history[..k]);
            }
        }
        Ok(())
    })
}

/// K = `answers` answers to each observation (2 to PIDDM_MAX_SPREAD_ANSWERS) and what they say
/// together: their pointwise mean into `mean` and their std (K - 1 in the denominator) times the
/// model's spread calibration into `std` (each out_len = batch * channels * ny * nx; distinct
/// buffers), so that mean +- 2 std is the band the card calibrated to its `spread.coverage` (0.95)
/// of the unknown points on held-out problems. Answer k is `piddm_solve`'s with seed
/// `params->seed + k`, except that z is drawn at the calibration's noise scale (1 on a model without
/// one), whatever `params->noise_scale` says. Each sample takes the std scale of the calibrated task
/// nearest to its mask (the share of each channel observed; `piddm_model_card` lists the tasks),
/// written to `std_scale` ([batch] doubles) unless it is NULL; 1 where the card has no calibration.
/// `params` NULL: the card's defaults. On failure the outputs may hold partial results.
#[no_mangle]
pub unsafe extern "C" fn piddm_solve_spread(
    m: *const piddm_model,
    observed: *const f32,
    mask: *const u8,
    batch: usize,
    answers: usize,
    params: *const piddm_solve_params,
    mean: *mut f32,
    std: *mut f32,
    out_len: usize,
    std_scale: *mut f64,
) -> piddm_status {
    wrap(|| {
        // SAFETY: `m` is NULL or a live handle.
        let model = unsafe { model_ref(m) }?;
        let n = field_count(model, batch)?;
        non_null(mean, "mean")?;
        non_null(std, "std")?;
        let bytes = out_len.saturating_mul(std::mem::size_of::<f32>());
        let (a, b) = (mean as usize, std as usize);
        if a < b.saturating_add(bytes) && b < a.saturating_add(bytes) {
            return Err(err!(
                PIDDM_ERR_INVALID_ARGUMENT,
                "mean and std must be distinct buffers"
            ));
        }
        // SAFETY: `observed` and `mask` are NULL or hold n values each, `mean` and `std` out_len
        // each and do not overlap (checked above), `std_scale` NULL or batch, as documented.
        let (observed, mask, mean, std) = unsafe {
            (
                slice(observed, n, "observed")?,
                slice(mask, n, "mask")?,
                slice_mut(mean, out_len, "mean")?,
                slice_mut(std, out_len, "std")?,
            )
        };
        // SAFETY: `params` is NULL or a piddm_solve_params the caller initialised.
        let p = unsafe { solve_params_from_c(model, params) }?;
        let scales = model.solve_spread(observed, mask, batch, answers, &p, mean, std)?;
        if !std_scale.is_null() {
            // SAFETY: a non-NULL std_scale holds batch writable doubles.
            unsafe { std::slice::from_raw_parts_mut(std_scale, batch) }.copy_from_slice(&scales);
        }
        Ok(())
    })
}

/// ABI 1's initialisers, kept as symbols (not in the header) so that a program built against ABI 1
/// gets a status and a message instead of dying on an unresolved symbol. They write nothing.
#[no_mangle]
pub extern "C" fn piddm_options_default(_opts: *mut c_void) -> piddm_status {
    wrap(|| Err(abi1("piddm_options_default", "piddm_options_init")))
}

/// See [`piddm_options_default`].
#[no_mangle]
pub extern "C" fn piddm_solve_params_default(
    _m: *const c_void,
    _params: *mut c_void,
) -> piddm_status {
    wrap(|| {
        Err(abi1(
            "piddm_solve_params_default",
            "piddm_solve_params_init",
        ))
    })
}

fn abi1(old: &str, new: &str) -> crate::Error {
    err!(
        PIDDM_ERR_ABI,
        "{old} is from piddm ABI 1; this library is ABI {PIDDM_ABI_VERSION}, whose structs start \
         with a size: rebuild the program against this piddm.h and call {new}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options of the size before `precision` (40 bytes, its last 4 padding): init writes only
    /// those bytes, load reads them and takes fp32 whatever the padding holds. The full size
    /// refuses a precision or a `reserved` it does not know, naming the field, before any file is
    /// read.
    #[test]
    fn options_before_precision_stay_accepted() {
        let old = std::mem::offset_of!(piddm_options, precision).next_multiple_of(8);
        assert_eq!(old, 40);
        assert!(std::mem::size_of::<piddm_options>() > old);
        let mut buf = [0xABu8; std::mem::size_of::<piddm_options>()];
        let opts = buf.as_mut_ptr().cast::<piddm_options>();
        // SAFETY: the buffer holds a whole piddm_options; init and read_options copy bytes, so
        // its alignment does not matter.
        let s = unsafe { piddm_options_init(opts, old) };
        assert_eq!(s, piddm_status::PIDDM_OK);
        assert!(
            buf[old..].iter().all(|&b| b == 0xAB),
            "init wrote past the caller's size"
        );
        // SAFETY: `old` readable bytes at `opts`.
        let c = unsafe { read_options(opts, old) };
        assert_eq!((c.precision, c.reserved, c.verify_weights), (0, 0, 1));
        let path = CString::new("/nonexistent/model.onnx").unwrap();
        let load = |o: &piddm_options| {
            let mut m = std::ptr::null_mut();
            // SAFETY: valid C string, options and out-pointer.
            let s = unsafe { piddm_model_load(path.as_ptr(), o, &mut m) };
            assert!(m.is_null());
            // SAFETY: piddm_last_error never returns NULL and its string is NUL-terminated.
            let msg = unsafe { CStr::from_ptr(piddm_last_error()) };
            (s, msg.to_string_lossy().into_owned())
        };
        // SAFETY: a whole piddm_options.
        let mut o: piddm_options = unsafe { std::mem::zeroed() };
        // SAFETY: as above, this library's size.
        unsafe { piddm_options_init(&mut o, std::mem::size_of_val(&o)) };
        assert_eq!(o.precision, piddm_precision::PIDDM_PRECISION_FP32 as i32);
        let (s, _) = load(&o);
        assert_eq!(
            s,
            piddm_status::PIDDM_ERR_IO,
            "a valid precision reaches the file"
        );
        let (s, msg) = load(&piddm_options { precision: 7, ..o });
        assert_eq!(s, piddm_status::PIDDM_ERR_INVALID_ARGUMENT);
        assert!(msg.contains("precision is 7"), "{msg}");
        let (s, msg) = load(&piddm_options { reserved: 1, ..o });
        assert_eq!(s, piddm_status::PIDDM_ERR_INVALID_ARGUMENT);
        assert!(msg.contains("reserved"), "{msg}");
    }

    /// Every start and optimiser has a C value and comes back from it; other values are refused.
    #[test]
    fn enums_round_trip_through_their_c_values() {
        for s in [Start::Auto, Start::Random, Start::Amortised] {
            assert_eq!(start_from_c(start_to_c(s)).unwrap(), s);
        }
        for o in [Optimizer::Adam, Optimizer::Lbfgs] {
            assert_eq!(optimizer_from_c(optimizer_to_c(o)).unwrap(), o);
        }
        assert_eq!(start_to_c(Start::Amortised), 2);
        assert_eq!(optimizer_to_c(Optimizer::Lbfgs), 1);
        for bad in [-1, 3, i32::MAX] {
            assert!(start_from_c(bad).is_err() && optimizer_from_c(bad).is_err());
        }
    }

    /// A panic inside an entry point becomes PIDDM_ERR_PANIC with a message, and the next call
    /// on the thread starts clean.
    #[test]
    fn panics_become_a_status() {
        let s = wrap(|| panic!("boom"));
        assert_eq!(s, piddm_status::PIDDM_ERR_PANIC);
        // SAFETY: piddm_last_error never returns NULL and its string is NUL-terminated.
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
            // SAFETY: as above.
            unsafe { CStr::from_ptr(piddm_last_error()) }
                .to_bytes()
                .len(),
            0
        );
        let name = |s: i32| {
            // SAFETY: piddm_status_name returns a static NUL-terminated string.
            unsafe { CStr::from_ptr(piddm_status_name(s)) }
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            name(piddm_status::PIDDM_ERR_PANIC as i32),
            "PIDDM_ERR_PANIC"
        );
        assert_eq!(name(piddm_status::PIDDM_ERR_ABI as i32), "PIDDM_ERR_ABI");
        for bad in [-1, 11, i32::MIN, i32::MAX] {
            assert_eq!(name(bad), "PIDDM_UNKNOWN_STATUS");
        }
    }
}
