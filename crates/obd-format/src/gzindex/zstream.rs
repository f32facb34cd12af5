//! A safe wrapper around the zlib inflate API (implemented in Rust by `libz-rs-sys`, the same
//! engine flate2 uses here), exposing what the gzip index needs and no safe Rust API offers:
//! stopping at deflate block boundaries (`Z_BLOCK`), the decoder state in `data_type` (bits
//! left in the last consumed byte, last-block and block-boundary flags), `inflatePrime` and
//! `inflateSetDictionary` on raw streams.
//!
//! # Why `unsafe`, and the invariants that make it sound
//!
//! This is the only module of the crate with `unsafe` code. Calling the C ABI functions is
//! `unsafe`; each call relies on these invariants, upheld by [`Inflater`]:
//!
//! * The `z_stream` lives in a `Box` that never moves or is replaced while initialised: zlib
//!   keeps a back-pointer to it in its state and checks it. It is initialised once in
//!   [`Inflater::new`] (with the default Rust allocator, set by `z_stream::default()`) and
//!   released exactly once in `Drop` by `inflateEnd`.
//! * `next_in`/`next_out` are set from live slices (`&[u8]`, `&mut [u8]`) immediately before
//!   each `inflate` call, with `avail_in`/`avail_out` no larger than those slices (and clamped
//!   to `u32`), and reset to null right after it, so the stream never holds a dangling
//!   pointer between calls.
//! * `inflateSetDictionary` gets a pointer and length from one live slice.
//! * `Inflater` is `Send`: the raw pointers inside `z_stream` point only into the state the
//!   stream exclusively owns (or are null between calls), so moving it to another thread is
//!   like moving a `Box`. It is not `Sync`; every method takes `&mut self`.

use std::ffi::c_int;

use libz_rs_sys as z;

/// Window bits for a gzip-wrapped stream (gzip header and trailer, 32 KiB window).
pub(crate) const GZIP_WBITS: c_int = 31;
/// Window bits for a raw deflate stream (32 KiB window).
pub(crate) const RAW_WBITS: c_int = -15;

/// `data_type` bit: the decoder stopped right after a block (or the gzip header), before the
/// next block header.
pub(crate) const DT_BLOCK_BOUNDARY: c_int = 0x80;
/// `data_type` bit: the block being decoded is the final one.
pub(crate) const DT_LAST_BLOCK: c_int = 0x40;

/// An inflate error reported by zlib.
#[derive(Debug)]
pub(crate) struct ZError {
    pub code: c_int,
    pub msg: String,
}

impl std::fmt::Display for ZError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inflate error {}: {}", self.code, self.msg)
    }
}

/// What one `inflate` call did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    pub consumed: usize,
    pub produced: usize,
    /// The end of the (gzip member or raw) stream was reached.
    pub end: bool,
}

/// One zlib inflate stream.
pub(crate) struct Inflater {
    strm: Box<z::z_stream>,
}

// SAFETY: see the module documentation: the stream owns everything its pointers refer to
// between calls, and all access goes through `&mut self`.
unsafe impl Send for Inflater {}

impl Inflater {
    /// A new stream with `window_bits` ([`GZIP_WBITS`] or [`RAW_WBITS`]).
    pub(crate) fn new(window_bits: c_int) -> Result<Self, ZError> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: `strm` is a valid, boxed (never moved) z_stream with the default
        // allocator; the version string is zlib's own and the size is the real struct size.
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if ret != z::Z_OK {
            // Initialisation failed, so there is no state to free: dropping the plain box
            // (not an `Inflater`) skips inflateEnd.
            return Err(ZError {
                code: ret,
                msg: "inflateInit2 failed".into(),
            });
        }
        Ok(Inflater { strm })
    }

    /// Restarts the stream for a new member, keeping the allocation.
    pub(crate) fn reset(&mut self, window_bits: c_int) -> Result<(), ZError> {
        // SAFETY: the stream was initialised in `new` and is still alive.
        let ret = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        self.check(ret, "inflateReset2")
    }

    /// Inflates from `input` into `output`, stopping at the next deflate block boundary when
    /// `block` is set (`Z_BLOCK`), otherwise when either buffer is exhausted.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        block: bool,
    ) -> Result<Step, ZError> {
        let avail_in = input.len().min(u32::MAX as usize);
        let avail_out = output.len().min(u32::MAX as usize);
        let s = &mut *self.strm;
        s.next_in = input.as_ptr();
        s.avail_in = avail_in as u32;
        s.next_out = output.as_mut_ptr();
        s.avail_out = avail_out as u32;
        let flush = if block { z::Z_BLOCK } else { z::Z_NO_FLUSH };
        // SAFETY: next_in/next_out point into the live slices above with in-bounds lengths;
        // the stream is initialised and pinned in its box.
        let ret = unsafe { z::inflate(s, flush) };
        let consumed = avail_in - s.avail_in as usize;
        let produced = avail_out - s.avail_out as usize;
        s.next_in = std::ptr::null();
        s.avail_in = 0;
        s.next_out = std::ptr::null_mut();
        s.avail_out = 0;
        match ret {
            z::Z_OK | z::Z_BUF_ERROR => Ok(Step {
                consumed,
                produced,
                end: false,
            }),
            z::Z_STREAM_END => Ok(Step {
                consumed,
                produced,
                end: true,
            }),
            z::Z_NEED_DICT => Err(ZError {
                code: ret,
                msg: "the stream needs a preset dictionary".into(),
            }),
            other => Err(self.error(other, "inflate")),
        }
    }

    /// The decoder state after the last call: `bits | last-block (0x40) | boundary (0x80)`.
    pub(crate) fn data_type(&self) -> c_int {
        self.strm.data_type
    }

    /// Feeds the low `bits` bits of `value` before the next input byte (raw streams only).
    pub(crate) fn prime(&mut self, bits: u8, value: u8) -> Result<(), ZError> {
        // SAFETY: the stream is initialised; the function only touches its state.
        let ret = unsafe { z::inflatePrime(&mut *self.strm, bits as c_int, value as c_int) };
        self.check(ret, "inflatePrime")
    }

    /// Presets the 32 KiB history (raw streams: any time before the first `inflate`).
    pub(crate) fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), ZError> {
        let len = u32::try_from(dict.len()).map_err(|_| ZError {
            code: z::Z_STREAM_ERROR,
            msg: "dictionary too long".into(),
        })?;
        // SAFETY: pointer and length come from one live slice.
        let ret = unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), len) };
        self.check(ret, "inflateSetDictionary")
    }

    fn check(&self, ret: c_int, what: &str) -> Result<(), ZError> {
        if ret == z::Z_OK {
            Ok(())
        } else {
            Err(self.error(ret, what))
        }
    }

    fn error(&self, code: c_int, what: &str) -> ZError {
        let msg = if self.strm.msg.is_null() {
            what.to_string()
        } else {
            // SAFETY: zlib sets `msg` to a static NUL-terminated string or leaves it null.
            let m = unsafe { std::ffi::CStr::from_ptr(self.strm.msg) };
            format!("{what}: {}", m.to_string_lossy())
        };
        ZError { code, msg }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised in `new` and is released only here.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}
