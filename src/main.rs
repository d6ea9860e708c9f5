//! The `perfpilot` binary: parses the command line and hands it to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = perfpilot::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("perfpilot: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(perfpilot::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("perfpilot: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
