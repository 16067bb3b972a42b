//! The `tenantgate` binary: parse the command line, load and check the configuration, run the
//! chosen component. Everything of substance lives in the workspace crates.

mod backup;
mod cli;
mod commands;
mod dev;
mod logging;

use clap::Parser;

/// mimalloc instead of glibc malloc: the edge allocates per request (Pingora's header maps and
/// buffers), and glibc's malloc/free were the largest single cost in its CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let _log_guard = logging::init(cli.log_format);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
