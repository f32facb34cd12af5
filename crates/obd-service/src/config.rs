//! The service's configuration (`--config FILE`, TOML): where the database and work
//! directory are, the operators' knobs (workers, lease, heartbeat, grace, deadline,
//! attempts, backoff), per-registry TLS / plain HTTP, and the `[[rule]]`s that choose what
//! converts. Flags override the file; the file overrides the defaults.
//!
//! ```toml
//! db_type = "sqlite"
//! db_str = "/var/lib/obdconv/jobs.sqlite"
//! work_dir = "/var/lib/obdconv/work"
//! workers = 2
//!
//! [[registry]]
//! host = "127.0.0.1:5000"
//! plain = true
//!
//! [[rule]]
//! name = "apps"
//! match = "*/apps/*:*"
//! output = "{tag}_obd"
//! engine = "overlaybd"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("rule {rule:?}: {message}")]
    Rule { rule: String, message: String },
}

/// One registry's connection settings (the meaning of `convertor`'s flags).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]` as events and rules name it.
    pub host: String,
    /// Plain HTTP (`--plain`).
    #[serde(default)]
    pub plain: bool,
    /// Do not verify the server's certificate (`--insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// Extra CA files (`--root-ca`).
    #[serde(default)]
    pub root_ca: Vec<PathBuf>,
    /// certs.d-style directories (`--cert-dir`).
    #[serde(default)]
    pub cert_dir: Vec<PathBuf>,
    /// `CERT:KEY` client certificate (`--client-cert`).
    #[serde(default)]
    pub client_cert: Option<String>,
}

/// What a rule converts into.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EngineName {
    #[default]
    Overlaybd,
    Turbo,
}

/// One `[[rule]]`: which pushed images it converts and how.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for reports and the job key (default: `rule<N>`).
    #[serde(default)]
    pub name: String,
    /// A glob over `HOST/REPO:TAG` (`*` any run of characters, `?` one).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The output tag; `{tag}` is the source tag (default `{tag}_obd`, `{tag}_turbo` for the
    /// turbo engine).
    #[serde(default)]
    pub output: Option<String>,
    /// The target `HOST/REPO` (default: the source repository).
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub engine: EngineName,
    /// `ext4` or `erofs` (turbo only).
    #[serde(default = "default_fstype")]
    pub fstype: String,
    #[serde(default)]
    pub oci: bool,
    #[serde(default = "default_vsize")]
    pub vsize: u64,
    #[serde(default = "default_true")]
    pub mkfs: bool,
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    #[serde(default)]
    pub referrer: bool,
    /// `os/arch[/variant]`; empty: every platform.
    #[serde(default)]
    pub platforms: Vec<String>,
}

fn default_fstype() -> String {
    "ext4".into()
}
fn default_vsize() -> u64 {
    64
}
fn default_true() -> bool {
    true
}
fn default_algorithm() -> String {
    "lz4".into()
}

impl Rule {
    /// A rule converting everything with the defaults.
    pub fn all() -> Rule {
        Rule {
            name: "default".into(),
            pattern: "*".into(),
            output: None,
            target: None,
            engine: EngineName::Overlaybd,
            fstype: default_fstype(),
            oci: false,
            vsize: default_vsize(),
            mkfs: true,
            algorithm: default_algorithm(),
            referrer: false,
            platforms: Vec::new(),
        }
    }

    /// The output tag pattern.
    pub fn output_pattern(&self) -> &str {
        match (&self.output, self.engine) {
            (Some(o), _) => o,
            (None, EngineName::Overlaybd) => "{tag}_obd",
            (None, EngineName::Turbo) => "{tag}_turbo",
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// File holding the bearer token clients must send.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `sqlite` or `mysql` (as `convertor --db-type`).
    #[serde(default = "default_db_type")]
    pub db_type: String,
    /// SQLite path or MySQL DSN (as `convertor --db-str`); default
    /// `~/.cache/obdconv/dedup.sqlite`.
    #[serde(default)]
    pub db_str: Option<String>,
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Seconds a claimed job's lease lasts without a heartbeat.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Seconds between heartbeats (less than `lease_secs`).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Seconds running jobs get to finish after SIGTERM before they are released.
    #[serde(default = "default_grace")]
    pub grace_secs: u64,
    /// Seconds one run of a job may take.
    #[serde(default = "default_deadline")]
    pub deadline_secs: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubled per attempt, with jitter, capped at 10 min.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_db_type() -> String {
    "sqlite".into()
}
fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("obdconv-work")
}
fn default_workers() -> usize {
    2
}
fn default_lease() -> u64 {
    60
}
fn default_heartbeat() -> u64 {
    10
}
fn default_grace() -> u64 {
    30
}
fn default_deadline() -> u64 {
    3600
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    5000
}

impl Default for Config {
    fn default() -> Self {
        let mut c: Config = toml::from_str("").expect("the defaults parse");
        c.finish().expect("the defaults are valid");
        c
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses TOML text (`what` names it in errors) and checks the rules.
    pub fn parse(text: &str, what: &str) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: what.to_string(),
            message: e.to_string(),
        })?;
        c.finish()?;
        Ok(c)
    }

    /// Names unnamed rules, adds the catch-all rule when there is none, and checks them.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        if self.rules.is_empty() {
            self.rules.push(Rule::all());
        }
        for (i, r) in self.rules.iter_mut().enumerate() {
            if r.name.is_empty() {
                r.name = format!("rule{}", i + 1);
            }
            let bad = |m: String| ConfigError::Rule {
                rule: r.name.clone(),
                message: m,
            };
            if !r.output_pattern().contains("{tag}") {
                return Err(bad(format!(
                    "output {:?} must contain {{tag}}: every source tag needs its own output tag",
                    r.output_pattern()
                )));
            }
            if !matches!(r.fstype.as_str(), "ext4" | "erofs") {
                return Err(bad(format!("fstype {:?}: ext4 or erofs", r.fstype)));
            }
            if r.fstype != "ext4" && r.engine != EngineName::Turbo {
                return Err(bad("fstype erofs needs engine = \"turbo\"".into()));
            }
            if r.algorithm.parse::<obd_format::zfile::Algorithm>().is_err() {
                return Err(bad(format!("algorithm {:?}: lz4 or zstd", r.algorithm)));
            }
            if r.vsize == 0 || r.vsize > 1 << 20 {
                return Err(bad("vsize must be between 1 and 1048576 GB".into()));
            }
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs >= self.lease_secs {
            return Err(ConfigError::Parse {
                path: "configuration".into(),
                message: format!(
                    "heartbeat_secs ({}) must be at least 1 and less than lease_secs ({})",
                    self.heartbeat_secs, self.lease_secs
                ),
            });
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// The settings of `host`, or the defaults (HTTPS, verified).
    pub fn registry(&self, host: &str) -> RegistryConfig {
        self.registries
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(host))
            .cloned()
            .unwrap_or_else(|| RegistryConfig {
                host: host.to_string(),
                ..Default::default()
            })
    }

    /// The database string, defaulting to the SQLite file `convertor` uses.
    pub fn db_str(&self) -> String {
        if let Some(s) = &self.db_str {
            return s.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join("obdconv");
        let _ = std::fs::create_dir_all(&dir);
        dir.join("dedup.sqlite").display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rules() {
        let c = Config::default();
        assert_eq!(c.workers, 2);
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].output_pattern(), "{tag}_obd");
        let c = Config::parse(
            r#"
            workers = 3
            [[registry]]
            host = "127.0.0.1:5000"
            plain = true
            [[rule]]
            match = "*/apps/*:*"
            engine = "turbo"
            fstype = "erofs"
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(c.rules[0].name, "rule1");
        assert_eq!(c.rules[0].output_pattern(), "{tag}_turbo");
        assert!(c.registry("127.0.0.1:5000").plain);
        assert!(!c.registry("other:5000").plain);
        for bad in [
            "[[rule]]\nmatch = \"*\"\noutput = \"fixed\"",
            "[[rule]]\nmatch = \"*\"\nfstype = \"erofs\"",
            "[[rule]]\nmatch = \"*\"\nalgorithm = \"xz\"",
            "lease_secs = 5\nheartbeat_secs = 5",
            "unknown_key = 1",
        ] {
            assert!(Config::parse(bad, "t").is_err(), "{bad}");
        }
    }
}
