use std::process::ExitCode;

use clap::Parser;

use duckflock::config::{Cli, Command};

/// A start-up error is one line naming what failed (`{:#}` prints the
/// context chain), not a backtrace: `RUST_BACKTRACE` is for panics.
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "duckflock=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duckflock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            rt.block_on(duckflock::server::serve(cfg))
        }
        Command::Load(args) => rt.block_on(duckflock::load::run(args)),
    }
}
