//! `myinvois-auth`: MyInvois access tokens for any program on this host
//! (PHP, .NET, Java, Python, shell), through the host's SQLite token store,
//! so that repeated calls reuse one token and every program keeps to the
//! client ID's login limit together.
//!
//! The arguments are in `args`; the configuration from the environment and
//! flags (the secret never from the command line) in `settings`; the
//! commands in `token`, `claims` and `check` (which forces a real login
//! through `fresh`); what each failure means, and its exit code, in `exit`; lines that
//! never panic on a closed pipe in `output`.

mod args;
mod check;
mod claims;
mod exit;
mod fresh;
mod output;
mod settings;
mod token;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start the runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let settings = settings::Settings::resolve(&cli.config)?;
    match cli.command {
        Command::Token { on_behalf_of } => token::run(&settings, on_behalf_of.as_deref()).await,
        Command::Claims { on_behalf_of } => claims::run(&settings, on_behalf_of.as_deref()).await,
        Command::Check { on_behalf_of } => check::run(&settings, &on_behalf_of).await,
    }
}

/// The library's warnings (a bad store file, a login that failed) on
/// stderr; more with `-v`. Never a secret: the library logs none.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .try_init();
}
