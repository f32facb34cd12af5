//! Failure paths: unreachable and unresponsive servers fail fast with typed errors, bad
//! credentials and paths are typed errors, and no error or Debug output shows a password.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use obd_dedup::testutil::TestMariaDb;
use obd_dedup::{open, Error, MySqlDsn};

const SECRET: &str = "Zq9x:Kk7w@Wm3p/Yv5t";

fn assert_no_secret(text: &str, secret: &str) {
    assert!(!text.contains(secret), "password leaked: {text}");
    // also no recognisable fragment of it
    for part in secret.split([':', '@', '/']).filter(|p| p.len() >= 4) {
        assert!(
            !text.contains(part),
            "password fragment {part:?} leaked: {text}"
        );
    }
}

fn check_err(e: &Error, secret: &str) {
    assert_no_secret(&format!("{e}"), secret);
    assert_no_secret(&format!("{e:?}"), secret);
    assert_no_secret(&format!("{e:#?}"), secret);
}

#[test]
fn refused_port_fails_fast_and_typed() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // nothing listens there any more
    let dsn = format!("conv:{SECRET}@tcp(127.0.0.1:{port})/dedup");
    let t0 = Instant::now();
    let e = open("mysql", &dsn).unwrap_err();
    let took = t0.elapsed();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    check_err(&e, SECRET);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    eprintln!("refused: {took:?}: {e}");
}

#[test]
fn silent_server_fails_within_connect_timeout() {
    // Accepts TCP connections (kernel backlog) but never sends the MySQL handshake.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dsn = format!("conv:{SECRET}@tcp(127.0.0.1:{port})/dedup");
    let t0 = Instant::now();
    let e = open("mysql", &dsn).unwrap_err();
    let took = t0.elapsed();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    check_err(&e, SECRET);
    // the DSN's timeout parameter shortens it
    let t0 = Instant::now();
    let e = open("mysql", &format!("{dsn}?timeout=500ms")).unwrap_err();
    let took_short = t0.elapsed();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        took_short < Duration::from_millis(2000),
        "took {took_short:?}"
    );
    eprintln!("silent server: {took:?} (default), {took_short:?} (timeout=500ms)");
    drop(l);
}

#[test]
fn missing_unix_socket_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!(
        "conv:{SECRET}@unix({})/dedup",
        dir.path().join("nope.sock").display()
    );
    let e = open("mysql", &dsn).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    check_err(&e, SECRET);
}

#[test]
fn bad_dsns_and_types_are_typed() {
    for dsn in [
        "",
        &format!("conv:{SECRET}@tcp(127.0.0.1:3306)"),
        &format!("conv:{SECRET}@tcp(127.0.0.1:3306/db"),
        &format!("conv:{SECRET}@tcp(127.0.0.1:70000)/db"),
        &format!("conv:{SECRET}@tcp(127.0.0.1)/"),
        &format!("conv:{SECRET}@tcp(127.0.0.1)/db?tls=true"),
    ] {
        let e = open("mysql", dsn).unwrap_err();
        assert!(matches!(e, Error::Dsn(_)), "{dsn}: {e:?}");
        check_err(&e, SECRET);
    }
    assert!(matches!(
        open("postgres", "x"),
        Err(Error::UnknownDbType(_))
    ));
    let d = MySqlDsn::parse(&format!("conv:{SECRET}@tcp(db:3306)/dedup")).unwrap();
    assert_no_secret(&format!("{d} {d:?} {d:#?}"), SECRET);
    assert_eq!(d.password(), Some(SECRET));
}

#[test]
fn sqlite_unopenable_paths_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    for p in [
        dir.path().join("missing-dir/x.db"),
        dir.path().to_path_buf(), // a directory
        std::path::PathBuf::new(),
    ] {
        let e = open("sqlite", p.to_str().unwrap()).unwrap_err();
        assert!(e.is_unavailable(), "{}: {e:?}", p.display());
    }
    // a file that is not a database
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let e = open("sqlite", junk.to_str().unwrap()).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
}

#[test]
fn mariadb_auth_and_database_errors_are_typed_and_redacted() {
    let Some(server) = TestMariaDb::shared_or_skip() else {
        return;
    };
    let port = server.port;
    // wrong password
    let e = open(
        "mysql",
        &format!(
            "{}:{SECRET}@tcp(127.0.0.1:{port})/{}",
            TestMariaDb::USER,
            TestMariaDb::DATABASE
        ),
    )
    .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    check_err(&e, SECRET);
    eprintln!("wrong password: {e}");
    // unknown database (right password): the real password must not show either
    let e = open("mysql", &server.dsn_for("obdconv_does_not_exist")).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    check_err(&e, TestMariaDb::PASSWORD);
    // a database the user may not use
    let e = open("mysql", &server.dsn_for("mysql")).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    check_err(&e, TestMariaDb::PASSWORD);
}

#[test]
fn mariadb_socket_and_params_dsns_work() {
    let Some(server) = TestMariaDb::shared_or_skip() else {
        return;
    };
    let db = server.create_database("socket");
    let via_socket = open("mysql", &server.socket_dsn_for(&db)).unwrap();
    assert_eq!(
        via_socket.schema_version().unwrap(),
        obd_dedup::schema::LATEST_VERSION
    );
    let with_params = format!(
        "{}?timeout=2s&readTimeout=10s&writeTimeout=10s&parseTime=true&charset=utf8mb4",
        server.dsn_for(&db)
    );
    let via_tcp = open("mysql", &with_params).unwrap();
    let dbg = format!("{via_tcp:?} {via_socket:?}");
    assert_no_secret(&dbg, TestMariaDb::PASSWORD);
}

#[test]
fn mariadb_runtime_errors_after_server_death_are_typed() {
    // A private server (not the shared one): we kill it mid-use.
    let Some(server) = TestMariaDb::start_or_skip() else {
        return;
    };
    let db = open("mysql", &server.dsn()).unwrap();
    let p = obd_dedup::Profile::new("p1").unwrap();
    let k = obd_dedup::LayerKey::new("h", "r", "sha256:c", p);
    assert_eq!(db.layer_in_repo(&k).unwrap(), None);
    drop(server);
    let t0 = Instant::now();
    let e = db.layer_in_repo(&k).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        matches!(e, Error::Unavailable { .. } | Error::Query(_)),
        "{e:?}"
    );
    check_err(&e, TestMariaDb::PASSWORD);
    eprintln!("after server death: {e}");
}
