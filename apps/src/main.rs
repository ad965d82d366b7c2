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
use std::io::Write;
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

/// The syslog priority of a log level (journald's `<N>` prefix on stderr lines).
fn syslog_priority(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut log = env_logger::Builder::new();
    log.parse_filters(&cli.log).parse_env("RUST_LOG").format_timestamp_millis();
    if journald {
        // Under systemd, stderr goes to the journal: a `<N>` syslog priority prefix sets each
        // line's priority there, and the journal stamps the time itself.
        log.format(|buf, r| writeln!(buf, "<{}>{}: {}", syslog_priority(r.level()), r.target(), r.args()));
    }
    log.init();
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
            if journald {
                for line in format!("fastpath: error: {e}").lines() {
                    eprintln!("<3>{line}");
                }
            } else {
                eprintln!("fastpath: error: {e}");
            }
            ExitCode::from(match e {
                AppError::Usage(_) => 2,
                AppError::Failed(_) => 1,
            })
        }
    }
}
