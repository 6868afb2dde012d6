//! A model loaded through the C ABI, as a C or Fortran solver loads it: the calls `conditional` and
//! `piddm-bench` make, each checked, the library's message in the error.

use anyhow::{Context, Result};
use piddm::ffi;
use std::ffi::CString;
use std::path::Path;

pub struct Handle(*mut ffi::piddm_model);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: a handle from piddm_model_load, freed once.
        unsafe { ffi::piddm_model_free(&mut self.0) };
    }
}

/// `s` as a result, with the thread's last error message.
pub fn check(s: piddm::Status, what: &str) -> Result<()> {
    if s != piddm::Status::PIDDM_OK {
        // SAFETY: piddm_last_error returns a NUL-terminated thread-local string.
        let msg = unsafe { std::ffi::CStr::from_ptr(ffi::piddm_last_error()) };
        anyhow::bail!("{what}: {s:?}: {}", msg.to_string_lossy());
    }
    Ok(())
}

impl Handle {
    /// `piddm_model_load` with the default options.
    pub fn load(path: &Path) -> Result<Self> {
        let c = CString::new(path.to_str().context("model path")?)?;
        let mut h = std::ptr::null_mut();
        // SAFETY: valid C string, NULL options (defaults), out-pointer to a local.
        check(
            unsafe { ffi::piddm_model_load(c.as_ptr(), std::ptr::null(), &mut h) },
            "piddm_model_load",
        )?;
        Ok(Handle(h))
    }

    /// `piddm_model_load` with the default options but the networks' `precision`.
    pub fn load_precision(path: &Path, precision: piddm::card::Precision) -> Result<Self> {
        let c = CString::new(path.to_str().context("model path")?)?;
        // SAFETY: all-zero is a valid value of this plain C struct; init then fills it.
        let mut o: ffi::piddm_options = unsafe { std::mem::zeroed() };
        // SAFETY: struct of this library's size.
        check(
            unsafe { ffi::piddm_options_init(&mut o, std::mem::size_of_val(&o)) },
            "piddm_options_init",
        )?;
        o.precision = match precision {
            piddm::card::Precision::Fp32 => ffi::piddm_precision::PIDDM_PRECISION_FP32,
            piddm::card::Precision::Int8 => ffi::piddm_precision::PIDDM_PRECISION_INT8,
        } as i32;
        let mut h = std::ptr::null_mut();
        // SAFETY: valid C string, initialised options, out-pointer to a local.
        check(
            unsafe { ffi::piddm_model_load(c.as_ptr(), &o, &mut h) },
            "piddm_model_load",
        )?;
        Ok(Handle(h))
    }

    /// (channels, ny, nx).
    pub fn shape(&self) -> Result<(usize, usize, usize)> {
        let (mut c, mut ny, mut nx) = (0usize, 0usize, 0usize);
        // SAFETY: live handle, out-pointers to locals.
        check(
            unsafe { ffi::piddm_model_shape(self.0, &mut c, &mut ny, &mut nx) },
            "piddm_model_shape",
        )?;
        Ok((c, ny, nx))
    }

    pub fn has_amortised(&self) -> Result<bool> {
        let mut has = 0i32;
        // SAFETY: live handle, out-pointer to a local.
        check(
            unsafe { ffi::piddm_model_has_amortised(self.0, &mut has) },
            "piddm_model_has_amortised",
        )?;
        Ok(has == 1)
    }

    /// The card's solve defaults.
    pub fn defaults(&self) -> Result<ffi::piddm_solve_params> {
        // SAFETY: all-zero is a valid value of this plain C struct; init then fills it.
        let mut p: ffi::piddm_solve_params = unsafe { std::mem::zeroed() };
        // SAFETY: live handle, struct of this library's size.
        check(
            unsafe { ffi::piddm_solve_params_init(self.0, &mut p, std::mem::size_of_val(&p)) },
            "piddm_solve_params_init",
        )?;
        Ok(p)
    }

    /// `piddm_generate` of `out.len()` values (a whole number of samples).
    pub fn generate(&self, seed: u64, batch: usize, out: &mut [f32]) -> Result<()> {
        // SAFETY: live handle; out holds out.len() values, checked by the library against batch.
        check(
            unsafe { ffi::piddm_generate(self.0, seed, batch, out.as_mut_ptr(), out.len()) },
            "piddm_generate",
        )
    }

    /// `piddm_solve` into `out` (as long as `observed`), without a report.
    pub fn solve_into(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        p: &ffi::piddm_solve_params,
        out: &mut [f32],
    ) -> Result<()> {
        anyhow::ensure!(
            mask.len() == observed.len() && out.len() == observed.len(),
            "observations, mask and answer must have one length"
        );
        // SAFETY: live handle; observed, mask and out hold batch x field values (checked by the
        // library against the model's shape); NULL report.
        check(
            unsafe {
                ffi::piddm_solve(
                    self.0,
                    observed.as_ptr(),
                    mask.as_ptr(),
                    batch,
                    p,
                    out.as_mut_ptr(),
                    out.len(),
                    std::ptr::null_mut(),
                )
            },
            "piddm_solve",
        )
    }

    /// [`Handle::solve_into`] into a new vector.
    pub fn solve(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        p: &ffi::piddm_solve_params,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0f32; observed.len()];
        self.solve_into(observed, mask, batch, p, &mut out)?;
        Ok(out)
    }
    /// `piddm_solve_spread`: `answers` answers to each observation; their mean, their std with the
    /// card's calibration applied, and the std scale each sample took.
    pub fn solve_spread(
        &self,
        observed: &[f32],
        mask: &[u8],
        batch: usize,
        answers: usize,
        p: &ffi::piddm_solve_params,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f64>)> {
        anyhow::ensure!(
            mask.len() == observed.len(),
            "observations and mask must have one length"
        );
        let (mut mean, mut std) = (vec![0f32; observed.len()], vec![0f32; observed.len()]);
        let mut scales = vec![0f64; batch];
        // SAFETY: live handle; observed, mask, mean and std hold batch x field values (checked by
        // the library against the model's shape), scales batch values.
        check(
            unsafe {
                ffi::piddm_solve_spread(
                    self.0,
                    observed.as_ptr(),
                    mask.as_ptr(),
                    batch,
                    answers,
                    p,
                    mean.as_mut_ptr(),
                    std.as_mut_ptr(),
                    mean.len(),
                    scales.as_mut_ptr(),
                )
            },
            "piddm_solve_spread",
        )?;
        Ok((mean, std, scales))
    }
}
