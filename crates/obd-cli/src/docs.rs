//! Shell completions and man pages, generated from the clap definitions of each binary
//! (`convertor completion bash|zsh|fish|elvish|powershell`, `convertor man`, and the same
//! for `obd`).

use anyhow::Result;

/// The version line of every binary: the package version, the git commit and its date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OBD_GIT_COMMIT"),
    " ",
    env!("OBD_GIT_DATE"),
    ")"
);

/// Writes the completion script of `cmd` for `shell` to stdout.
pub fn print_completion(mut cmd: clap::Command, shell: clap_complete::Shell) -> Result<()> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    crate::print_out(&String::from_utf8_lossy(&buf))
}

/// Writes the man page (roff) of `cmd` to stdout.
pub fn print_man(cmd: clap::Command) -> Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    crate::print_out(&String::from_utf8_lossy(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains('('), "{VERSION}");
    }

    #[test]
    fn man_and_completions_render() {
        let cmd = || {
            clap::Command::new("demo")
                .about("a demo")
                .arg(clap::Arg::new("flag").long("flag"))
        };
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd()).render(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf).contains(".TH demo"));
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut b = Vec::new();
            clap_complete::generate(shell, &mut cmd(), "demo", &mut b);
            assert!(String::from_utf8_lossy(&b).contains("flag"), "{shell:?}");
        }
    }
}
