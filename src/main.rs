//! The egress-milter command: arguments, logging set-up, exit codes.

use clap::{Parser, Subcommand};
use egress_milter::config::Config;
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(
    name = "egress-milter",
    version,
    about = "Outbound policy milter for Postfix and Sendmail"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the milter in the foreground.
    Run {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file: prints "ok" or every error; exit 0 or 1.
    CheckConfig {
        #[arg(long, short, default_value = "/etc/egress-milter/milter.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            egress_milter::log::init(config.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("egress-milter: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(egress_milter::server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("egress-milter: {e}");
                    eprintln!("egress-milter: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
