//! Man pages and shell completions, rendered from the clap definitions so
//! they can never drift from the real flags. `tests/man.rs` fails when the
//! committed files are stale; `V2X_UPDATE_MAN=1 cargo test --test man`
//! rewrites them.

use crate::cli::Cli;
use clap::CommandFactory;

/// Every generated documentation file: (path relative to the repository, bytes).
pub fn generated_files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = Cli::command();
    out.push(("man/v2x.1".to_string(), render(&cmd)));
    for sub in cmd.get_subcommands() {
        let name = format!("v2x-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        out.push((format!("man/{name}.1"), render(&sub)));
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "v2x.bash"),
        (clap_complete::Shell::Zsh, "_v2x"),
        (clap_complete::Shell::Fish, "v2x.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "v2x", &mut buf);
        out.push((format!("man/completions/{file}"), buf));
    }
    out
}

fn render(cmd: &clap::Command) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .date("2026-11-22")
        .render(&mut buf)
        .expect("rendering into memory cannot fail");
    buf
}
