//! The `fdbvfs` command-line tool: see `fdbvfs --help` and `src/cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
