//! The stages of a run, each training or using what the one before it made: the teacher, its PIDM
//! continuation (a baseline), the teacher's pair sets, the one-step students, the solve with a
//! student, and the amortised encoder.

pub mod teacher;

pub mod pidm;

pub mod pairs;

pub mod student;

pub mod solve;

pub mod encoder;

use std::path::{Path, PathBuf};

/// Where the stages of a pipeline run keep their files in its directory.
pub struct RunPaths {
    pub train: PathBuf,
    pub test: PathBuf,
    pub teacher: PathBuf,
    pub student_lambda0: PathBuf,
    pub student: PathBuf,
    /// The student's amortised encoder (presets with an [amortise] section).
    pub encoder: PathBuf,
    pub eval: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> Self {
        RunPaths {
            train: dir.join("data-train.safetensors"),
            test: dir.join("data-test.safetensors"),
            teacher: dir.join("teacher.ckpt"),
            student_lambda0: dir.join("student-lambda0.ckpt"),
            student: dir.join("student.ckpt"),
            encoder: dir.join("encoder.ckpt"),
            eval: dir.join("eval"),
        }
    }
}
