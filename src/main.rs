//! The `mcpgram` command line: run the bot, check a config file, or try a
//! server from the terminal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mcpgram::logging::chain;
use mcpgram::{app, config, logging, terminal};

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
    /// List a configured server's tools from the terminal.
    Tools {
        /// The server's id in the config.
        server: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    mcpgram::tls::install();
    let loaded = config::load(&cli.config);
    let command = cli.command.unwrap_or(Cmd::Run);
    let config = match (loaded, &command) {
        (Ok(config), Cmd::CheckConfig) => {
            println!(
                "{}: OK ({} server(s))",
                cli.config.display(),
                config.servers.len()
            );
            return ExitCode::SUCCESS;
        }
        (Ok(config), _) => config,
        (Err(error), _) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mcpgram: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Cmd::Run => match runtime.block_on(app::run(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mcpgram: {}", logging::scrub(&chain(&error).to_string()));
                ExitCode::FAILURE
            }
        },
        Cmd::Tools { server } => runtime.block_on(terminal::tools(config, &server)),
        Cmd::CheckConfig => unreachable!("answered above"),
    }
}
