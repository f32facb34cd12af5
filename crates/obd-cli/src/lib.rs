//! Shared plumbing of the obdconv command-line tools: exit codes, errors on stderr and
//! stdout writes; logging set-up ([`logging`]), completions and man pages ([`docs`]).

pub mod docs;
pub mod location;
pub mod logging;
pub mod net;
pub mod progress;

use obd_format::FormatError;

/// Process exit codes, the same for every obdconv tool.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any failure not covered below.
    pub const FAILURE: i32 = 1;
    /// Bad command line, or a feature that is not implemented.
    pub const USAGE: i32 = 2;
    /// Registry authentication or authorisation failed.
    pub const AUTH: i32 = 3;
    /// An input (file, image, tag, blob) does not exist.
    pub const NOT_FOUND: i32 = 4;
    /// An input exists but is malformed, corrupt or fails a checksum.
    pub const BAD_INPUT: i32 = 5;
    /// Reading or writing local files or the network failed.
    pub const IO: i32 = 6;
    /// Interrupted by SIGINT/SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

/// The exit code for an I/O error: bad data (a decoder's objection, a stream that ended
/// early) is bad input; a missing file is "not found"; anything else (a full disk, a reset
/// connection) is I/O.
fn io_exit_code(io: &std::io::Error) -> i32 {
    match io.kind() {
        std::io::ErrorKind::NotFound => exit::NOT_FOUND,
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => exit::BAD_INPUT,
        std::io::ErrorKind::InvalidInput => exit::USAGE,
        _ => exit::IO,
    }
}

/// Chooses the exit code for an error by looking through its chain; the same codes in
/// every binary (`convertor`, `obd`).
pub fn exit_code(err: &anyhow::Error) -> i32 {
    use obd_convert::ConvertError;
    for cause in err.chain() {
        if let Some(ce) = cause.downcast_ref::<ConvertError>() {
            return match ce {
                ConvertError::NotFound(_) => exit::NOT_FOUND,
                ConvertError::Auth(_) => exit::AUTH,
                ConvertError::BadInput(_) => exit::BAD_INPUT,
                ConvertError::Io { .. } | ConvertError::Store(_) => exit::IO,
                ConvertError::Unsupported(_) => exit::USAGE,
                ConvertError::Interrupted => exit::INTERRUPTED,
            };
        }
        // A layer tar: its own faults are bad input, whatever reading it hit is I/O.
        if let Some(a) = cause.downcast_ref::<obd_tar::ApplyError>() {
            return if a.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::IO
            };
        }
        if let Some(t) = cause.downcast_ref::<obd_tar::TarError>() {
            return if t.is_bad_input() {
                exit::BAD_INPUT
            } else {
                exit::IO
            };
        }
        if let Some(x) = cause.downcast_ref::<obd_ext4::Error>() {
            return match x {
                obd_ext4::Error::Io(io) => io_exit_code(io),
                obd_ext4::Error::NotFound(_) => exit::NOT_FOUND,
                obd_ext4::Error::InvalidArgument(_) => exit::USAGE,
                _ => exit::BAD_INPUT,
            };
        }
        if let Some(f) = cause.downcast_ref::<FormatError>() {
            return match f {
                FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    exit::NOT_FOUND
                }
                FormatError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::InvalidData =>
                {
                    exit::BAD_INPUT
                }
                FormatError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    exit::BAD_INPUT
                }
                FormatError::Io { .. } => exit::IO,
                FormatError::BadMagic { .. }
                | FormatError::Corrupt { .. }
                | FormatError::Checksum { .. } => exit::BAD_INPUT,
                FormatError::Invalid(_) => exit::USAGE,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io_exit_code(io);
        }
    }
    exit::FAILURE
}

/// The error and its causes as one line, `a: b: c`, leaving out a cause whose text the
/// line already holds (library errors often repeat their source in their own message).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let t = cause.to_string();
        if out.contains(&t) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&t);
    }
    out
}

/// Standard output was closed by its reader (`obd inspect F | head -1`): not a failure.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub struct StdoutClosed;

/// Writes `text` to standard output and flushes it; a closed pipe is [`StdoutClosed`],
/// which [`run_main`] turns into a quiet exit 0 (as `cat` or `rg` when piped into `head`).
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// True when `e` is [`StdoutClosed`].
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Runs `f` and exits with the code its error calls for, printing the error chain.
pub fn run_main(f: impl FnOnce() -> anyhow::Result<()>) -> ! {
    match f() {
        Ok(()) => std::process::exit(exit::OK),
        Err(e) if is_stdout_closed(&e) => std::process::exit(exit::OK),
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::exit(exit_code(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_drops_repeated_causes() {
        let io = std::io::Error::other("no data from the registry for 2 s");
        let e = anyhow::Error::new(obd_convert::ConvertError::io("registry", io));
        assert_eq!(
            error_text(&e),
            "registry: no data from the registry for 2 s"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
