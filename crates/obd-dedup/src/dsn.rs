//! Parsing of Go mysql-driver DSNs (`--db-str` for `--db-type mysql`), with the password
//! kept out of `Debug`, `Display` and every error.
//!
//! Grammar (go-sql-driver/mysql `ParseDSN`, the form upstream's `--db-str` takes):
//!
//! ```text
//! [user[:password]@][net[(addr)]]/dbname[?param1=value1&paramN=valueN]
//! ```
//!
//! - The **last** `/` separates the database name, and the **last** `@` before it ends the
//!   credentials, so a password may contain `/`, `@` and `:` (the user ends at the first `:`).
//! - `net` is `tcp` (also `tcp4`/`tcp6`, the default) or `unix`. The default address is
//!   `127.0.0.1:3306` for tcp and `/tmp/mysql.sock` for unix; a tcp address without a port
//!   gets `:3306`; IPv6 hosts are written `[::1]:3306`.
//! - The database name is percent-decoded, like Go's driver. It must not be empty here
//!   (upstream would connect without a database and fail every query).
//! - Parameters: `timeout` (connect timeout), `readTimeout` and `writeTimeout` are Go
//!   durations (`3s`, `500ms`, `1m30s`) and are used; `tls=false` / `tls=preferred` are
//!   accepted (no TLS is used), any other `tls` value is refused because this build cannot
//!   do TLS; every other parameter is accepted and ignored (the driver-specific knobs
//!   such as `parseTime`, `charset`, `loc` change nothing for our queries).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why a DSN was refused.
///
/// Neither the messages nor the variants carry any text taken from the DSN: in a malformed
/// DSN, parts of the password can end up where a host, network or parameter was expected
/// (e.g. `user:pa/ss@tcp(h)` without a database: the last `/` is inside the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsnError {
    /// The DSN is empty (upstream would silently use `127.0.0.1:3306` without a database).
    #[error("the DSN is empty; expected user:password@tcp(host:port)/database")]
    Empty,
    /// There is no `/` before the database name.
    #[error(
        "missing '/' before the database name; expected user:password@tcp(host:port)/database"
    )]
    NoSlash,
    /// The database name is empty.
    #[error("no database name after the last '/'")]
    NoDatabase,
    /// `net(addr` is not closed right before the `/`.
    #[error("the address must be written net(address) right before '/'")]
    BadAddress,
    /// A network other than tcp or unix.
    #[error("unsupported network before '(' (use tcp or unix)")]
    UnsupportedNet,
    /// The port is not a number in 1..=65535.
    #[error("the port is not a number in 1..=65535")]
    BadPort,
    /// The database name has a bad percent escape.
    #[error("invalid percent escape in the database name")]
    BadEscape,
    /// A parameter has a value we cannot use.
    #[error("invalid value for DSN parameter {name}: {reason}")]
    BadParam {
        /// Parameter name (one of the parameters we interpret).
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MySqlAddress {
    /// TCP host (name or IP, without brackets) and port.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for MySqlAddress {
    /// In DSN form: `tcp(host:port)` or `unix(/path)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MySqlAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp([{host}]:{port})")
            }
            MySqlAddress::Tcp { host, port } => write!(f, "tcp({host}:{port})"),
            MySqlAddress::Unix(p) => write!(f, "unix({})", p.display()),
        }
    }
}

/// A parsed MySQL DSN. `Debug` and `Display` print `***` instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlDsn {
    /// User name (empty when the DSN has none).
    pub user: String,
    password: Option<String>,
    /// Server address.
    pub address: MySqlAddress,
    /// Database (schema) name, percent-decoded.
    pub database: String,
    /// `timeout=` parameter: TCP connect timeout.
    pub connect_timeout: Option<Duration>,
    /// `readTimeout=` parameter.
    pub read_timeout: Option<Duration>,
    /// `writeTimeout=` parameter.
    pub write_timeout: Option<Duration>,
    /// Names of the parameters that were accepted but ignored.
    pub ignored_params: Vec<String>,
}

impl MySqlDsn {
    /// Parses a Go mysql-driver DSN (see the module docs for the grammar).
    pub fn parse(dsn: &str) -> Result<Self, DsnError> {
        if dsn.is_empty() {
            return Err(DsnError::Empty);
        }
        let slash = dsn.rfind('/').ok_or(DsnError::NoSlash)?;
        let (left, right) = (&dsn[..slash], &dsn[slash + 1..]);

        // [user[:password]@]
        let (creds, netaddr) = match left.rfind('@') {
            Some(at) => (Some(&left[..at]), &left[at + 1..]),
            None => (None, left),
        };
        let (user, password) = match creds {
            None => (String::new(), None),
            Some(c) => match c.find(':') {
                Some(colon) => (c[..colon].to_string(), Some(c[colon + 1..].to_string())),
                None => (c.to_string(), None),
            },
        };

        // [net[(addr)]]
        let (net, addr) = match netaddr.find('(') {
            Some(open) => {
                if !netaddr.ends_with(')') {
                    return Err(DsnError::BadAddress);
                }
                (&netaddr[..open], &netaddr[open + 1..netaddr.len() - 1])
            }
            None => {
                if netaddr.contains(')') {
                    return Err(DsnError::BadAddress);
                }
                (netaddr, "")
            }
        };
        let address = match net {
            "" | "tcp" | "tcp4" | "tcp6" => parse_tcp(addr)?,
            "unix" => MySqlAddress::Unix(PathBuf::from(if addr.is_empty() {
                "/tmp/mysql.sock"
            } else {
                addr
            })),
            _ => return Err(DsnError::UnsupportedNet),
        };

        // dbname[?params]
        let (db, params) = match right.find('?') {
            Some(q) => (&right[..q], Some(&right[q + 1..])),
            None => (right, None),
        };
        let database = percent_decode(db)?;
        if database.is_empty() {
            return Err(DsnError::NoDatabase);
        }

        let mut out = MySqlDsn {
            user,
            password,
            address,
            database,
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
            ignored_params: Vec::new(),
        };
        for kv in params.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "timeout" => out.connect_timeout = Some(param_duration("timeout", v)?),
                "readTimeout" => out.read_timeout = Some(param_duration("readTimeout", v)?),
                "writeTimeout" => out.write_timeout = Some(param_duration("writeTimeout", v)?),
                "tls" => match v.to_ascii_lowercase().as_str() {
                    "" | "false" | "0" | "preferred" => {}
                    _ => {
                        return Err(DsnError::BadParam {
                            name: "tls",
                            reason: "only tls=false or tls=preferred: this build has no TLS",
                        })
                    }
                },
                _ => out.ignored_params.push(k.to_string()),
            }
        }
        Ok(out)
    }

    /// The password, if the DSN has one. Do not log it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Replaces the password (`None` removes it).
    pub fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }

    /// Builds a TCP DSN.
    pub fn tcp(
        user: impl Into<String>,
        password: Option<String>,
        host: impl Into<String>,
        port: u16,
        database: impl Into<String>,
    ) -> Self {
        MySqlDsn {
            user: user.into(),
            password,
            address: MySqlAddress::Tcp {
                host: host.into(),
                port,
            },
            database: database.into(),
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
            ignored_params: Vec::new(),
        }
    }

    /// The DSN in Go form with the real password (for handing to another process, e.g. a
    /// test harness). Never log the result.
    pub fn to_secret_string(&self) -> String {
        self.render(self.password.as_deref())
    }

    fn render(&self, password: Option<&str>) -> String {
        let mut s = String::new();
        if !self.user.is_empty() || password.is_some() {
            s.push_str(&self.user);
            if let Some(p) = password {
                s.push(':');
                s.push_str(p);
            }
            s.push('@');
        }
        s.push_str(&self.address.to_string());
        s.push('/');
        s.push_str(&self.database);
        s
    }
}

impl fmt::Display for MySqlDsn {
    /// `user:***@tcp(host:port)/db` (parameters are not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(self.password.as_ref().map(|_| "***")))
    }
}

impl fmt::Debug for MySqlDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlDsn")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("address", &self.address)
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("ignored_params", &self.ignored_params)
            .finish()
    }
}

fn parse_tcp(addr: &str) -> Result<MySqlAddress, DsnError> {
    const DEFAULT_PORT: u16 = 3306;
    if addr.is_empty() {
        return Ok(MySqlAddress::Tcp {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
        });
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        // [v6]:port or [v6]
        let close = rest.find(']').ok_or(DsnError::BadAddress)?;
        let host = &rest[..close];
        match &rest[close + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(DsnError::BadAddress)?)),
        }
    } else if addr.matches(':').count() > 1 {
        (addr, None) // bare IPv6 literal
    } else {
        match addr.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(DsnError::BadPort),
        },
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(MySqlAddress::Tcp {
        host: host.to_string(),
        port,
    })
}

fn percent_decode(s: &str) -> Result<String, DsnError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(DsnError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| DsnError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| DsnError::BadEscape)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DsnError::BadEscape)
}

fn param_duration(name: &'static str, value: &str) -> Result<Duration, DsnError> {
    parse_go_duration(value).ok_or(DsnError::BadParam {
        name,
        reason: "not a duration like 3s, 500ms or 1m30s",
    })
}

/// Parses a non-negative Go `time.Duration` string: a sequence of decimal numbers with a
/// unit each (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), or `0`.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * secs;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> MySqlAddress {
        MySqlAddress::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn upstream_form() {
        let d = MySqlDsn::parse("dbuser:dbpass@tcp(127.0.0.1:3306)/dedup").unwrap();
        assert_eq!(d.user, "dbuser");
        assert_eq!(d.password(), Some("dbpass"));
        assert_eq!(d.address, tcp("127.0.0.1", 3306));
        assert_eq!(d.database, "dedup");
        assert_eq!(d.to_string(), "dbuser:***@tcp(127.0.0.1:3306)/dedup");
        assert_eq!(
            d.to_secret_string(),
            "dbuser:dbpass@tcp(127.0.0.1:3306)/dedup"
        );
    }

    #[test]
    fn variants() {
        let d = MySqlDsn::parse("u@tcp(db.example:3307)/x").unwrap();
        assert_eq!((d.user.as_str(), d.password()), ("u", None));
        assert_eq!(d.address, tcp("db.example", 3307));
        assert_eq!(d.to_string(), "u@tcp(db.example:3307)/x");

        let d = MySqlDsn::parse("u:p@unix(/run/mysqld/mysqld.sock)/x").unwrap();
        assert_eq!(
            d.address,
            MySqlAddress::Unix("/run/mysqld/mysqld.sock".into())
        );
        assert_eq!(d.to_string(), "u:***@unix(/run/mysqld/mysqld.sock)/x");

        let d = MySqlDsn::parse("u:p@tcp(dbhost)/x").unwrap();
        assert_eq!(d.address, tcp("dbhost", 3306));
        let d = MySqlDsn::parse("u:p@tcp([::1]:3310)/x").unwrap();
        assert_eq!(d.address, tcp("::1", 3310));
        assert_eq!(d.address.to_string(), "tcp([::1]:3310)");
        let d = MySqlDsn::parse("u:p@tcp(::1)/x").unwrap();
        assert_eq!(d.address, tcp("::1", 3306));
        let d = MySqlDsn::parse("u:p@/x").unwrap();
        assert_eq!(d.address, tcp("127.0.0.1", 3306));
        let d = MySqlDsn::parse("u:p@tcp/x").unwrap();
        assert_eq!(d.address, tcp("127.0.0.1", 3306));
        let d = MySqlDsn::parse("u:p@unix/x").unwrap();
        assert_eq!(d.address, MySqlAddress::Unix("/tmp/mysql.sock".into()));
        let d = MySqlDsn::parse("/x").unwrap();
        assert_eq!((d.user.as_str(), d.password()), ("", None));
        let d = MySqlDsn::parse("tcp(h:1)/my%2Fdb").unwrap();
        assert_eq!(d.database, "my/db");
    }

    #[test]
    fn password_with_separators() {
        let d = MySqlDsn::parse("u:p@ss:w/rd@tcp(h:3306)/db?x=1").unwrap();
        assert_eq!(d.user, "u");
        assert_eq!(d.password(), Some("p@ss:w/rd"));
        assert_eq!(d.database, "db");
        assert!(!format!("{d} {d:?}").contains("p@ss"));
        // an empty password is still a password: Go sends it, and it is shown as ***
        let d = MySqlDsn::parse("u:@tcp(h)/db").unwrap();
        assert_eq!(d.password(), Some(""));
    }

    #[test]
    fn params() {
        let d = MySqlDsn::parse(
            "u:p@tcp(h)/db?timeout=1500ms&readTimeout=1m30s&writeTimeout=2s&parseTime=true&charset=utf8mb4&tls=false",
        )
        .unwrap();
        assert_eq!(d.connect_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(d.read_timeout, Some(Duration::from_secs(90)));
        assert_eq!(d.write_timeout, Some(Duration::from_secs(2)));
        assert_eq!(d.ignored_params, vec!["parseTime", "charset"]);
        assert!(matches!(
            MySqlDsn::parse("u:p@tcp(h)/db?timeout=soon"),
            Err(DsnError::BadParam { name, .. }) if name == "timeout"
        ));
        assert!(matches!(
            MySqlDsn::parse("u:p@tcp(h)/db?tls=skip-verify"),
            Err(DsnError::BadParam { name, .. }) if name == "tls"
        ));
        assert!(MySqlDsn::parse("u:p@tcp(h)/db?tls=preferred").is_ok());
    }

    #[test]
    fn errors() {
        assert_eq!(MySqlDsn::parse(""), Err(DsnError::Empty));
        assert_eq!(MySqlDsn::parse("u:secret@tcp(h)"), Err(DsnError::NoSlash));
        assert_eq!(MySqlDsn::parse("u:p@tcp(h)/"), Err(DsnError::NoDatabase));
        assert_eq!(MySqlDsn::parse("u:p@tcp(h/db"), Err(DsnError::BadAddress));
        assert_eq!(MySqlDsn::parse("u:p@tcp(h)x/db"), Err(DsnError::BadAddress));
        assert_eq!(
            MySqlDsn::parse("u:p@udp(h)/db"),
            Err(DsnError::UnsupportedNet)
        );
        assert_eq!(
            MySqlDsn::parse("u:p@tcp(h:99999)/db"),
            Err(DsnError::BadPort)
        );
        assert_eq!(MySqlDsn::parse("u:p@tcp(h)/a%zz"), Err(DsnError::BadEscape));
        // no error message mentions the password
        for bad in [
            "u:hunter2@tcp(h:0)/db",
            "u:hunter2@tcp(h)/",
            "u:hunter2@tcp(h/db",
            "u:hunter2@bogus(h)/db",
            "u:hunter2@tcp(h)/db?timeout=x",
            "u:hunter2@tcp(h)/db?tls=hunter2",
            "u:hun/ter2@tcp(h)",
            "u:hun/ter2@tcp(h:1)",
        ] {
            let e = MySqlDsn::parse(bad).unwrap_err();
            let text = format!("{e} {e:?} {}", crate::Error::from(e.clone()));
            assert!(
                !text.contains("hunter2") && !text.contains("ter2"),
                "{text}"
            );
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("1h2m"), Some(Duration::from_secs(3720)));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("3"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("-1s"), None);
    }
}
