//! The command line: every subcommand of `piddm-train` and the one function each calls in the
//! module that owns its work.

use crate::apps::{conditional, demo, examples, spread};
use crate::config::Preset;
use crate::data::{dataset, Dataset};
use crate::eval::{baselines, diagnose, evaluate};
use crate::stages::{encoder, pidm, student, teacher};
use crate::{export, pipeline};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Cmd {
    /// Generate a PDE data set with the numerical solver (safetensors).
    Data {
        /// The family: darcy, poisson, helmholtz or burgers.
        #[arg(long, default_value = "darcy")]
        pde: String,
        /// A parameter of the family, KEY=VALUE (dotted keys reach nested ones: grf.alpha=2.5);
        /// repeatable. Unset parameters keep the family's defaults.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, default_value_t = 32)]
        res: usize,
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Train the EDM teacher on a data set.
    Teacher {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Continue the checkpoint at --out.
        #[arg(long)]
        resume: bool,
        /// Stop (with a checkpoint) after this many total steps.
        #[arg(long)]
        stop_after: Option<u64>,
    },
    /// Distil a one-step student from a teacher, with the PDE residual loss.
    Distill {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        teacher: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Residual weight (default: the preset's; 0 is plain distillation).
        #[arg(long)]
        lambda_train: Option<f64>,
        /// Weight of the residual mapped back to the solved field (default: the preset's).
        #[arg(long)]
        lambda_consistency: Option<f64>,
        /// Defect corrections of the output (default: the preset's; 0 leaves it as the network's).
        #[arg(long)]
        corrections: Option<usize>,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        stop_after: Option<u64>,
    },
    /// Give a trained student defect corrections of its output (`physics::correction`) without
    /// retraining it: a copy at --out whose generation, solve and export apply them. Its weights,
    /// and so an encoder's tie to them, are unchanged.
    Correct {
        #[arg(long)]
        student: PathBuf,
        #[arg(long)]
        corrections: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit gains per Fourier mode on a student's samples (a family whose levels are time levels of
    /// a periodic field: Burgers' rows, Navier-Stokes' channels), so that their first level carries
    /// the data's power per mode (`physics::recolour`): a copy at --out whose generation and export
    /// apply them. Weights unchanged; the solve's answers too.
    Recolour {
        #[arg(long)]
        student: PathBuf,
        /// The training data (their first level's spectrum is the target).
        #[arg(long)]
        data: PathBuf,
        /// The student's own samples the spectrum is measured on.
        #[arg(long, default_value_t = 2048)]
        samples: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// The weights-only form of a finished checkpoint at --out (the same path allowed): its EMA
    /// weights and metadata, a quarter of the size, without the training weights and Adam's
    /// moments. It exports, evaluates, trains an encoder and takes corrections or gains; training
    /// cannot resume from it. For shipped checkpoints no run will continue.
    Slim {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// PIDM: continue a teacher's training with a residual loss on its clean estimate D(x; sigma).
    Pidm {
        #[arg(long)]
        preset: String,
        /// The teacher's training data set.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        teacher: PathBuf,
        /// Weight of the mean R^2 of D (physical units) beside the denoising loss.
        #[arg(long)]
        weight: f64,
        /// Training steps beyond the teacher's.
        #[arg(long)]
        steps: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        stop_after: Option<u64>,
    },
    /// The paper's comparison on a pipeline run's test set: teacher, PIDM, DiffusionPDE, ECI and the
    /// students, one row per method; adds the family to DIR/baselines.json and rewrites
    /// DIR/baselines.md and DIR/baselines-<family>.png.
    Baselines {
        #[arg(long)]
        preset: String,
        /// A pipeline run directory (teacher.ckpt, student-lambda0.ckpt, student.ckpt,
        /// data-test.safetensors).
        #[arg(long)]
        run: PathBuf,
        /// A PIDM teacher (`piddm-train pidm`).
        #[arg(long)]
        pidm: Option<PathBuf>,
        #[command(flatten)]
        settings: baselines::Settings,
        #[arg(long, default_value = "trainer/results")]
        out: PathBuf,
    },
    /// Train the amortised encoder of a student: one evaluation from an observation to eps.
    Amortise {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        student: PathBuf,
        /// The student's training data set.
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        stop_after: Option<u64>,
        /// Start a new encoder from the weights of this one (trained against a sibling student
        /// of the same network, e.g. distilled from the same teacher with another padding).
        #[arg(long)]
        init: Option<PathBuf>,
    },
    /// Evaluate teacher and students side by side on a test set.
    Eval {
        #[arg(long)]
        preset: String,
        /// The teacher (its row is left out without it).
        #[arg(long)]
        teacher: Option<PathBuf>,
        /// The plain student (its row is left out without it).
        #[arg(long)]
        student_lambda0: Option<PathBuf>,
        #[arg(long)]
        student: PathBuf,
        #[arg(long)]
        test: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Export a student checkpoint to the ONNX artifact (NAME.onnx plus NAME.refine.onnx and
    /// NAME.residual.onnx beside it).
    Export {
        #[arg(long)]
        student: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Preset whose inference defaults go into the model card.
        #[arg(long, default_value = "cpu")]
        preset: String,
        /// An eval.json whose figures go into the model card.
        #[arg(long)]
        eval: Option<PathBuf>,
        /// The student's amortised encoder (`piddm-train amortise`): exported as the amortised
        /// part, and the preset's [amortise.refine] become the card's solve defaults.
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// int8: also write the generate and amortised graphs with their networks quantised
        /// (NAME.int8.onnx, NAME.amortised.int8.onnx), loaded with the runtime's int8 precision.
        #[arg(long, default_value = "fp32", value_parser = piddm::card::Precision::parse)]
        precision: piddm::card::Precision,
    },
    /// The end-to-end demo on an exported model, through the runtime.
    Demo {
        #[arg(long, default_value = "examples/models/darcy32.onnx")]
        model: PathBuf,
        #[arg(long, default_value_t = 16)]
        problems: usize,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// The networks' arithmetic the model is loaded with (int8 needs graphs exported with
        /// `--precision int8`).
        #[arg(long, default_value = "fp32", value_parser = piddm::card::Precision::parse)]
        precision: piddm::card::Precision,
    },
    /// Print the model card of an exported ONNX file.
    Inspect { file: PathBuf },
    /// Re-seal an exported model after a deliberate edit of its graphs: each graph's digests are
    /// recomputed into the model card and every file is rewritten canonically.
    Seal {
        /// The main file (NAME.onnx); its sibling graphs are sealed with it.
        file: PathBuf,
    },
    /// Write fresh Darcy problems (a, the solver's u, f) for the solver examples as a field file.
    Problems {
        #[arg(long, default_value = "examples/models/darcy32.onnx")]
        model: PathBuf,
        #[arg(long, default_value_t = 50)]
        n: usize,
        /// Differs from the training (0) and evaluation seeds: coefficients the model never saw.
        #[arg(long, default_value_t = 7919)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Summarise the solver examples' results in a directory: one table, PNG figures.
    ExamplesReport { dir: PathBuf },
    /// Rewrite DIR/baselines.md and the figures from DIR/baselines.json.
    BaselinesReport {
        #[arg(default_value = "trainer/results")]
        dir: PathBuf,
    },
    /// One table across PDE families from the evaluations (eval.json files) in a directory.
    Families {
        #[arg(default_value = "trainer/results")]
        dir: PathBuf,
    },
    /// Split the forward and inverse errors on fresh problems into the student's manifold error
    /// and what the solve reaches (defaults, and a long budget with restarts).
    Diagnose {
        #[arg(long)]
        student: PathBuf,
        /// Preset whose inference settings are the defaults.
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[command(flatten)]
        settings: diagnose::Settings,
        /// Directory for diagnosis.json and diagnosis.md.
        #[arg(long)]
        out: PathBuf,
    },
    /// Conditional answers of an exported model on fresh problems through the C ABI: forward,
    /// inverse and sparse inverse for the one-call answer, the card's defaults and the published
    /// solve, and the spread of several answers.
    Conditional {
        #[command(flatten)]
        settings: conditional::Settings,
        /// Directory for conditional.json, conditional.md and conditional.png.
        #[arg(long)]
        out: PathBuf,
    },
    /// Calibrates the spread of an exported model's answers over seeds on held-out problems
    /// through the C ABI (per task, the std scale for a 95 % band) and writes it into the model's
    /// card, where `piddm_solve_spread` applies it.
    Calibrate {
        #[command(flatten)]
        settings: spread::Settings,
        /// Directory for spread.json and spread.md.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every stage of a preset into one directory (continues an interrupted run).
    Pipeline {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs `cmd`; `command` is the command line as typed, recorded in reports.
pub fn run(cmd: Cmd, command: String) -> Result<()> {
    let preset = |name: &str| Preset::load(name);
    match cmd {
        Cmd::Data {
            pde,
            set,
            res,
            n,
            seed,
            out,
        } => dataset::generate_file(&pde, &set, res, n, seed, &out),
        Cmd::Teacher {
            preset: p,
            data,
            out,
            resume,
            stop_after,
        } => teacher::train_teacher(
            &preset(&p)?,
            &Dataset::load(&data)?,
            &out,
            resume,
            stop_after,
        )
        .map(drop),
        Cmd::Distill {
            preset: p,
            teacher,
            out,
            lambda_train,
            lambda_consistency,
            corrections,
            resume,
            stop_after,
        } => {
            let p = preset(&p)?;
            let physics = student::Physics {
                lambda_train: lambda_train.unwrap_or(p.student.lambda_train),
                lambda_consistency: lambda_consistency.unwrap_or(p.student.lambda_consistency),
                corrections: corrections.unwrap_or(p.student.corrections),
            };
            student::distill(&p, &teacher, physics, &out, resume, stop_after).map(drop)
        }
        Cmd::Correct {
            student: s,
            corrections,
            out,
        } => student::with_corrections(&s, corrections, &out),
        Cmd::Recolour {
            student: s,
            data,
            samples,
            out,
        } => student::recolour(&s, &data, samples, &out),
        Cmd::Slim { ckpt, out } => crate::checkpoint::slim(&ckpt, &out),
        Cmd::Pidm {
            preset: p,
            data,
            teacher,
            weight,
            steps,
            out,
            resume,
            stop_after,
        } => pidm::train_pidm(
            &preset(&p)?,
            &Dataset::load(&data)?,
            &teacher,
            weight,
            steps,
            &out,
            resume,
            stop_after,
        )
        .map(drop),
        Cmd::Baselines {
            preset: p,
            run,
            pidm,
            settings,
            out,
        } => {
            let inputs = baselines::Inputs { run, pidm, command };
            print!(
                "{}",
                baselines::run(&preset(&p)?, &settings, &inputs, &out)?
            );
            Ok(())
        }
        Cmd::Amortise {
            preset: p,
            student,
            data,
            out,
            resume,
            stop_after,
            init,
        } => encoder::train_encoder(
            &preset(&p)?,
            &student,
            &Dataset::load(&data)?,
            &out,
            resume,
            stop_after,
            init.as_deref(),
        )
        .map(drop),
        Cmd::Eval {
            preset: p,
            teacher,
            student_lambda0,
            student,
            test,
            out,
        } => {
            let inputs = evaluate::EvalInputs {
                teacher: teacher.as_deref(),
                student_lambda0: student_lambda0.as_deref(),
                student: &student,
                test: &test,
                out: &out,
                command,
            };
            print!(
                "{}",
                evaluate::markdown(&evaluate::evaluate(&preset(&p)?, &inputs)?)
            );
            Ok(())
        }
        Cmd::Export {
            student,
            out,
            preset: p,
            eval,
            encoder,
            precision,
        } => export::export_files(
            &student,
            &out,
            &preset(&p)?,
            eval.as_deref(),
            encoder.as_deref(),
            precision,
        ),
        Cmd::Demo {
            model,
            problems,
            seed,
            out,
            precision,
        } => {
            print!("{}", demo::run(&model, problems, seed, &out, precision)?);
            Ok(())
        }
        Cmd::Inspect { file } => {
            print!("{}", export::inspect(&file)?);
            Ok(())
        }
        Cmd::Seal { file } => {
            let card = export::reseal(&file)?;
            eprintln!(
                "sealed {} ({} graphs, card format {})",
                file.display(),
                card.parts().len(),
                card.format
            );
            Ok(())
        }
        Cmd::Problems {
            model,
            n,
            seed,
            out,
        } => examples::write_problems(&model, n, seed, &out),
        Cmd::ExamplesReport { dir } => {
            print!("{}", examples::report(&dir)?);
            Ok(())
        }
        Cmd::BaselinesReport { dir } => {
            print!("{}", baselines::redraw(&dir)?);
            Ok(())
        }
        Cmd::Families { dir } => {
            print!("{}", evaluate::families_table(&dir)?);
            Ok(())
        }
        Cmd::Diagnose {
            student,
            preset: p,
            settings,
            out,
        } => {
            print!(
                "{}",
                diagnose::run(&student, &preset(&p)?, &settings, command, &out)?
            );
            Ok(())
        }
        Cmd::Conditional { settings, out } => {
            print!("{}", conditional::run_to(&settings, command, &out)?);
            Ok(())
        }
        Cmd::Calibrate { settings, out } => {
            print!("{}", spread::run_to(&settings, command, &out)?);
            Ok(())
        }
        Cmd::Pipeline { preset: p, out } => {
            let p = preset(&p)?;
            let dir = out.unwrap_or_else(|| PathBuf::from("runs").join(&p.name));
            pipeline::run(&p, &dir, command).map(drop)
        }
    }
}

/// The command line as typed, the program named `piddm-train`: what reports record.
pub fn command_line() -> String {
    let command = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    command.replacen(
        &std::env::args().next().unwrap_or_default(),
        "piddm-train",
        1,
    )
}
