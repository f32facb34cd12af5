//! Directory-index name hashes: half-MD4, TEA and the legacy hash, each in the signed-char and
//! unsigned-char flavours, with the default seed used when `s_hash_seed` is all zero.

/// On-disk hash version numbers (`s_def_hash_version`, `dx_root_info.hash_version`).
pub(crate) const HASH_LEGACY: u8 = 0;
pub(crate) const HASH_HALF_MD4: u8 = 1;
pub(crate) const HASH_TEA: u8 = 2;

const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Everything needed to hash names of one filesystem.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirHasher {
    pub seed: [u32; 4],
    /// `s_flags` says names hash with `unsigned char` (EXT2_FLAGS_UNSIGNED_HASH).
    pub unsigned: bool,
}

impl DirHasher {
    pub fn new(seed: [u32; 4], unsigned: bool) -> Self {
        let seed = if seed == [0; 4] { DEFAULT_SEED } else { seed };
        DirHasher { seed, unsigned }
    }

    /// Major and minor hash of `name`; the major hash has its low bit cleared. `None` for an
    /// unknown version.
    pub fn hash(&self, version: u8, name: &[u8]) -> Option<(u32, u32)> {
        let (major, minor) = match version {
            HASH_LEGACY => (legacy(name, self.unsigned), 0),
            HASH_HALF_MD4 => {
                let mut st = self.seed;
                for off in (0..name.len()).step_by(32) {
                    half_md4(&mut st, &pack_words::<8>(&name[off..], self.unsigned));
                }
                (st[1], st[2])
            }
            HASH_TEA => {
                let mut st = self.seed;
                for off in (0..name.len()).step_by(16) {
                    tea(&mut st, &pack_words::<4>(&name[off..], self.unsigned));
                }
                (st[0], st[1])
            }
            _ => return None,
        };
        Some((major & !1, minor))
    }
}

/// Packs the next piece of a name (the `rest` of the name from this piece on) into `N` words:
/// bytes accumulate big-endian-wise four to a word, and unused words are filled with a pad made
/// of the remaining length repeated in every byte.
fn pack_words<const N: usize>(rest: &[u8], unsigned: bool) -> [u32; N] {
    let len = rest.len() as u32;
    let pad = (len | (len << 8)) | ((len | (len << 8)) << 16);
    let mut out = [pad; N];
    let mut val = pad;
    let mut n = 0;
    for (i, &b) in rest.iter().take(4 * N).enumerate() {
        val = char_value(b, unsigned).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < N {
        out[n] = val;
    }
    out
}

fn legacy(name: &[u8], unsigned: bool) -> u32 {
    let (mut h0, mut h1) = (0x12a3_fe2d_u32, 0x37ab_e8f9_u32);
    for &b in name {
        let c = char_value(b, unsigned);
        let mut h = h1.wrapping_add(h0 ^ c.wrapping_mul(7_152_373));
        if h & 0x8000_0000 != 0 {
            h = h.wrapping_sub(0x7fff_ffff);
        }
        h1 = h0;
        h0 = h;
    }
    h0 << 1
}

/// A name byte as the C code sees it: sign-extended `char` or `unsigned char`.
fn char_value(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        u32::from(b)
    } else {
        i32::from(b as i8) as u32
    }
}

fn half_md4(st: &mut [u32; 4], x: &[u32; 8]) {
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let [mut a, mut b, mut c, mut d] = *st;
    // (function, word index, constant, shift) for each of the 24 steps; the registers rotate
    // a, d, c, b as in MD4.
    type Fun = fn(u32, u32, u32) -> u32;
    let steps: [(Fun, usize, u32, u32); 24] = [
        (f, 0, 0, 3),
        (f, 1, 0, 7),
        (f, 2, 0, 11),
        (f, 3, 0, 19),
        (f, 4, 0, 3),
        (f, 5, 0, 7),
        (f, 6, 0, 11),
        (f, 7, 0, 19),
        (g, 1, K2, 3),
        (g, 3, K2, 5),
        (g, 5, K2, 9),
        (g, 7, K2, 13),
        (g, 0, K2, 3),
        (g, 2, K2, 5),
        (g, 4, K2, 9),
        (g, 6, K2, 13),
        (h, 3, K3, 3),
        (h, 7, K3, 9),
        (h, 2, K3, 11),
        (h, 6, K3, 15),
        (h, 1, K3, 3),
        (h, 5, K3, 9),
        (h, 0, K3, 11),
        (h, 4, K3, 15),
    ];
    for (i, (fun, w, k, s)) in steps.iter().enumerate() {
        let add = x[*w].wrapping_add(*k);
        match i % 4 {
            0 => {
                a = a
                    .wrapping_add(fun(b, c, d))
                    .wrapping_add(add)
                    .rotate_left(*s)
            }
            1 => {
                d = d
                    .wrapping_add(fun(a, b, c))
                    .wrapping_add(add)
                    .rotate_left(*s)
            }
            2 => {
                c = c
                    .wrapping_add(fun(d, a, b))
                    .wrapping_add(add)
                    .rotate_left(*s)
            }
            _ => {
                b = b
                    .wrapping_add(fun(c, d, a))
                    .wrapping_add(add)
                    .rotate_left(*s)
            }
        }
    }
    st[0] = st[0].wrapping_add(a);
    st[1] = st[1].wrapping_add(b);
    st[2] = st[2].wrapping_add(c);
    st[3] = st[3].wrapping_add(d);
}

fn tea(st: &mut [u32; 4], x: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let (mut b0, mut b1) = (st[0], st[1]);
    let mut sum = 0u32;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(x[0]) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(x[1]),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(x[2]) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(x[3]),
        );
    }
    st[0] = st[0].wrapping_add(b0);
    st[1] = st[1].wrapping_add(b1);
}
