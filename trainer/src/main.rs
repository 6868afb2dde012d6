use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use piddm_trainer::config::Preset;
use piddm_trainer::dataset::{self, Dataset};
use piddm_trainer::eval::{self, EvalInputs};
use piddm_trainer::pde::{self, Grid, Pde};
use piddm_trainer::{export, pipeline, student, teacher, train};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "piddm-train",
    version,
    about = "Train, distil and evaluate physics-informed one-step PDE surrogates"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a PDE data set with the numerical solver (safetensors).
    Data {
        /// The family: darcy, poisson or helmholtz.
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
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        stop_after: Option<u64>,
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
        settings: piddm_trainer::baselines::Settings,
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
    },
    /// Evaluate teacher and students side by side on a test set.
    Eval {
        #[arg(long)]
        preset: String,
        #[arg(long)]
        teacher: PathBuf,
        #[arg(long)]
        student_lambda0: PathBuf,
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
        /// The student's amortised encoder (`amortise`): exported as the amortised part, and the
        /// preset's [amortise.refine] become the card's solve defaults.
        #[arg(long)]
        encoder: Option<PathBuf>,
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
    },
    /// Print the model card of an exported ONNX file.
    Inspect { file: PathBuf },
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
        settings: piddm_trainer::diagnose::Settings,
        /// Directory for diagnosis.json and diagnosis.md.
        #[arg(long)]
        out: PathBuf,
    },
    /// Conditional answers of an exported model on fresh problems through the C ABI: forward,
    /// inverse and sparse inverse for the one-call answer, the card's defaults and the published
    /// solve, and the spread of several answers.
    Conditional {
        #[command(flatten)]
        settings: piddm_trainer::conditional::Settings,
        /// Directory for conditional.json, conditional.md and conditional.png.
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

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let command = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let command = command.replacen(
        &std::env::args().next().unwrap_or_default(),
        "piddm-train",
        1,
    );
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint");
        train::request_stop();
    })
    .context("installing the Ctrl-C handler")?;
    match cli.cmd {
        Cmd::Data {
            pde,
            set,
            res,
            n,
            seed,
            out,
        } => {
            let pde = Pde::from_parts(&pde, &pde::parse_settings(&set)?)?;
            let d = dataset::generate(
                pde,
                Grid::new(res)?,
                n,
                seed,
                piddm_trainer::edm::Edm::default().sigma_data,
            )?;
            d.save(&out)?;
            eprintln!(
                "wrote {} (max solver residual {:.1e})",
                out.display(),
                d.meta.max_solver_residual
            );
        }
        Cmd::Teacher {
            preset,
            data,
            out,
            resume,
            stop_after,
        } => {
            let preset = Preset::load(&preset)?;
            let data = Dataset::load(&data)?;
            teacher::train_teacher(&preset, &data, &out, resume, stop_after)?;
        }
        Cmd::Distill {
            preset,
            teacher,
            out,
            lambda_train,
            resume,
            stop_after,
        } => {
            let preset = Preset::load(&preset)?;
            let lambda = lambda_train.unwrap_or(preset.student.lambda_train);
            student::distill(&preset, &teacher, lambda, &out, resume, stop_after)?;
        }
        Cmd::Pidm {
            preset,
            data,
            teacher,
            weight,
            steps,
            out,
            resume,
            stop_after,
        } => {
            let preset = Preset::load(&preset)?;
            let data = Dataset::load(&data)?;
            piddm_trainer::pidm::train_pidm(
                &preset, &data, &teacher, weight, steps, &out, resume, stop_after,
            )?;
        }
        Cmd::Baselines {
            preset,
            run,
            pidm,
            settings,
            out,
        } => {
            use piddm_trainer::baselines;
            let preset = Preset::load(&preset)?;
            let inputs = baselines::Inputs { run, pidm, command };
            let r = baselines::compare(&preset, &settings, &inputs)?;
            baselines::write(&out, preset.data.pde.name(), &r)?;
            print!("{}", std::fs::read_to_string(out.join("baselines.md"))?);
        }
        Cmd::Amortise {
            preset,
            student,
            data,
            out,
            resume,
            stop_after,
        } => {
            let preset = Preset::load(&preset)?;
            let data = Dataset::load(&data)?;
            piddm_trainer::amortise::train_encoder(
                &preset, &student, &data, &out, resume, stop_after,
            )?;
        }
        Cmd::Eval {
            preset,
            teacher,
            student_lambda0,
            student,
            test,
            out,
        } => {
            let preset = Preset::load(&preset)?;
            let inputs = EvalInputs {
                teacher: &teacher,
                student_lambda0: &student_lambda0,
                student: &student,
                test: &test,
                out: &out,
                command,
            };
            let r = eval::evaluate(&preset, &inputs)?;
            print!("{}", eval::markdown(&r));
        }
        Cmd::Export {
            student,
            out,
            preset,
            eval,
            encoder,
        } => {
            let preset = Preset::load(&preset)?;
            let evaluation = match eval {
                Some(p) => serde_json::from_str(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                )?,
                None => serde_json::json!({}),
            };
            let fast = match (&encoder, &preset.amortise) {
                (Some(e), Some(a)) => Some((e.as_path(), &a.refine)),
                (Some(_), None) => {
                    anyhow::bail!("preset {} has no [amortise] section", preset.name)
                }
                (None, _) => None,
            };
            let card = export::export(&student, &out, &preset.infer, fast, evaluation)?;
            let siblings: Vec<&str> = [Some(&card.files.refine), Some(&card.files.residual)]
                .into_iter()
                .chain([card.files.amortised.as_ref()])
                .flatten()
                .map(String::as_str)
                .collect();
            eprintln!(
                "wrote {} (+ {}); weights sha256 {}",
                out.display(),
                siblings.join(", "),
                card.weights_sha256
            );
        }
        Cmd::Demo {
            model,
            problems,
            seed,
            out,
        } => {
            print!(
                "{}",
                piddm_trainer::demo::run(&model, problems, seed, &out)?
            );
        }
        Cmd::Problems {
            model,
            n,
            seed,
            out,
        } => {
            // the card is all it needs: no ONNX Runtime session
            let (card, _) = export::read_card(&model)?;
            piddm_trainer::examples::darcy_problems(&card, n, seed)
                .with_context(|| model.display().to_string())?
                .write(&out)?;
            eprintln!("wrote {n} problems to {}", out.display());
        }
        Cmd::Diagnose {
            student,
            preset,
            settings,
            out,
        } => {
            let preset = Preset::load(&preset)?;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let d = piddm_trainer::diagnose::diagnose(&student, &preset, &settings, command)?;
            std::fs::create_dir_all(&out)?;
            let md = piddm_trainer::diagnose::markdown(&d);
            piddm_trainer::fsutil::write_atomic(
                &out.join("diagnosis.json"),
                serde_json::to_string_pretty(&d)?.as_bytes(),
            )?;
            piddm_trainer::fsutil::write_atomic(&out.join("diagnosis.md"), md.as_bytes())?;
            print!("{md}");
        }
        Cmd::Conditional { settings, out } => {
            let r = piddm_trainer::conditional::run(&settings, command, &out)?;
            let md = piddm_trainer::conditional::markdown(&r);
            piddm_trainer::fsutil::write_atomic(
                &out.join("conditional.json"),
                serde_json::to_string_pretty(&r)?.as_bytes(),
            )?;
            piddm_trainer::fsutil::write_atomic(&out.join("conditional.md"), md.as_bytes())?;
            print!("{md}");
        }
        Cmd::BaselinesReport { dir } => {
            use piddm_trainer::baselines;
            baselines::render(&dir, &baselines::read_all(&dir.join("baselines.json"))?)?;
            print!("{}", std::fs::read_to_string(dir.join("baselines.md"))?);
        }
        Cmd::ExamplesReport { dir } => {
            print!("{}", piddm_trainer::examples::report(&dir)?);
        }
        Cmd::Families { dir } => {
            print!("{}", eval::families_table(&dir)?);
        }
        Cmd::Inspect { file } => {
            let (card, m) = export::read_card(&file)?;
            let g = m.graph.as_ref().context("model has no graph")?;
            println!(
                "{}: {:?} graph, opset {}, IR {}, {} nodes, {} initializers",
                file.display(),
                card.part,
                m.opset_import.first().map_or(0, |o| o.version),
                m.ir_version,
                g.node.len(),
                g.initializer.len()
            );
            println!(
                "inputs:  {}",
                g.input
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "outputs: {}",
                g.output
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("{}", serde_json::to_string_pretty(&card)?);
        }
        Cmd::Pipeline { preset, out } => {
            let preset = Preset::load(&preset)?;
            let dir = out.unwrap_or_else(|| PathBuf::from("runs").join(&preset.name));
            pipeline::run(&preset, &dir, command)?;
        }
    }
    Ok(())
}
