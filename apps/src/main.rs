//! The `fastpath` command.

mod bench;
mod cli;
mod ctl_client;
mod l2fwd;
mod pktgen;
mod ports;
mod run;
mod vswitch;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

/// How a command failed: usage errors exit with 2, failures with 1.
#[derive(Debug)]
pub enum AppError {
    /// Bad arguments, specs or settings.
    Usage(String),
    /// Something failed while running.
    Failed(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Usage(m) | AppError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<fastpath_pmd::Error> for AppError {
    fn from(e: fastpath_pmd::Error) -> Self {
        use fastpath_pmd::Error as E;
        match e {
            E::Spec { .. } | E::Config(_) | E::Queue(_) | E::Core(_) => AppError::Usage(e.to_string()),
            _ => AppError::Failed(e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    env_logger::Builder::new().parse_filters(&cli.log).parse_env("RUST_LOG").format_timestamp_millis().init();
    let r = match &cli.cmd {
        cli::Cmd::L2fwd(a) => l2fwd::run(a),
        cli::Cmd::Bench(a) => bench::run_bench(a),
        cli::Cmd::Pktgen(a) => pktgen::run(a),
        cli::Cmd::Vswitch(a) => vswitch::run(a),
        cli::Cmd::Ctl(a) => ctl_client::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastpath: error: {e}");
            ExitCode::from(match e {
                AppError::Usage(_) => 2,
                AppError::Failed(_) => 1,
            })
        }
    }
}
