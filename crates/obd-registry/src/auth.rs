//! Credentials, docker config lookup and the `WWW-Authenticate` parser.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, Result};

/// A user name and password (or registry token used as a password).
///
/// `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Parse the CLI form `user:password`, split at the FIRST colon (so passwords may
    /// contain colons; user names may not).
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials::new(u, p)),
            _ => Err(Error::Config(
                "credentials must have the form user:password".into(),
            )),
        }
    }

    /// The value of a `Basic` `Authorization` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Look `host` up in the docker config (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`). A missing file gives `Ok(None)`.
    pub fn from_docker_config(host: &str) -> Result<Option<Credentials>> {
        match docker_config_path() {
            Some(p) => Self::from_docker_config_file(&p, host),
            None => Ok(None),
        }
    }

    /// Look `host` up in a given docker `config.json` (`auths.<host>.auth` base64
    /// `user:password`, or `username`/`password` fields). Keys may carry a scheme and path
    /// (`https://index.docker.io/v1/`). Credential helpers are not supported.
    pub fn from_docker_config_file(path: &Path, host: &str) -> Result<Option<Credentials>> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Config(format!(
                    "cannot read docker config {}: {e}",
                    path.display()
                )))
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
            Error::Config(format!("docker config {} is not JSON: {e}", path.display()))
        })?;
        let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let wanted = host_aliases(host);
        for (key, entry) in auths {
            if !wanted.iter().any(|w| *w == normalize_config_key(key)) {
                continue;
            }
            if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
                if auth.is_empty() {
                    continue;
                }
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| {
                        Error::Config(format!(
                            "docker config {}: auth for {key} is not base64",
                            path.display()
                        ))
                    })?;
                let raw = String::from_utf8(raw).map_err(|_| {
                    Error::Config(format!(
                        "docker config {}: auth for {key} is not UTF-8",
                        path.display()
                    ))
                })?;
                return Credentials::parse(&raw).map(Some).map_err(|_| {
                    Error::Config(format!(
                        "docker config {}: auth for {key} is not user:password",
                        path.display()
                    ))
                });
            }
            let user = entry.get("username").and_then(|u| u.as_str());
            let pass = entry.get("password").and_then(|u| u.as_str());
            if let (Some(u), Some(p)) = (user, pass) {
                return Ok(Some(Credentials::new(u, p)));
            }
        }
        Ok(None)
    }
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// `https://host:port/v1/` → `host:port`.
fn normalize_config_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_ascii_lowercase()
}

fn host_aliases(host: &str) -> Vec<String> {
    let h = host.to_ascii_lowercase();
    if matches!(
        h.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![h]
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-cased scheme (`basic`, `bearer`).
    pub scheme: String,
    /// Parameters with lower-cased names, in order.
    pub params: Vec<(String, String)>,
    /// A token68 value (`Negotiate abc==`), if the challenge had one instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// Look up a parameter by (case-insensitive) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t') {
            self.i += 1;
        }
    }
    fn skip_ws_commas(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b',') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn token(&mut self) -> String {
        let s = self.i;
        while self.i < self.b.len() && is_tchar(self.b[self.i]) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.b[s..self.i]).into_owned()
    }
    /// An unquoted value: lenient, up to a comma or whitespace (some servers send bare URLs).
    fn bare_value(&mut self) -> String {
        let s = self.i;
        while self.i < self.b.len() && !matches!(self.b[self.i], b',' | b' ' | b'\t') {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.b[s..self.i]).into_owned()
    }
    fn quoted(&mut self) -> String {
        // at the opening quote
        self.i += 1;
        let mut out = Vec::new();
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' if self.i + 1 < self.b.len() => {
                    out.push(self.b[self.i + 1]);
                    self.i += 2;
                }
                b'"' => {
                    self.i += 1;
                    break;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    /// Does an `name=` auth-param start here (as opposed to a new challenge or token68)?
    fn at_param(&self) -> bool {
        let mut j = self.i;
        let s = j;
        while j < self.b.len() && is_tchar(self.b[j]) {
            j += 1;
        }
        if j == s {
            return false;
        }
        while j < self.b.len() && matches!(self.b[j], b' ' | b'\t') {
            j += 1;
        }
        if self.b.get(j) != Some(&b'=') {
            return false;
        }
        // `abc==` or `abc=` followed by end/comma is token68, not a parameter.
        !matches!(self.b.get(j + 1), Some(b'=') | None | Some(b','))
    }
}

/// Parse one or several `WWW-Authenticate` header values into challenges.
///
/// Handles several challenges per header, quoted strings containing commas and escaped
/// quotes, token values, token68 forms, and arbitrary whitespace. Unknown garbage is
/// skipped rather than rejected.
pub fn parse_www_authenticate<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for h in headers {
        let mut c = Cursor {
            b: h.as_bytes(),
            i: 0,
        };
        loop {
            c.skip_ws_commas();
            if c.peek().is_none() {
                break;
            }
            let scheme = c.token();
            if scheme.is_empty() {
                // skip one unexpected byte
                c.i += 1;
                continue;
            }
            let mut ch = Challenge {
                scheme: scheme.to_ascii_lowercase(),
                params: Vec::new(),
                token68: None,
            };
            c.skip_ws();
            // token68?
            if c.peek().is_some_and(is_token68_char) && !c.at_param() {
                let s = c.i;
                while c.peek().is_some_and(is_token68_char) {
                    c.i += 1;
                }
                while c.peek() == Some(b'=') {
                    c.i += 1;
                }
                ch.token68 = Some(String::from_utf8_lossy(&c.b[s..c.i]).into_owned());
                out.push(ch);
                continue;
            }
            // auth-params
            loop {
                c.skip_ws();
                if !c.at_param() {
                    break;
                }
                let name = c.token().to_ascii_lowercase();
                c.skip_ws();
                c.i += 1; // '='
                c.skip_ws();
                let value = if c.peek() == Some(b'"') {
                    c.quoted()
                } else {
                    c.bare_value()
                };
                ch.params.push((name, value));
                c.skip_ws();
                if c.peek() == Some(b',') {
                    // a comma separates params or challenges; look past it
                    let save = c.i;
                    c.skip_ws_commas();
                    if !c.at_param() {
                        c.i = save;
                        break;
                    }
                } else {
                    break;
                }
            }
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_commas_in_scope() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull""#;
        let c = parse_www_authenticate([h]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c[0].param("Service"), Some("registry.example.com"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:a/b:pull,push repository:c:pull")
        );
    }

    #[test]
    fn several_challenges_and_spacing() {
        let h = r#"Basic realm="x, y", Bearer realm=https://t/token , service = svc ,error="insufficient_scope""#;
        let c = parse_www_authenticate([h]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("x, y"));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://t/token"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn escapes_token68_and_multiple_headers() {
        let c = parse_www_authenticate([
            r#"Basic realm="say \"hi\"\\""#,
            "Negotiate abc+/==, NTLM",
            "",
            "Bearer",
        ]);
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[0].param("realm"), Some(r#"say "hi"\"#));
        assert_eq!(c[1].scheme, "negotiate");
        assert_eq!(c[1].token68.as_deref(), Some("abc+/=="));
        assert_eq!(c[2].scheme, "ntlm");
        assert!(c[2].params.is_empty());
        assert_eq!(c[3].scheme, "bearer");
    }

    #[test]
    fn distribution_style_headers() {
        let c = parse_www_authenticate([r#"Basic realm="test-realm""#]);
        assert_eq!(c[0].param("realm"), Some("test-realm"));
        let c = parse_www_authenticate([
            r#"Bearer realm="http://127.0.0.1:5001/token",service="test-registry",scope="repository:test/base:pull""#,
        ]);
        assert_eq!(c[0].param("scope"), Some("repository:test/base:pull"));
        // empty quoted value and trailing comma
        let c = parse_www_authenticate([r#"Bearer realm="",service=s,"#]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), Some(""));
        assert_eq!(c[0].param("service"), Some("s"));
    }

    #[test]
    fn credentials_split_at_first_colon() {
        let c = Credentials::parse("user:pa:ss").unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.password, "pa:ss");
        let c = Credentials::parse("robot$x:").unwrap();
        assert_eq!(c.username, "robot$x");
        assert_eq!(c.password, "");
        assert!(Credentials::parse("nocolon").is_err());
        assert!(Credentials::parse(":pw").is_err());
        assert!(!format!("{c:?}").contains("pa:ss"));
        let c = Credentials::parse("u:secret").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn docker_config_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD;
        let cfg = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64.encode("hub:hubpw")},
                "127.0.0.1:5000": {"auth": b64.encode("me:pa:ss")},
                "other.example": {"username": "u2", "password": "p2"},
                "empty.example": {"auth": ""}
            }
        });
        std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let c = Credentials::from_docker_config_file(&p, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "pa:ss"));
        let c = Credentials::from_docker_config_file(&p, "registry-1.docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "hub");
        let c = Credentials::from_docker_config_file(&p, "other.example")
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "p2");
        assert!(Credentials::from_docker_config_file(&p, "empty.example")
            .unwrap()
            .is_none());
        assert!(Credentials::from_docker_config_file(&p, "nope:1")
            .unwrap()
            .is_none());
        assert!(
            Credentials::from_docker_config_file(&dir.path().join("missing"), "x")
                .unwrap()
                .is_none()
        );
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(
            Credentials::from_docker_config_file(&p, "x"),
            Err(Error::Config(_))
        ));
    }
}
