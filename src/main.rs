//! The `v2x` binary: parse, run one command, print the whole error chain once,
//! exit with a documented code.

use clap::{CommandFactory, Parser};
use std::process::ExitCode;
use v2x::cli::{Cli, Command};
use v2x::{exit, pipeline};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Convert(a) => pipeline::convert(a),
        Command::Batch(a) => v2x::batch::run(a),
        Command::Info(a) => pipeline::info(a),
        Command::Compare(a) => pipeline::compare_cmd(a),
        Command::Inspect(a) => pipeline::inspect_cmd(a),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "v2x", &mut std::io::stdout());
            Ok(exit::OK)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("v2x: error: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
