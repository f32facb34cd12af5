//! Test harness: a private MariaDB server (`mariadbd`) in a temporary directory.
//!
//! Enabled by the `testutil` feature. Other crates use it from their tests with
//! `obd-dedup = { path = "../obd-dedup", features = ["testutil"] }` in `[dev-dependencies]`:
//!
//! ```no_run
//! use obd_dedup::testutil::TestMariaDb;
//! let Some(db) = TestMariaDb::start_or_skip() else { return };
//! let dsn = db.dsn(); // "obdconv:…@tcp(127.0.0.1:PORT)/obdconv_test"
//! let dedup = obd_dedup::open("mysql", &dsn).unwrap();
//! // the server is killed and its data removed when `db` is dropped
//! ```
//!
//! The server listens on 127.0.0.1 at a free port and on a unix socket in its directory,
//! with a user [`TestMariaDb::USER`] / [`TestMariaDb::PASSWORD`] that may use every database
//! whose name starts with `obdconv_` ([`TestMariaDb::create_database`] makes fresh ones).
//!
//! Tools: `mariadb-install-db` and `mariadbd` (Debian package `mariadb-server`). When one
//! is missing, [`TestMariaDb::start_or_skip`] panics if the `CI` environment variable is set,
//! otherwise prints a skip message and returns `None`. A server that is installed but fails
//! to start is always a panic.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::dsn::{MySqlAddress, MySqlDsn};

/// A running private `mariadbd`; killed (and its data directory removed) on drop.
pub struct TestMariaDb {
    child: Mutex<Child>,
    /// `mariadbd` and its arguments, to start it again after [`TestMariaDb::kill`].
    server: (PathBuf, Vec<std::ffi::OsString>),
    log: PathBuf,
    dir: tempfile::TempDir,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Unix socket path.
    pub socket: PathBuf,
    next_db: AtomicUsize,
}

impl std::fmt::Debug for TestMariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMariaDb")
            .field("port", &self.port)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Search `PATH` plus the sbin directories (`mariadbd` lives in `/usr/sbin`).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|f| f.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl TestMariaDb {
    /// The test user (TCP from 127.0.0.1 and unix socket).
    pub const USER: &'static str = "obdconv";
    /// The test user's password: it contains `:`, `@` and `/` on purpose, to exercise DSN
    /// parsing and redaction.
    pub const PASSWORD: &'static str = "pa:ss@wo/rd-Secret42";
    /// The database [`TestMariaDb::dsn`] names (created at start).
    pub const DATABASE: &'static str = "obdconv_test";

    /// Starts a server, or returns `None` (after a message on stderr) if the MariaDB
    /// binaries are missing; panics instead when `CI` is set, or if the server fails.
    pub fn start_or_skip() -> Option<TestMariaDb> {
        let tools: Vec<_> = ["mariadb-install-db", "mariadbd"]
            .iter()
            .map(|t| (t, find_tool(t)))
            .collect();
        let missing: Vec<_> = tools
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(t, _)| **t)
            .collect();
        if !missing.is_empty() {
            let msg = format!(
                "MariaDB tests need {} (Debian package mariadb-server)",
                missing.join(", ")
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}; CI is set, so this is an error rather than a skip");
            }
            eprintln!("skipping: {msg}");
            return None;
        }
        let install = tools[0].1.clone().expect("checked");
        let server = tools[1].1.clone().expect("checked");
        Some(Self::start(&install, &server))
    }

    /// One server shared by every caller that holds the returned `Arc` at the same time;
    /// the next caller after the last one dropped it starts a new server. Lets parallel
    /// tests share a server without leaking it past the test process.
    pub fn shared_or_skip() -> Option<Arc<TestMariaDb>> {
        static SHARED: Mutex<Weak<TestMariaDb>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.upgrade() {
            return Some(db);
        }
        let db = Arc::new(Self::start_or_skip()?);
        *slot = Arc::downgrade(&db);
        Some(db)
    }

    fn start(install: &Path, server: &Path) -> TestMariaDb {
        let dir = tempfile::Builder::new()
            .prefix("obd-mariadb-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("error.log");
        // A private tmpdir: servers starting side by side must not share /tmp temp tables.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("creating the server's tmpdir");
        let root = running_as_root();

        let t0 = Instant::now();
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults");
        if root {
            cmd.arg("--user=root");
        }
        let out = cmd
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .output()
            .expect("running mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let mut args: Vec<std::ffi::OsString> = vec!["--no-defaults".into()];
        if root {
            args.push("--user=root".into());
        }
        for a in [
            format!("--datadir={}", data.display()),
            format!("--tmpdir={}", tmp.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.path().join("mysqld.pid").display()),
            format!("--log-error={}", log.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            "--skip-name-resolve".into(),
            "--skip-log-bin".into(),
            "--innodb-buffer-pool-size=32M".into(),
            "--max-connections=200".into(),
        ] {
            args.push(a.into());
        }
        let server = (server.to_path_buf(), args);
        let child = Self::spawn(&server);
        let db = TestMariaDb {
            child: Mutex::new(child),
            server,
            log: log.clone(),
            dir,
            port,
            socket,
            next_db: AtomicUsize::new(0),
        };

        // Wait until root can connect over the socket, then create the user and database.
        let mut conn = db.wait_up();
        let pw = Self::PASSWORD.replace('\'', "''");
        for host in ["127.0.0.1", "localhost"] {
            conn.query_drop(format!(
                "CREATE USER '{u}'@'{host}' IDENTIFIED BY '{pw}'",
                u = Self::USER
            ))
            .expect("CREATE USER");
            conn.query_drop(format!(
                "GRANT ALL ON `obdconv\\_%`.* TO '{u}'@'{host}'",
                u = Self::USER
            ))
            .expect("GRANT");
        }
        conn.query_drop(format!("CREATE DATABASE `{}`", Self::DATABASE))
            .expect("CREATE DATABASE");
        eprintln!(
            "mariadbd ready on 127.0.0.1:{port} in {:?} ({})",
            t0.elapsed(),
            db.dir.path().display()
        );
        db
    }

    fn spawn(server: &(PathBuf, Vec<std::ffi::OsString>)) -> Child {
        Command::new(&server.0)
            .args(&server.1)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd")
    }

    /// Waits (up to 60 s) until root can connect over the socket.
    fn wait_up(&self) -> mysql::Conn {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match mysql::Conn::new(self.root_opts()) {
                Ok(c) => return c,
                Err(e) => {
                    let exited = self.child.lock().expect("child").try_wait().ok().flatten();
                    if exited.is_some() || Instant::now() > deadline {
                        panic!(
                            "mariadbd did not come up ({e}; exit: {exited:?}); log:\n{}",
                            std::fs::read_to_string(&self.log).unwrap_or_default()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Kills the server (SIGKILL): clients get "connection refused" until
    /// [`TestMariaDb::start_again`].
    pub fn kill(&self) {
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts the server again on the same port and data (InnoDB recovers what was
    /// committed); returns once it accepts connections.
    pub fn start_again(&self) {
        self.kill();
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Self::spawn(&self.server);
        drop(self.wait_up());
    }

    fn root_opts(&self) -> mysql::Opts {
        let mut dsn = MySqlDsn::tcp("root", None, "localhost", 3306, "mysql");
        dsn.address = MySqlAddress::Unix(self.socket.clone());
        crate::mysql_db::raw_opts(&dsn, Duration::from_secs(3))
    }

    /// A connection as `root` over the unix socket (no password), for setting up fixtures.
    pub fn root_conn(&self) -> mysql::Conn {
        mysql::Conn::new(self.root_opts()).expect("root connection")
    }

    /// Creates a new empty database `obdconv_<hint>_<n>` that [`TestMariaDb::USER`] may use,
    /// and returns its name.
    pub fn create_database(&self, hint: &str) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let hint: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let name = format!("obdconv_{hint}_{n}");
        self.root_conn()
            .query_drop(format!("CREATE DATABASE `{name}`"))
            .expect("CREATE DATABASE");
        name
    }

    /// The upstream-form TCP DSN for `database` (contains the password).
    pub fn dsn_for(&self, database: &str) -> String {
        format!(
            "{}:{}@tcp(127.0.0.1:{})/{}",
            Self::USER,
            Self::PASSWORD,
            self.port,
            database
        )
    }

    /// The upstream-form TCP DSN for [`TestMariaDb::DATABASE`].
    pub fn dsn(&self) -> String {
        self.dsn_for(Self::DATABASE)
    }

    /// A unix-socket DSN (`user:pass@unix(/path)/db`) for `database`.
    pub fn socket_dsn_for(&self, database: &str) -> String {
        format!(
            "{}:{}@unix({})/{}",
            Self::USER,
            Self::PASSWORD,
            self.socket.display(),
            database
        )
    }

    /// A connection as the test user to `database` over TCP (for running raw SQL, e.g.
    /// upstream's statements, in tests).
    pub fn user_conn(&self, database: &str) -> mysql::Conn {
        let dsn = MySqlDsn::parse(&self.dsn_for(database)).expect("own DSN parses");
        mysql::Conn::new(crate::mysql_db::raw_opts(&dsn, Duration::from_secs(3)))
            .expect("user connection")
    }
}

impl Drop for TestMariaDb {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}
