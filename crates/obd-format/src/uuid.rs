//! UUIDs as overlaybd stores them: 16 bytes in string order, written as 36 upper-case
//! characters plus a NUL in LSMT headers.

use std::fmt;

/// A 16-byte UUID. The all-zero value is the "null" UUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const NULL: Uuid = Uuid([0; 16]);

    pub fn is_null(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case). Returns `None` when the
    /// string is not exactly that shape, as upstream's `uuid4_parse` does.
    pub fn parse(s: &str) -> Option<Uuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = (b[i] as char).to_digit(16)?;
            let lo = (b[i + 1] as char).to_digit(16)?;
            out[n] = (hi * 16 + lo) as u8;
            n += 1;
            i += 2;
        }
        Some(Uuid(out))
    }

    /// The converter convention: the first 32 hex digits of a chain ID (`sha256:` prefix
    /// optional) formatted as a UUID. Returns `None` if there are fewer than 32 hex digits.
    pub fn from_chain_id(chain_id: &str) -> Option<Uuid> {
        let hex = chain_id.strip_prefix("sha256:").unwrap_or(chain_id);
        if hex.len() < 32 || !hex.is_char_boundary(32) {
            return None;
        }
        let h = &hex[..32];
        Uuid::parse(&format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// The 37-byte field of an LSMT header: upper-case string and a NUL.
    pub fn to_field(&self) -> [u8; 37] {
        let mut f = [0u8; 37];
        f[..36].copy_from_slice(self.to_string().as_bytes());
        f
    }

    /// Reads the 37-byte header field. An empty or unparsable field is the null UUID.
    pub fn from_field(f: &[u8]) -> Uuid {
        let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        std::str::from_utf8(&f[..end])
            .ok()
            .and_then(Uuid::parse)
            .unwrap_or(Uuid::NULL)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = "C02FB491-B4D4-4904-8684-A014D032AF78";
        let u = Uuid::parse(&s.to_lowercase()).unwrap();
        assert_eq!(u.to_string(), s);
        assert_eq!(Uuid::from_field(&u.to_field()), u);
        assert_eq!(
            Uuid::NULL.to_string(),
            "00000000-0000-0000-0000-000000000000"
        );
        assert!(Uuid::parse("bdf7bb2e-c231-43ce-87c2-photonextdev").is_none());
        let c = Uuid::from_chain_id(
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert_eq!(c.to_string(), "01234567-89AB-CDEF-0123-456789ABCDEF");
    }
}
