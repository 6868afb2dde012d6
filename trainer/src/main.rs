use anyhow::{Context, Result};
use clap::Parser;
use piddm_trainer::{cli, train};

#[derive(Parser)]
#[command(
    name = "piddm-train",
    version,
    about = "Train, distil and evaluate physics-informed one-step PDE surrogates"
)]
struct Cli {
    #[command(subcommand)]
    cmd: cli::Cmd,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Cli::parse();
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupt: finishing the current step and writing a checkpoint");
        train::request_stop();
    })
    .context("installing the Ctrl-C handler")?;
    cli::run(args.cmd, cli::command_line())
}
