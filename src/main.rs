use std::process::ExitCode;

use clap::Parser;

use duckflock::config::{Cli, Command, LogFormat};

/// Logs to stderr, filtered by `RUST_LOG` (default: duckflock's info, the
/// rest's warnings), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "duckflock=info,warn".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
}

/// A start-up error is one line naming what failed (`{:#}` prints the
/// context chain), not a backtrace: `RUST_BACKTRACE` is for panics.
fn main() -> ExitCode {
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
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging(LogFormat::Text);
    }
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            init_logging(cfg.log_format);
            rt.block_on(duckflock::server::serve(cfg))
        }
        Command::Load(args) => rt.block_on(duckflock::load::run(args)),
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.strip_suffix('\n').unwrap_or(&password);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                anyhow::bail!("no password on stdin");
            }
            println!("{}", duckflock::auth::hash_password(password)?);
            Ok(())
        }
    }
}
