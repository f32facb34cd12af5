//! Keys, entries and the output [`Profile`], with the validation every back end applies
//! before touching the database.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Longest host, repository, chain ID, digest or media type accepted, in characters: the
/// upstream columns are `varchar(255)`, and a longer value must not be silently truncated
/// (MySQL outside strict mode) into somebody else's key.
pub const MAX_FIELD_LEN: usize = 255;

/// What the converted bytes depend on besides the source: a non-empty ASCII string of at
/// most [`Profile::MAX_LEN`] printable, non-space characters.
///
/// Two conversions may share a row only if their profiles are equal (byte for byte). The
/// empty profile is reserved for rows written by upstream and cannot be constructed.
///
/// Build it with [`Profile::from_fields`] from every option that changes the output; keep
/// the field names stable, and add a field (or bump the `format` value) whenever the
/// converter's output changes for the same input.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Profile(String);

impl Profile {
    /// Longest profile, in bytes (the column is `varchar(128)` ASCII).
    pub const MAX_LEN: usize = 128;

    /// Uses `s` verbatim as the profile (for callers that compute their own string or hash).
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() {
            return Err(Error::InvalidRecord(
                "profile is empty (reserved for upstream rows)".into(),
            ));
        }
        if s.len() > Self::MAX_LEN {
            return Err(Error::InvalidRecord(format!(
                "profile is {} bytes long, at most {} allowed",
                s.len(),
                Self::MAX_LEN
            )));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidRecord(
                "profile must be printable ASCII without spaces".into(),
            ));
        }
        Ok(Profile(s))
    }

    /// A canonical hash of `name → value` fields: `sha256:<hex>` of the fields sorted by
    /// name, each written as `name=value\n`. The order of the input does not matter;
    /// duplicate names, empty names, and names containing `=` or newlines (or values
    /// containing newlines) are rejected.
    ///
    /// ```
    /// use obd_dedup::Profile;
    /// let a = Profile::from_fields([("vsize_gb", "64"), ("algorithm", "lz4")]).unwrap();
    /// let b = Profile::from_fields([("algorithm", "lz4"), ("vsize_gb", "64")]).unwrap();
    /// assert_eq!(a, b);
    /// assert!(a.as_str().starts_with("sha256:"));
    /// ```
    pub fn from_fields<I, K, V>(fields: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut pairs: Vec<(String, String)> = fields
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        pairs.sort();
        let mut h = Sha256::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if k.is_empty() || k.contains(['=', '\n']) || v.contains('\n') {
                return Err(Error::InvalidRecord(format!(
                    "profile field {k:?} has an invalid name or value"
                )));
            }
            if i > 0 && pairs[i - 1].0 == *k {
                return Err(Error::InvalidRecord(format!(
                    "profile field {k:?} given twice"
                )));
            }
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        Ok(Profile(format!("sha256:{}", hex::encode(h.finalize()))))
    }

    /// The profile string as stored in the `profile` column.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Profile({:?})", self.0)
    }
}

/// Identifies a converted layer: the *source* layer's chain ID (`sha256:<hex>`, from the
/// uncompressed diff IDs) in `host`/`repo`, converted with `profile`.
///
/// `host` is the registry host including any port (`localhost:5000`), `repo` the repository
/// path without the host (`library/redis`), as upstream stores them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerKey {
    /// Registry host, with port if any.
    pub host: String,
    /// Repository path without the host.
    pub repo: String,
    /// Chain ID of the source layer, `sha256:<hex>`.
    pub chain_id: String,
    /// Output profile the layer was converted with.
    pub profile: Profile,
}

impl LayerKey {
    /// Builds a key.
    pub fn new(
        host: impl Into<String>,
        repo: impl Into<String>,
        chain_id: impl Into<String>,
        profile: Profile,
    ) -> Self {
        LayerKey {
            host: host.into(),
            repo: repo.into(),
            chain_id: chain_id.into(),
            profile,
        }
    }

    /// Checks every field is non-empty and at most [`MAX_FIELD_LEN`] characters.
    pub fn validate(&self) -> Result<()> {
        field("host", &self.host)?;
        field("repo", &self.repo)?;
        field("chain_id", &self.chain_id)
    }
}

/// A converted layer: the overlaybd blob's digest and size for a [`LayerKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerEntry {
    /// The row's key (for cross-repo results, `key.repo` is the repository holding the blob).
    pub key: LayerKey,
    /// Digest of the converted (overlaybd) layer blob, `sha256:<hex>`.
    pub digest: String,
    /// Size of the converted layer blob in bytes.
    pub size: u64,
}

impl LayerEntry {
    /// Builds an entry.
    pub fn new(key: LayerKey, digest: impl Into<String>, size: u64) -> Self {
        LayerEntry {
            key,
            digest: digest.into(),
            size,
        }
    }

    /// Validates the key, the digest and that the size fits a signed 64-bit column.
    pub fn validate(&self) -> Result<()> {
        self.key.validate()?;
        field("digest", &self.digest)?;
        size(self.size)
    }
}

/// Identifies a converted manifest: the *source* manifest digest in `host`/`repo`, converted
/// to a manifest of `media_type` (the **output** media type, Docker v2 or OCI, as upstream
/// stores it) with `profile`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestKey {
    /// Registry host, with port if any.
    pub host: String,
    /// Repository path without the host.
    pub repo: String,
    /// Digest of the source manifest, `sha256:<hex>`.
    pub src_digest: String,
    /// Media type of the converted manifest (part of upstream's primary key).
    pub media_type: String,
    /// Output profile the manifest was converted with.
    pub profile: Profile,
}

impl ManifestKey {
    /// Builds a key.
    pub fn new(
        host: impl Into<String>,
        repo: impl Into<String>,
        src_digest: impl Into<String>,
        media_type: impl Into<String>,
        profile: Profile,
    ) -> Self {
        ManifestKey {
            host: host.into(),
            repo: repo.into(),
            src_digest: src_digest.into(),
            media_type: media_type.into(),
            profile,
        }
    }

    /// Checks every field is non-empty and at most [`MAX_FIELD_LEN`] characters, and that
    /// the media type is ASCII (its column is ASCII after migration 2).
    pub fn validate(&self) -> Result<()> {
        field("host", &self.host)?;
        field("repo", &self.repo)?;
        field("src_digest", &self.src_digest)?;
        field("media_type", &self.media_type)?;
        if !self.media_type.is_ascii() {
            return Err(Error::InvalidRecord("media_type must be ASCII".into()));
        }
        Ok(())
    }
}

/// A converted manifest: its digest and size for a [`ManifestKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManifestEntry {
    /// The row's key (for cross-repo results, `key.repo` is the repository holding it).
    pub key: ManifestKey,
    /// Digest of the converted manifest, `sha256:<hex>`.
    pub digest: String,
    /// Size of the converted manifest in bytes.
    pub size: u64,
}

impl ManifestEntry {
    /// Builds an entry.
    pub fn new(key: ManifestKey, digest: impl Into<String>, size: u64) -> Self {
        ManifestEntry {
            key,
            digest: digest.into(),
            size,
        }
    }

    /// Validates the key, the digest and the size.
    pub fn validate(&self) -> Result<()> {
        self.key.validate()?;
        field("digest", &self.digest)?;
        size(self.size)
    }
}

fn field(name: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidRecord(format!("{name} is empty")));
    }
    let n = value.chars().count();
    if n > MAX_FIELD_LEN {
        return Err(Error::InvalidRecord(format!(
            "{name} is {n} characters long, at most {MAX_FIELD_LEN} allowed"
        )));
    }
    if value.contains('\0') {
        return Err(Error::InvalidRecord(format!("{name} contains NUL")));
    }
    Ok(())
}

fn size(size: u64) -> Result<()> {
    if i64::try_from(size).is_err() {
        return Err(Error::InvalidRecord(format!(
            "size {size} does not fit a signed 64-bit column"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_rules() {
        assert!(Profile::new("").is_err());
        assert!(Profile::new("a b").is_err());
        assert!(Profile::new("é").is_err());
        assert!(Profile::new("x".repeat(129)).is_err());
        assert_eq!(Profile::new("v1:lz4").unwrap().as_str(), "v1:lz4");
        let a = Profile::from_fields([("b", "2"), ("a", "1")]).unwrap();
        assert_eq!(a.as_str().len(), 7 + 64);
        assert_ne!(a, Profile::from_fields([("a", "1"), ("b", "3")]).unwrap());
        // "a=1\nb=2" must not collide with a single field holding the same text
        assert!(Profile::from_fields([("a", "1\nb=2")]).is_err());
        assert!(Profile::from_fields([("a", "1"), ("a", "1")]).is_err());
        assert!(Profile::from_fields([("a=b", "1")]).is_err());
        assert!(Profile::from_fields([("", "1")]).is_err());
        assert!(Profile::from_fields(Vec::<(&str, &str)>::new()).is_ok());
    }

    #[test]
    fn field_rules() {
        let p = Profile::new("p").unwrap();
        assert!(LayerKey::new("h", "r", "c", p.clone()).validate().is_ok());
        assert!(LayerKey::new("", "r", "c", p.clone()).validate().is_err());
        assert!(LayerKey::new("h", "r".repeat(256), "c", p.clone())
            .validate()
            .is_err());
        // 255 multi-byte characters are fine (the limit is in characters, like varchar)
        assert!(LayerKey::new("h", "é".repeat(255), "c", p.clone())
            .validate()
            .is_ok());
        let k = LayerKey::new("h", "r", "c", p.clone());
        assert!(LayerEntry::new(k.clone(), "d", u64::MAX)
            .validate()
            .is_err());
        assert!(LayerEntry::new(k, "", 1).validate().is_err());
        let m = ManifestKey::new(
            "h",
            "r",
            "s",
            "application/vnd.oci.image.manifest.v1+json",
            p,
        );
        assert!(m.validate().is_ok());
        let mut bad = m.clone();
        bad.media_type = "tÿpe".into();
        assert!(bad.validate().is_err());
    }
}
