//! The `mcpgram` command line: run the bot, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mcpgram::{app, config, logging};

#[derive(Parser)]
#[command(
    version,
    about = "A Telegram bot that connects users to their accounts on MCP servers"
)]
struct Cli {
    /// The TOML config file.
    #[arg(long, short, global = true, env = "MCPGRAM_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot (the default).
    Run,
    /// Validate the config file and exit: 0 when valid, 1 with the problems.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let loaded = config::load(&cli.config);
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::CheckConfig => match loaded {
            Ok(config) => {
                println!(
                    "{}: OK ({} server(s))",
                    cli.config.display(),
                    config.servers.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run => {
            let config = match loaded {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("mcpgram: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
