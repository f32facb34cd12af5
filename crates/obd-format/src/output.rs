//! Writing layer blobs through the optional ZFile and tar wrappers, in upstream's order
//! (the tar wraps the ZFile, which wraps the LSMT bytes).

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};

use crate::error::{FormatError, Result};
use crate::tarwrap::TarWrapWriter;
use crate::zfile::{ZFileInfo, ZFileOptions, ZFileWriter};

/// How to wrap a blob.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wrapping {
    /// Compress into a ZFile with these options.
    pub zfile: Option<ZFileOptions>,
    /// Put the result in a tar wrapper (`-t`).
    pub tar: bool,
    /// Rewrite the ZFile header at the end with the index fields (0x1B), as
    /// `overlaybd-commit -z` does for local files.
    pub overwrite_header: bool,
}

/// Where a blob's bytes go: a file, or any seekable writer (the ZFile and tar headers are
/// rewritten at the end).
pub trait Sink: Write + Seek + Send {
    /// Makes what was written durable; nothing to do unless it is a file.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

/// Runs `body` with a writer whose bytes end up in `file`, wrapped as asked. Returns what
/// `body` returned and, when compressed, the ZFile summary.
pub fn write_wrapped<T>(
    file: File,
    wrap: Wrapping,
    body: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, Option<ZFileInfo>)> {
    write_wrapped_with(file, wrap, true, body)
}

/// [`write_wrapped`] into any [`Sink`], made durable at the end only when `sync` (a
/// work-directory file that is uploaded and deleted does not need to be).
pub fn write_wrapped_with<S: Sink, T>(
    file: S,
    wrap: Wrapping,
    sync: bool,
    body: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, Option<ZFileInfo>)> {
    let sink = BufWriter::with_capacity(1 << 20, file);
    if wrap.tar {
        let t = TarWrapWriter::new(sink)?;
        let (r, info, t) = zfile_layer(t, wrap, body)?;
        let sink = t.finish()?;
        finish_file(sink, sync)?;
        Ok((r, info))
    } else {
        let (r, info, sink) = zfile_layer(sink, wrap, body)?;
        finish_file(sink, sync)?;
        Ok((r, info))
    }
}

fn finish_file<S: Sink>(sink: BufWriter<S>, sync: bool) -> Result<()> {
    let mut f = sink
        .into_inner()
        .map_err(|e| FormatError::io("flushing the output", e.into_error()))?;
    if !sync {
        return Ok(());
    }
    f.sync()
        .map_err(|e| FormatError::io("syncing the output", e))
}

fn zfile_layer<W: Write + std::io::Seek, T>(
    mut w: W,
    wrap: Wrapping,
    body: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, Option<ZFileInfo>, W)> {
    match wrap.zfile {
        None => {
            let r = body(&mut w)?;
            Ok((r, None, w))
        }
        Some(o) => {
            let mut z = ZFileWriter::new(w, o)?;
            let r = body(&mut z)?;
            let (w, info) = if wrap.overwrite_header {
                z.finish_overwrite_header()?
            } else {
                z.finish()?
            };
            Ok((r, Some(info), w))
        }
    }
}
