//! Credential lookup in the order the container tools use: `REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`, then the Docker
//! config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) with its `credHelpers`,
//! `credsStore` and `auths`. Helpers are `docker-credential-<name>` programs spoken to with
//! the `get` protocol. Every source looked at is recorded ([`CredentialLookup::tried`]) so
//! that an authentication error can say where credentials were sought; secrets never appear
//! in that record nor in errors.
//!
//! The environment is passed in as a [`LookupEnv`] (built from the process once, by
//! [`LookupEnv::from_process`]), so tests need not touch the process environment.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::auth::Credentials;
use crate::error::{Error, Result};

/// The user name a credential helper (or an `identitytoken` entry) gives for an identity
/// token: the secret is then an OAuth2 refresh token, not a password. With Bearer auth it is
/// exchanged in a `grant_type=refresh_token` POST; a Basic-auth registry gets it as the
/// password of user `<token>` (which such registries normally refuse).
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// The environment the lookup reads: paths and the `PATH` searched for helpers.
#[derive(Debug, Clone, Default)]
pub struct LookupEnv {
    /// `REGISTRY_AUTH_FILE`.
    pub registry_auth_file: Option<PathBuf>,
    /// `XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `DOCKER_CONFIG` (a directory holding `config.json`).
    pub docker_config: Option<PathBuf>,
    /// `PATH`, searched for `docker-credential-<name>`.
    pub path: Option<OsString>,
}

impl LookupEnv {
    /// The lookup environment of this process (empty variables count as unset).
    pub fn from_process() -> LookupEnv {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        LookupEnv {
            registry_auth_file: var("REGISTRY_AUTH_FILE").map(PathBuf::from),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            path: var("PATH"),
        }
    }
}

/// What the lookup found, and where it looked.
#[derive(Debug, Clone, Default)]
pub struct CredentialLookup {
    /// The credentials, if any source had some.
    pub credentials: Option<Credentials>,
    /// Where they came from (`/root/.docker/config.json credHelpers=pass`), never the secret.
    pub source: Option<String>,
    /// Every source looked at, in order, with what it said (`... (absent)`,
    /// `... (no entry for host)`, `... (credentials not found)`, `... (found)`).
    pub tried: Vec<String>,
}

/// Looks credentials for `host` (and, for auth.json keys naming a repository path,
/// `repository`) up in the sources of [`LookupEnv`], in the container tools' order.
///
/// A file that is missing or has no entry moves on to the next source; a file that cannot
/// be parsed, or a helper that is missing from `PATH` or fails (other than with "credentials
/// not found"), is an error naming the helper and the file that named it.
pub fn lookup(host: &str, repository: Option<&str>, env: &LookupEnv) -> Result<CredentialLookup> {
    let mut out = CredentialLookup::default();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if let Some(p) = &env.registry_auth_file {
        files.push((p.clone(), format!("REGISTRY_AUTH_FILE={}", p.display())));
    }
    if let Some(d) = &env.xdg_runtime_dir {
        let p = d.join("containers").join("auth.json");
        files.push((p.clone(), p.display().to_string()));
    }
    if let Some(h) = &env.home {
        let p = h.join(".config").join("containers").join("auth.json");
        files.push((p.clone(), p.display().to_string()));
    }
    match (&env.docker_config, &env.home) {
        (Some(d), _) => {
            let p = d.join("config.json");
            files.push((p.clone(), format!("DOCKER_CONFIG={}", p.display())));
        }
        (None, Some(h)) => {
            let p = h.join(".docker").join("config.json");
            files.push((p.clone(), p.display().to_string()));
        }
        (None, None) => out
            .tried
            .push("docker config (neither DOCKER_CONFIG nor HOME is set)".into()),
    }
    for (path, label) in files {
        if let Some((creds, source)) = lookup_file(&path, &label, host, repository, env, &mut out)?
        {
            out.tried.push(format!("{source} (found)"));
            out.credentials = Some(creds);
            out.source = Some(source);
            return Ok(out);
        }
    }
    Ok(out)
}

/// Looks `host` up in one auth file (containers auth.json or docker config.json, the same
/// format): `credHelpers`, `credsStore`, then `auths`. Records what it saw in `out.tried`.
fn lookup_file(
    path: &Path,
    label: &str,
    host: &str,
    repository: Option<&str>,
    env: &LookupEnv,
    out: &mut CredentialLookup,
) -> Result<Option<(Credentials, String)>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.tried.push(format!("{label} (absent)"));
            return Ok(None);
        }
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read the credentials file {label}: {e}; fix its permissions or point \
                 the variable elsewhere"
            )))
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
        Error::Config(format!(
            "the credentials file {label} is not JSON: {e}; fix or remove it"
        ))
    })?;
    let aliases = host_aliases(host);
    // credHelpers: a helper for this registry.
    if let Some(helpers) = v.get("credHelpers").and_then(|h| h.as_object()) {
        let helper = helpers.iter().find_map(|(k, name)| {
            let (h, _) = split_key(k);
            aliases.contains(&h).then(|| name.as_str()).flatten()
        });
        if let Some(name) = helper.filter(|n| !n.is_empty()) {
            let what = format!("{label} credHelpers={name}");
            match run_helper(name, host, label, env)? {
                Some(c) => return Ok(Some((c, what))),
                None => out.tried.push(format!("{what} (credentials not found)")),
            }
        }
    }
    // credsStore: the default helper.
    if let Some(name) = v
        .get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|n| !n.is_empty())
    {
        let what = format!("{label} credsStore={name}");
        match run_helper(name, host, label, env)? {
            Some(c) => return Ok(Some((c, what))),
            None => out.tried.push(format!("{what} (credentials not found)")),
        }
    }
    // auths: inline entries; the most specific key (host/ns/repo before host) first.
    let mut best: Option<(usize, &str, &serde_json::Value)> = None;
    if let Some(auths) = v.get("auths").and_then(|a| a.as_object()) {
        for (key, entry) in auths {
            let (h, p) = split_key(key);
            if !aliases.contains(&h) {
                continue;
            }
            let matches = p.is_empty()
                || repository.is_some_and(|r| r == p || r.starts_with(&format!("{p}/")));
            if !matches || !entry_has_secret(entry) {
                continue;
            }
            if best.is_none_or(|(len, _, _)| p.len() > len) {
                best = Some((p.len(), key.as_str(), entry));
            }
        }
    }
    match best {
        Some((_, key, entry)) => Ok(Some((
            entry_credentials(entry, key, label)?,
            format!("{label} auths[{key}]"),
        ))),
        None => {
            out.tried.push(format!("{label} (no entry for {host})"));
            Ok(None)
        }
    }
}

fn entry_has_secret(e: &serde_json::Value) -> bool {
    let s = |k: &str| {
        e.get(k)
            .and_then(|v| v.as_str())
            .is_some_and(|v| !v.is_empty())
    };
    s("auth") || s("identitytoken") || (s("username") && e.get("password").is_some())
}

/// The credentials of one `auths` entry: `identitytoken`, base64 `auth` (`user:password`),
/// or `username`/`password`.
fn entry_credentials(entry: &serde_json::Value, key: &str, label: &str) -> Result<Credentials> {
    let get = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if let Some(t) = get("identitytoken") {
        return Ok(Credentials::new(IDENTITY_TOKEN_USER, t));
    }
    if let Some(auth) = get("auth") {
        let bad = |why: &str| {
            Error::Config(format!(
                "{label}: the auth of {key} is {why}; log in again (docker login / skopeo \
                 login) or fix the entry"
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("not base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        return Credentials::parse(&raw).map_err(|_| bad("not user:password"));
    }
    Ok(Credentials::new(
        get("username").unwrap_or_default(),
        entry
            .get("password")
            .and_then(|v| v.as_str())
            .unwrap_or_default(),
    ))
}

/// `https://host:port/v1/` → (`host:port`, ``); `host/ns/repo` → (`host`, `ns/repo`).
fn split_key(key: &str) -> (String, String) {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key)
        .trim_end_matches('/');
    let (h, p) = k.split_once('/').unwrap_or((k, ""));
    let p = if matches!(p, "v1" | "v2") { "" } else { p };
    (h.to_ascii_lowercase(), p.to_string())
}

/// The names a registry host goes by in auth files (Docker Hub has several).
fn host_aliases(host: &str) -> Vec<String> {
    let h = host.to_ascii_lowercase();
    if is_docker_hub(&h) {
        vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![h]
    }
}

fn is_docker_hub(h: &str) -> bool {
    matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// The server URL a helper is asked about: Docker Hub's legacy URL, else the host.
fn helper_server(host: &str) -> String {
    if is_docker_hub(&host.to_ascii_lowercase()) {
        "https://index.docker.io/v1/".into()
    } else {
        host.to_string()
    }
}

fn find_on_path(program: &str, path: Option<&OsString>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join(program))
        .find(|f| f.is_file())
}

/// Runs `docker-credential-<name> get` for `host`. `Ok(None)`: the helper has no
/// credentials for it ("credentials not found", or an empty answer).
pub fn run_helper(
    name: &str,
    host: &str,
    config: &str,
    env: &LookupEnv,
) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{name}");
    let fail = |detail: String| Error::CredentialHelper {
        helper: program.clone(),
        config: config.to_string(),
        detail,
    };
    let Some(exe) = find_on_path(&program, env.path.as_ref()) else {
        return Err(fail("it is not on PATH".into()));
    };
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(helper_server(host).as_bytes());
    }
    let o = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !o.status.success() {
        let text = format!(
            "{} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if text.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper failed: its words (which do not carry a secret, as there is none to
        // give) are shown, shortened.
        let mut t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if t.len() > 300 {
            let mut cut = 300;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
            t.push_str("...");
        }
        return Err(fail(format!("`get` exited with {}: {t}", o.status)));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    // Never show the answer: it holds the secret.
    let a: Answer = serde_json::from_slice(&o.stdout)
        .map_err(|_| fail("`get` did not answer the JSON {\"Username\",\"Secret\"}".into()))?;
    if a.username.is_empty() && a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(a.username, a.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// An environment rooted in `dir`: HOME, XDG_RUNTIME_DIR, and `dir/bin` as PATH.
    fn env_in(dir: &Path) -> LookupEnv {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        LookupEnv {
            registry_auth_file: None,
            xdg_runtime_dir: Some(dir.join("run")),
            home: Some(dir.join("home")),
            docker_config: None,
            path: Some(dir.join("bin").into_os_string()),
        }
    }

    fn write(p: &Path, v: serde_json::Value) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, v.to_string()).unwrap();
    }

    /// A helper script answering `user`/`secret` for `host`, "not found" otherwise.
    fn helper(dir: &Path, name: &str, host: &str, user: &str, secret: &str) {
        let p = dir.join("bin").join(format!("docker-credential-{name}"));
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nread -r h\nif [ \"$1\" = get ] && [ \"$h\" = \"{host}\" ]; then\n\
                 printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$h\"\n\
                 else echo 'credentials not found in native keychain'; exit 1; fi\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn nothing_anywhere_lists_every_source() {
        let d = tempfile::tempdir().unwrap();
        let mut env = env_in(d.path());
        env.registry_auth_file = Some(d.path().join("none.json"));
        let l = lookup("reg.example:5000", Some("a/b"), &env).unwrap();
        assert!(l.credentials.is_none() && l.source.is_none());
        assert_eq!(l.tried.len(), 4, "{:?}", l.tried);
        assert!(l.tried[0].starts_with("REGISTRY_AUTH_FILE=") && l.tried[0].ends_with("(absent)"));
        assert!(l.tried[1].ends_with("run/containers/auth.json (absent)"));
        assert!(l.tried[2].ends_with("home/.config/containers/auth.json (absent)"));
        assert!(l.tried[3].ends_with("home/.docker/config.json (absent)"));
    }

    #[test]
    fn order_specific_keys_and_aliases() {
        let d = tempfile::tempdir().unwrap();
        let env = env_in(d.path());
        let run_auth = d.path().join("run/containers/auth.json");
        write(
            &run_auth,
            serde_json::json!({"auths": {
                "reg.example:5000": {"auth": b64("host:hpw")},
                "reg.example:5000/team": {"auth": b64("team:tpw")},
                "reg.example:5000/team/app": {"auth": b64("app:a:pw")},
                "other.example": {}
            }}),
        );
        write(
            &d.path().join("home/.docker/config.json"),
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
                "other.example": {"username": "o", "password": "opw"}
            }}),
        );
        let l = lookup("reg.example:5000", Some("team/app"), &env).unwrap();
        let c = l.credentials.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("app", "a:pw"));
        assert!(l
            .source
            .unwrap()
            .contains("auths[reg.example:5000/team/app]"));
        let c = lookup("reg.example:5000", Some("team/lib"), &env)
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!(c.username, "team");
        let c = lookup("reg.example:5000", Some("teamx/app"), &env)
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!(c.username, "host");
        // An empty entry in auth.json does not hide the docker config's.
        let l = lookup("other.example", None, &env).unwrap();
        assert_eq!(l.credentials.unwrap().password, "opw");
        assert!(
            l.tried[0].contains("(no entry for other.example)"),
            "{:?}",
            l.tried
        );
        for h in ["docker.io", "registry-1.docker.io", "index.docker.io"] {
            let c = lookup(h, Some("library/x"), &env)
                .unwrap()
                .credentials
                .unwrap();
            assert_eq!(c.username, "hub");
        }
        // REGISTRY_AUTH_FILE comes first.
        let f = d.path().join("custom.json");
        write(
            &f,
            serde_json::json!({"auths": {"reg.example:5000": {"auth": b64("env:epw")}}}),
        );
        let env2 = LookupEnv {
            registry_auth_file: Some(f),
            ..env.clone()
        };
        let l = lookup("reg.example:5000", Some("team/app"), &env2).unwrap();
        assert_eq!(l.credentials.unwrap().username, "env");
        assert!(l.source.unwrap().starts_with("REGISTRY_AUTH_FILE="));
    }

    #[test]
    fn helpers_per_registry_default_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let mut env = env_in(d.path());
        env.docker_config = Some(d.path().join("dc"));
        helper(d.path(), "one", "reg.example:5000", "u1", "s1");
        helper(d.path(), "store", "other.example", "u2", "s2");
        helper(
            d.path(),
            "hub",
            "https://index.docker.io/v1/",
            "<token>",
            "refresh",
        );
        write(
            &d.path().join("dc/config.json"),
            serde_json::json!({
                "credHelpers": {"reg.example:5000": "one", "docker.io": "hub", "gone.example": "missing"},
                "credsStore": "store",
                "auths": {"third.example": {"auth": b64("t:tpw")}}
            }),
        );
        let l = lookup("reg.example:5000", None, &env).unwrap();
        assert_eq!(l.credentials.unwrap().password, "s1");
        assert!(l.source.unwrap().ends_with("credHelpers=one"));
        let l = lookup("other.example", None, &env).unwrap();
        assert_eq!(l.credentials.unwrap().username, "u2");
        assert!(l.source.unwrap().ends_with("credsStore=store"));
        let c = lookup("index.docker.io", None, &env)
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!(c.username, IDENTITY_TOKEN_USER);
        // The default helper has nothing: recorded, and the inline entry is used.
        let l = lookup("third.example", None, &env).unwrap();
        assert_eq!(l.credentials.unwrap().username, "t");
        assert!(l
            .tried
            .iter()
            .any(|t| t.ends_with("credsStore=store (credentials not found)")));
        // A helper missing from PATH is an error naming it and the file.
        let e = lookup("gone.example", None, &env).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("docker-credential-missing")
                && m.contains("dc/config.json")
                && m.contains("not on PATH"),
            "{m}"
        );
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn failing_helper_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let mut env = env_in(d.path());
        env.docker_config = Some(d.path().join("dc"));
        let p = d.path().join("bin/docker-credential-broken");
        std::fs::write(&p, "#!/bin/sh\necho 'keychain locked' >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        write(
            &d.path().join("dc/config.json"),
            serde_json::json!({"credsStore": "broken"}),
        );
        let m = lookup("reg.example", None, &env).unwrap_err().to_string();
        assert!(
            m.contains("docker-credential-broken") && m.contains("keychain locked"),
            "{m}"
        );
        std::fs::write(d.path().join("dc/config.json"), b"{nope").unwrap();
        assert!(matches!(
            lookup("reg.example", None, &env),
            Err(Error::Config(_))
        ));
        write(
            &d.path().join("dc/config.json"),
            serde_json::json!({"auths": {"reg.example": {"auth": "!!"}}}),
        );
        let m = lookup("reg.example", None, &env).unwrap_err().to_string();
        assert!(m.contains("not base64"), "{m}");
    }
}
