//! The `kubedisco` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use kubedisco::cli::{Cli, run};

fn main() -> ExitCode {
    run(Cli::parse())
}
