//! `fdbvfs completions SHELL` and `fdbvfs man`: files generated from the
//! command definition itself (clap_complete, clap_mangen), so they never
//! fall behind the options.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Error};

/// Writes the completion script for `shell`. Install it where the shell
/// looks: bash `/usr/share/bash-completion/completions/fdbvfs`, zsh a
/// directory of `$fpath` as `_fdbvfs`, fish
/// `~/.config/fish/completions/fdbvfs.fish`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<(), Error> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "fdbvfs", out);
    Ok(out.flush()?)
}

/// Writes the manual page `fdbvfs(1)` (roff) to `out`, or, with `dir`,
/// one page per command (`fdbvfs.1`, `fdbvfs-sql.1`, …) into `dir`,
/// listing the files written on `out`.
pub fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<(), Error> {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(out)?,
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)?;
            let mut pages: Vec<_> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "1"))
                .collect();
            pages.sort();
            for p in pages {
                writeln!(out, "{}", p.display())?;
            }
        }
    }
    Ok(out.flush()?)
}
