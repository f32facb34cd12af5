//! One behaviour suite, run against SQLite (a temp file) and a real MariaDB
//! (`obd_dedup::testutil::TestMariaDb`): every case is a function generic over a
//! [`Harness`], and the `suite!` macro makes one `#[test]` per case and back end.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;

use mysql::prelude::Queryable;
use obd_dedup::testutil::TestMariaDb;
use obd_dedup::{
    open, schema, DbType, DedupDb, Error, LayerEntry, LayerKey, ManifestEntry, ManifestKey,
    MySqlDsn, Profile,
};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A value bound to a raw `?` placeholder.
#[derive(Clone, Copy)]
enum P<'a> {
    S(&'a str),
    I(i64),
}

/// What a back end must provide to run the suite: fresh databases and raw SQL access (to
/// play upstream's role).
trait Harness: Sync {
    fn db_type(&self) -> &'static str;
    /// A new, empty database; returns its `--db-str`.
    fn fresh(&self, hint: &str) -> String;
    /// Upstream's original DDL for this dialect.
    fn upstream_ddl(&self) -> &'static str;
    /// Runs statements separated by `;` without parameters.
    fn batch(&self, db: &str, sql: &str);
    /// Runs one statement with parameters; `Err(message)` on failure.
    fn exec(&self, db: &str, sql: &str, params: &[P]) -> Result<u64, String>;
    /// Runs a query; every value rendered as a string.
    fn query(&self, db: &str, sql: &str, params: &[P]) -> Vec<Vec<String>>;
    /// The primary-key columns of `table`, in key order.
    fn primary_key(&self, db: &str, table: &str) -> Vec<String>;
    /// This dialect's (version table DDL, migration-2 step for the layer table).
    fn migration_ddl(&self) -> (&'static str, &'static str);
}

// ---------------------------------------------------------------- SQLite

struct Sqlite {
    dir: tempfile::TempDir,
    n: std::sync::atomic::AtomicUsize,
}

impl Sqlite {
    fn new() -> Self {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
            n: Default::default(),
        }
    }
    fn conn(db: &str) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
    }
}

fn sqlite_params<'a>(params: &'a [P<'a>]) -> Vec<Box<dyn rusqlite::ToSql + 'a>> {
    params
        .iter()
        .map(|p| -> Box<dyn rusqlite::ToSql> {
            match *p {
                P::S(s) => Box::new(s),
                P::I(i) => Box::new(i),
            }
        })
        .collect()
}

impl Harness for Sqlite {
    fn db_type(&self) -> &'static str {
        "sqlite"
    }
    fn fresh(&self, hint: &str) -> String {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.dir.path().join(format!("{hint}-{n}.db"));
        p.to_str().unwrap().to_string()
    }
    fn upstream_ddl(&self) -> &'static str {
        schema::sqlite::UPSTREAM_TABLES
    }
    fn primary_key(&self, db: &str, table: &str) -> Vec<String> {
        let sql = "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk";
        self.query(db, sql, &[P::S(table)])
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect()
    }
    fn migration_ddl(&self) -> (&'static str, &'static str) {
        (
            schema::sqlite::CREATE_VERSION_TABLE,
            schema::sqlite::PROFILE_LAYERS,
        )
    }
    fn batch(&self, db: &str, sql: &str) {
        Self::conn(db).execute_batch(sql).unwrap();
    }
    fn exec(&self, db: &str, sql: &str, params: &[P]) -> Result<u64, String> {
        let ps = sqlite_params(params);
        let refs: Vec<&dyn rusqlite::ToSql> = ps.iter().map(|b| b.as_ref()).collect();
        Self::conn(db)
            .execute(sql, refs.as_slice())
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }
    fn query(&self, db: &str, sql: &str, params: &[P]) -> Vec<Vec<String>> {
        let ps = sqlite_params(params);
        let refs: Vec<&dyn rusqlite::ToSql> = ps.iter().map(|b| b.as_ref()).collect();
        let c = Self::conn(db);
        let mut st = c.prepare(sql).unwrap();
        let cols = st.column_count();
        st.query_map(refs.as_slice(), |r| {
            (0..cols)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        rusqlite::types::ValueRef::Null => "NULL".into(),
                        other => format!("{other:?}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

// ---------------------------------------------------------------- MariaDB

struct Maria {
    server: Arc<TestMariaDb>,
}

/// Upstream's DDL, verbatim from docs/USERSPACE_CONVERTOR.md.
const UPSTREAM_MYSQL_DDL: &str = "CREATE TABLE `overlaybd_layers` (
  `host` varchar(255) NOT NULL,
  `repo` varchar(255) NOT NULL,
  `chain_id` varchar(255) NOT NULL COMMENT 'chain-id of the normal image layer',
  `data_digest` varchar(255) NOT NULL COMMENT 'digest of overlaybd layer',
  `data_size` bigint(20) NOT NULL COMMENT 'size of overlaybd layer',
  PRIMARY KEY (`host`,`repo`,`chain_id`),
  KEY `index_registry_chainId` (`host`,`chain_id`) USING BTREE
) DEFAULT CHARSET=utf8;
CREATE TABLE `overlaybd_manifests` (
  `host` varchar(255) NOT NULL,
  `repo` varchar(255) NOT NULL,
  `src_digest` varchar(255) NOT NULL COMMENT 'digest of the normal image manifest',
  `out_digest` varchar(255) NOT NULL COMMENT 'digest of overlaybd manifest',
  `data_size` bigint(20) NOT NULL COMMENT 'size of overlaybd manifest',
  `mediatype` varchar(255) NOT NULL COMMENT 'mediatype of the converted image manifest',
  PRIMARY KEY (`host`,`repo`,`src_digest`, `mediatype`),
  KEY `index_registry_src_digest` (`host`,`src_digest`) USING BTREE
) DEFAULT CHARSET=utf8";

impl Maria {
    fn new() -> Option<Self> {
        Some(Maria {
            server: TestMariaDb::shared_or_skip()?,
        })
    }
    fn conn(&self, db: &str) -> mysql::Conn {
        self.server
            .user_conn(&MySqlDsn::parse(db).unwrap().database)
    }
}

fn mysql_params(params: &[P]) -> mysql::Params {
    mysql::Params::Positional(
        params
            .iter()
            .map(|p| match *p {
                P::S(s) => mysql::Value::from(s),
                P::I(i) => mysql::Value::from(i),
            })
            .collect(),
    )
}

impl Harness for Maria {
    fn db_type(&self) -> &'static str {
        "mysql"
    }
    fn fresh(&self, hint: &str) -> String {
        self.server.dsn_for(&self.server.create_database(hint))
    }
    fn upstream_ddl(&self) -> &'static str {
        UPSTREAM_MYSQL_DDL
    }
    fn primary_key(&self, db: &str, table: &str) -> Vec<String> {
        let sql = "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                   WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                   AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION";
        self.query(db, sql, &[P::S(table)])
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect()
    }
    fn migration_ddl(&self) -> (&'static str, &'static str) {
        (
            schema::mysql::CREATE_VERSION_TABLE,
            schema::mysql::PROFILE_LAYERS,
        )
    }
    fn batch(&self, db: &str, sql: &str) {
        let mut c = self.conn(db);
        for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
            c.query_drop(stmt).unwrap();
        }
    }
    fn exec(&self, db: &str, sql: &str, params: &[P]) -> Result<u64, String> {
        let mut c = self.conn(db);
        c.exec_drop(sql, mysql_params(params))
            .map(|_| c.affected_rows())
            .map_err(|e| e.to_string())
    }
    fn query(&self, db: &str, sql: &str, params: &[P]) -> Vec<Vec<String>> {
        let rows: Vec<mysql::Row> = self.conn(db).exec(sql, mysql_params(params)).unwrap();
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql::Value::Bytes(b) => String::from_utf8_lossy(&b).into(),
                        mysql::Value::Int(n) => n.to_string(),
                        mysql::Value::UInt(n) => n.to_string(),
                        mysql::Value::NULL => "NULL".into(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect()
    }
}

// ---------------------------------------------------------------- helpers

fn profile(name: &str) -> Profile {
    Profile::from_fields([("format", "obdconv-test"), ("variant", name)]).unwrap()
}

fn lkey(repo: &str, chain: &str, p: &Profile) -> LayerKey {
    LayerKey::new("reg.example:5000", repo, chain, p.clone())
}

fn mkey(repo: &str, src: &str, mt: &str, p: &Profile) -> ManifestKey {
    ManifestKey::new("reg.example:5000", repo, src, mt, p.clone())
}

fn open_db(h: &dyn Harness, db: &str) -> Box<dyn DedupDb> {
    open(h.db_type(), db).unwrap_or_else(|e| panic!("open {}: {e}", h.db_type()))
}

// Upstream's exact statements (research/convertor-behavior.md §4.2).
const UP_LAYER_INSERT: &str = "insert into overlaybd_layers(host, repo, chain_id, data_digest, data_size) values(?, ?, ?, ?, ?)";
const UP_LAYER_GET: &str = "select host, repo, chain_id, data_digest, data_size from overlaybd_layers where host=? and repo=? and chain_id=?";
const UP_LAYER_CROSS: &str = "select host, repo, chain_id, data_digest, data_size from overlaybd_layers where host=? and chain_id=?";
const UP_LAYER_DELETE: &str = "delete from overlaybd_layers where host=? and repo=? and chain_id=?";
const UP_MANIFEST_INSERT: &str = "insert into overlaybd_manifests(host, repo, src_digest, out_digest, data_size, mediatype) values(?, ?, ?, ?, ?, ?)";
const UP_MANIFEST_GET: &str = "select host, repo, src_digest, out_digest, data_size, mediatype from overlaybd_manifests where host=? and repo=? and src_digest=? and mediatype=?";
const UP_MANIFEST_CROSS: &str = "select host, repo, src_digest, out_digest, data_size, mediatype from overlaybd_manifests where host=? and src_digest=? and mediatype=?";
const UP_MANIFEST_DELETE: &str =
    "delete from overlaybd_manifests where host=? and repo=? and src_digest=? and mediatype=?";

const H: &str = "reg.example:5000";

// ---------------------------------------------------------------- cases

fn layer_roundtrip(h: &dyn Harness) {
    let db = open_db(h, &h.fresh("layers"));
    assert_eq!(db.db_type().as_str(), h.db_type());
    assert_eq!(db.schema_version().unwrap(), schema::LATEST_VERSION);
    let p = profile("a");
    let k = lkey("ns/app", "sha256:c1", &p);
    assert_eq!(db.layer_in_repo(&k).unwrap(), None);
    assert!(!db.delete_layer(&k, None).unwrap());

    db.put_layer(&LayerEntry::new(k.clone(), "sha256:d1", 1234))
        .unwrap();
    assert_eq!(
        db.layer_in_repo(&k).unwrap(),
        Some(LayerEntry::new(k.clone(), "sha256:d1", 1234))
    );
    // upsert: same key, new value, still one row
    db.put_layer(&LayerEntry::new(k.clone(), "sha256:d2", i64::MAX as u64))
        .unwrap();
    let got = db.layer_in_repo(&k).unwrap().unwrap();
    assert_eq!(
        (got.digest.as_str(), got.size),
        ("sha256:d2", i64::MAX as u64)
    );
    // same again is fine
    db.put_layer(&got).unwrap();

    // conditional delete keeps a row that was rewritten meanwhile
    assert!(!db.delete_layer(&k, Some("sha256:d1")).unwrap());
    assert!(db.layer_in_repo(&k).unwrap().is_some());
    assert!(db.delete_layer(&k, Some("sha256:d2")).unwrap());
    assert_eq!(db.layer_in_repo(&k).unwrap(), None);
    db.put_layer(&LayerEntry::new(k.clone(), "sha256:d3", 1))
        .unwrap();
    assert!(db.delete_layer(&k, None).unwrap());
    assert_eq!(db.layer_in_repo(&k).unwrap(), None);

    // bad records are refused before reaching the database
    let long = lkey(&"r".repeat(256), "sha256:c1", &p);
    assert!(matches!(
        db.layer_in_repo(&long),
        Err(Error::InvalidRecord(_))
    ));
    assert!(matches!(
        db.put_layer(&LayerEntry::new(k.clone(), "", 1)),
        Err(Error::InvalidRecord(_))
    ));
    assert!(matches!(
        db.put_layer(&LayerEntry::new(k.clone(), "sha256:x", u64::MAX)),
        Err(Error::InvalidRecord(_))
    ));
    // 255 non-ASCII characters fit (varchar counts characters)
    let wide = lkey(&"é".repeat(255), "sha256:c1", &p);
    db.put_layer(&LayerEntry::new(wide.clone(), "sha256:w", 5))
        .unwrap();
    assert_eq!(db.layer_in_repo(&wide).unwrap().unwrap().digest, "sha256:w");
}

fn manifest_roundtrip(h: &dyn Harness) {
    let db = open_db(h, &h.fresh("manifests"));
    let p = profile("a");
    let k = mkey("ns/app", "sha256:src", OCI, &p);
    assert_eq!(db.manifest_in_repo(&k).unwrap(), None);
    db.put_manifest(&ManifestEntry::new(k.clone(), "sha256:m1", 700))
        .unwrap();
    assert_eq!(
        db.manifest_in_repo(&k).unwrap(),
        Some(ManifestEntry::new(k.clone(), "sha256:m1", 700))
    );
    // the media type is part of the key
    let kd = mkey("ns/app", "sha256:src", DOCKER, &p);
    assert_eq!(db.manifest_in_repo(&kd).unwrap(), None);
    db.put_manifest(&ManifestEntry::new(kd.clone(), "sha256:m2", 600))
        .unwrap();
    assert_eq!(
        db.manifest_in_repo(&k).unwrap().unwrap().digest,
        "sha256:m1"
    );
    assert_eq!(
        db.manifest_in_repo(&kd).unwrap().unwrap().digest,
        "sha256:m2"
    );
    // upsert
    db.put_manifest(&ManifestEntry::new(k.clone(), "sha256:m3", 701))
        .unwrap();
    assert_eq!(db.manifest_in_repo(&k).unwrap().unwrap().size, 701);
    // other repos
    let other = mkey("ns/other", "sha256:src", OCI, &p);
    db.put_manifest(&ManifestEntry::new(other.clone(), "sha256:m3", 701))
        .unwrap();
    let cross = db.manifest_in_other_repos(&k, 10).unwrap();
    assert_eq!(
        cross,
        vec![ManifestEntry::new(other.clone(), "sha256:m3", 701)]
    );
    assert_eq!(db.manifest_in_other_repos(&kd, 10).unwrap(), vec![]);
    // deletes
    assert!(!db.delete_manifest(&k, Some("sha256:m1")).unwrap());
    assert!(db.delete_manifest(&k, Some("sha256:m3")).unwrap());
    assert!(db.delete_manifest(&kd, None).unwrap());
    assert_eq!(db.manifest_in_repo(&k).unwrap(), None);
    assert_eq!(db.manifest_in_repo(&kd).unwrap(), None);
    assert!(db.manifest_in_repo(&other).unwrap().is_some());
    let bad = mkey("ns/app", "sha256:src", "tÿpe", &p);
    assert!(matches!(
        db.manifest_in_repo(&bad),
        Err(Error::InvalidRecord(_))
    ));
}

fn profile_isolation(h: &dyn Harness) {
    let dbs = h.fresh("profiles");
    let db = open_db(h, &dbs);
    let (pa, pb) = (profile("a"), profile("b"));
    let ka = lkey("ns/app", "sha256:c1", &pa);
    let kb = lkey("ns/app", "sha256:c1", &pb);
    db.put_layer(&LayerEntry::new(ka.clone(), "sha256:da", 1))
        .unwrap();
    assert_eq!(db.layer_in_repo(&kb).unwrap(), None);
    assert_eq!(
        db.layer_in_other_repos(&lkey("x/y", "sha256:c1", &pb), 10)
            .unwrap(),
        vec![]
    );
    db.put_layer(&LayerEntry::new(kb.clone(), "sha256:db", 2))
        .unwrap();
    assert_eq!(db.layer_in_repo(&ka).unwrap().unwrap().digest, "sha256:da");
    assert_eq!(db.layer_in_repo(&kb).unwrap().unwrap().digest, "sha256:db");
    assert!(db.delete_layer(&kb, None).unwrap());
    assert_eq!(db.layer_in_repo(&ka).unwrap().unwrap().digest, "sha256:da");

    // rows written by upstream (no profile) never match any profile
    h.exec(
        &dbs,
        UP_LAYER_INSERT,
        &[
            P::S(H),
            P::S("ns/up"),
            P::S("sha256:c9"),
            P::S("sha256:up"),
            P::I(9),
        ],
    )
    .unwrap();
    h.exec(
        &dbs,
        UP_MANIFEST_INSERT,
        &[
            P::S(H),
            P::S("ns/up"),
            P::S("sha256:s9"),
            P::S("sha256:upm"),
            P::I(9),
            P::S(OCI),
        ],
    )
    .unwrap();
    for p in [&pa, &pb] {
        assert_eq!(
            db.layer_in_repo(&lkey("ns/up", "sha256:c9", p)).unwrap(),
            None
        );
        assert_eq!(
            db.layer_in_other_repos(&lkey("ns/x", "sha256:c9", p), 10)
                .unwrap(),
            vec![]
        );
        assert_eq!(
            db.manifest_in_repo(&mkey("ns/up", "sha256:s9", OCI, p))
                .unwrap(),
            None
        );
        assert_eq!(
            db.manifest_in_other_repos(&mkey("ns/x", "sha256:s9", OCI, p), 10)
                .unwrap(),
            vec![]
        );
        assert!(!db
            .delete_layer(&lkey("ns/up", "sha256:c9", p), None)
            .unwrap());
    }
    // the upstream rows are untouched
    assert_eq!(
        h.query(
            &dbs,
            UP_LAYER_GET,
            &[P::S(H), P::S("ns/up"), P::S("sha256:c9")]
        )
        .len(),
        1
    );
    // and the profile is really stored empty for them
    assert_eq!(
        h.query(
            &dbs,
            "SELECT profile FROM overlaybd_layers WHERE repo = ?",
            &[P::S("ns/up")]
        ),
        vec![vec![String::new()]]
    );
}

fn other_repo_lookup(h: &dyn Harness) {
    let db = open_db(h, &h.fresh("crossrepo"));
    let p = profile("a");
    for (repo, d) in [
        ("ns/c", "sha256:dc"),
        ("ns/a", "sha256:da"),
        ("ns/b", "sha256:db"),
        ("ns/self", "sha256:ds"),
    ] {
        db.put_layer(&LayerEntry::new(lkey(repo, "sha256:chain", &p), d, 10))
            .unwrap();
    }
    // other chain, other host, other profile: never returned
    db.put_layer(&LayerEntry::new(
        lkey("ns/z", "sha256:other", &p),
        "sha256:x",
        1,
    ))
    .unwrap();
    db.put_layer(&LayerEntry::new(
        LayerKey::new("elsewhere:5000", "ns/z", "sha256:chain", p.clone()),
        "sha256:x",
        1,
    ))
    .unwrap();
    db.put_layer(&LayerEntry::new(
        lkey("ns/z", "sha256:chain", &profile("b")),
        "sha256:x",
        1,
    ))
    .unwrap();

    let me = lkey("ns/self", "sha256:chain", &p);
    let got = db.layer_in_other_repos(&me, 100).unwrap();
    let repos: Vec<_> = got.iter().map(|e| e.key.repo.as_str()).collect();
    assert_eq!(
        repos,
        ["ns/a", "ns/b", "ns/c"],
        "ordered by repo, own repo excluded"
    );
    assert_eq!(
        got[0],
        LayerEntry::new(lkey("ns/a", "sha256:chain", &p), "sha256:da", 10)
    );
    assert_eq!(db.layer_in_other_repos(&me, 2).unwrap().len(), 2);
    assert_eq!(db.layer_in_other_repos(&me, 0).unwrap().len(), 0);
    // from a repo without a row of its own: all four
    assert_eq!(
        db.layer_in_other_repos(&lkey("ns/new", "sha256:chain", &p), 100)
            .unwrap()
            .len(),
        4
    );
}

fn concurrent_shared_handle(h: &dyn Harness) {
    let db: Arc<dyn DedupDb> = Arc::from(open_db(h, &h.fresh("conc_shared")));
    let p = profile("a");
    const THREADS: usize = 8;
    const ROUNDS: usize = 25;
    thread::scope(|s| {
        for t in 0..THREADS {
            let (db, p) = (db.clone(), p.clone());
            s.spawn(move || {
                for i in 0..ROUNDS {
                    let shared = lkey("ns/app", "sha256:shared", &p);
                    db.put_layer(&LayerEntry::new(
                        shared.clone(),
                        format!("sha256:t{t}"),
                        t as u64,
                    ))
                    .unwrap();
                    let own = lkey("ns/app", &format!("sha256:c{t}-{i}"), &p);
                    db.put_layer(&LayerEntry::new(
                        own.clone(),
                        format!("sha256:d{t}-{i}"),
                        i as u64,
                    ))
                    .unwrap();
                    assert_eq!(db.layer_in_repo(&own).unwrap().unwrap().size, i as u64);
                    assert!(db.layer_in_repo(&shared).unwrap().is_some());
                    let mk = mkey("ns/app", "sha256:src", OCI, &p);
                    db.put_manifest(&ManifestEntry::new(mk, format!("sha256:m{t}"), 1))
                        .unwrap();
                }
            });
        }
    });
    for t in 0..THREADS {
        for i in 0..ROUNDS {
            let own = lkey("ns/app", &format!("sha256:c{t}-{i}"), &p);
            let e = db.layer_in_repo(&own).unwrap().expect("no lost rows");
            assert_eq!(e.digest, format!("sha256:d{t}-{i}"));
        }
    }
    let shared = db
        .layer_in_repo(&lkey("ns/app", "sha256:shared", &p))
        .unwrap()
        .unwrap();
    let t: usize = shared
        .digest
        .trim_start_matches("sha256:t")
        .parse()
        .unwrap();
    assert_eq!(
        shared.size, t as u64,
        "digest and size come from the same writer"
    );
}

fn concurrent_separate_handles(h: &dyn Harness) {
    // Eight "converters" open the same fresh database at once (racing the migration) and
    // write the same and different keys.
    let dbs = h.fresh("conc_sep");
    let p = profile("a");
    const THREADS: usize = 8;
    const ROUNDS: usize = 15;
    thread::scope(|s| {
        for t in 0..THREADS {
            let (dbs, p) = (&dbs, p.clone());
            s.spawn(move || {
                let db = open_db(h, dbs);
                for i in 0..ROUNDS {
                    let shared = lkey("ns/app", &format!("sha256:shared{i}"), &p);
                    db.put_layer(&LayerEntry::new(shared, format!("sha256:t{t}"), 1))
                        .unwrap();
                    let own = lkey(&format!("ns/r{t}"), &format!("sha256:c{i}"), &p);
                    db.put_layer(&LayerEntry::new(own, format!("sha256:d{t}-{i}"), 2))
                        .unwrap();
                }
            });
        }
    });
    let db = open_db(h, &dbs);
    assert_eq!(db.schema_version().unwrap(), schema::LATEST_VERSION);
    let versions = h.query(
        &dbs,
        "SELECT version FROM obdconv_schema_version ORDER BY version",
        &[],
    );
    assert_eq!(versions, vec![vec!["1".to_string()], vec!["2".to_string()]]);
    for i in 0..ROUNDS {
        let others = db
            .layer_in_other_repos(&lkey("ns/none", &format!("sha256:c{i}"), &p), 100)
            .unwrap();
        let repos: BTreeSet<_> = others.iter().map(|e| e.key.repo.clone()).collect();
        assert_eq!(repos.len(), THREADS, "no lost rows for chain {i}");
        assert!(db
            .layer_in_repo(&lkey("ns/app", &format!("sha256:shared{i}"), &p))
            .unwrap()
            .is_some());
    }
}

fn layer_claims(h: &dyn Harness) {
    // One claimer per layer (host, chain, profile) across repositories and handles; its own
    // claim is renewable; an expired claim is taken over; a release frees it; 8 handles
    // racing for one claim: exactly one wins.
    let dbs = h.fresh("claims");
    let p = profile("a");
    let (a, b) = (open_db(h, &dbs), open_db(h, &dbs));
    let ttl = std::time::Duration::from_secs(60);
    let k = lkey("ns/one", "sha256:base", &p);
    let k_other_repo = lkey("ns/two", "sha256:base", &p);
    assert!(a.claim_layer(&k, "A", ttl).unwrap());
    assert!(
        !b.claim_layer(&k_other_repo, "B", ttl).unwrap(),
        "held by A in any repo"
    );
    assert!(a.claim_layer(&k, "A", ttl).unwrap(), "A renews its own");
    assert!(b
        .claim_layer(&lkey("ns/two", "sha256:base", &profile("b")), "B", ttl)
        .unwrap());
    b.release_layer(&k, "B").unwrap();
    assert!(
        !b.claim_layer(&k, "B", ttl).unwrap(),
        "B cannot release A's claim"
    );
    a.release_layer(&k, "A").unwrap();
    assert!(
        b.claim_layer(&k, "B", ttl).unwrap(),
        "free after A's release"
    );
    let short = lkey("ns/one", "sha256:short", &p);
    assert!(a
        .claim_layer(&short, "A", std::time::Duration::from_millis(1))
        .unwrap());
    thread::sleep(std::time::Duration::from_millis(30));
    assert!(
        b.claim_layer(&short, "B", ttl).unwrap(),
        "an expired claim is taken over"
    );
    assert!(!a.claim_layer(&short, "A", ttl).unwrap());
    let race = lkey("ns/r", "sha256:race", &p);
    let winners: usize = thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let (dbs, race) = (&dbs, race.clone());
                s.spawn(move || {
                    let db = open_db(h, dbs);
                    usize::from(db.claim_layer(&race, &format!("T{t}"), ttl).unwrap())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

fn migration_idempotent(h: &dyn Harness) {
    let dbs = h.fresh("idem");
    let p = profile("a");
    let k = lkey("ns/app", "sha256:c1", &p);
    {
        let db = open_db(h, &dbs);
        db.put_layer(&LayerEntry::new(k.clone(), "sha256:d1", 1))
            .unwrap();
    }
    let a = open_db(h, &dbs);
    let b = open_db(h, &dbs);
    assert_eq!(a.schema_version().unwrap(), schema::LATEST_VERSION);
    assert_eq!(b.layer_in_repo(&k).unwrap().unwrap().digest, "sha256:d1");
    let versions = h.query(
        &dbs,
        "SELECT version, description FROM obdconv_schema_version ORDER BY version",
        &[],
    );
    assert_eq!(versions.len(), schema::MIGRATIONS.len());
    for (row, m) in versions.iter().zip(schema::MIGRATIONS) {
        assert_eq!(row[0], m.version.to_string());
        assert_eq!(row[1], m.description);
    }
}

fn upstream_database_migrates(h: &dyn Harness) {
    let dbs = h.fresh("upstream");
    h.batch(&dbs, h.upstream_ddl());
    // upstream converters have been writing
    for (repo, chain, digest) in [
        ("ns/a", "sha256:c1", "sha256:u1"),
        ("ns/b", "sha256:c1", "sha256:u2"),
    ] {
        h.exec(
            &dbs,
            UP_LAYER_INSERT,
            &[P::S(H), P::S(repo), P::S(chain), P::S(digest), P::I(100)],
        )
        .unwrap();
    }
    for mt in [OCI, DOCKER] {
        h.exec(
            &dbs,
            UP_MANIFEST_INSERT,
            &[
                P::S(H),
                P::S("ns/a"),
                P::S("sha256:s1"),
                P::S("sha256:um"),
                P::I(50),
                P::S(mt),
            ],
        )
        .unwrap();
    }

    let db = open_db(h, &dbs);
    assert_eq!(db.schema_version().unwrap(), schema::LATEST_VERSION);
    assert_eq!(
        h.primary_key(&dbs, "overlaybd_layers"),
        ["host", "repo", "chain_id", "profile"]
    );
    assert_eq!(
        h.primary_key(&dbs, "overlaybd_manifests"),
        ["host", "repo", "src_digest", "mediatype", "profile"]
    );

    // upstream's queries still read upstream's rows
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        h.query(
            &dbs,
            UP_LAYER_GET,
            &[P::S(H), P::S("ns/a"), P::S("sha256:c1")]
        ),
        vec![row(&[H, "ns/a", "sha256:c1", "sha256:u1", "100"])]
    );
    let mut cross = h.query(&dbs, UP_LAYER_CROSS, &[P::S(H), P::S("sha256:c1")]);
    cross.sort();
    assert_eq!(
        cross,
        vec![
            row(&[H, "ns/a", "sha256:c1", "sha256:u1", "100"]),
            row(&[H, "ns/b", "sha256:c1", "sha256:u2", "100"])
        ]
    );
    for mt in [OCI, DOCKER] {
        assert_eq!(
            h.query(
                &dbs,
                UP_MANIFEST_GET,
                &[P::S(H), P::S("ns/a"), P::S("sha256:s1"), P::S(mt)]
            ),
            vec![row(&[H, "ns/a", "sha256:s1", "sha256:um", "50", mt])]
        );
        assert_eq!(
            h.query(
                &dbs,
                UP_MANIFEST_CROSS,
                &[P::S(H), P::S("sha256:s1"), P::S(mt)]
            )
            .len(),
            1
        );
    }

    // obdconv does not reuse them, and can write the same keys with its profile
    let p = profile("a");
    let k = lkey("ns/a", "sha256:c1", &p);
    assert_eq!(db.layer_in_repo(&k).unwrap(), None);
    assert_eq!(db.layer_in_other_repos(&k, 10).unwrap(), vec![]);
    db.put_layer(&LayerEntry::new(k.clone(), "sha256:ours", 7))
        .unwrap();
    let mk = mkey("ns/a", "sha256:s1", OCI, &p);
    assert_eq!(db.manifest_in_repo(&mk).unwrap(), None);
    db.put_manifest(&ManifestEntry::new(mk.clone(), "sha256:oursm", 8))
        .unwrap();
    assert_eq!(db.layer_in_repo(&k).unwrap().unwrap().digest, "sha256:ours");
    assert_eq!(
        db.manifest_in_repo(&mk).unwrap().unwrap().digest,
        "sha256:oursm"
    );

    // upstream writers keep their semantics: a duplicate of their own row fails (which they
    // ignore), a new key works, and their delete works
    assert!(h
        .exec(
            &dbs,
            UP_LAYER_INSERT,
            &[
                P::S(H),
                P::S("ns/a"),
                P::S("sha256:c1"),
                P::S("sha256:u1"),
                P::I(100)
            ]
        )
        .is_err());
    assert!(h
        .exec(
            &dbs,
            UP_MANIFEST_INSERT,
            &[
                P::S(H),
                P::S("ns/a"),
                P::S("sha256:s1"),
                P::S("sha256:um"),
                P::I(50),
                P::S(OCI)
            ]
        )
        .is_err());
    h.exec(
        &dbs,
        UP_LAYER_INSERT,
        &[
            P::S(H),
            P::S("ns/a"),
            P::S("sha256:c2"),
            P::S("sha256:u3"),
            P::I(1),
        ],
    )
    .unwrap();
    assert_eq!(
        h.query(
            &dbs,
            UP_LAYER_GET,
            &[P::S(H), P::S("ns/a"), P::S("sha256:c2")]
        )
        .len(),
        1
    );
    assert_eq!(
        h.exec(
            &dbs,
            UP_LAYER_DELETE,
            &[P::S(H), P::S("ns/b"), P::S("sha256:c1")]
        )
        .unwrap(),
        1
    );
    assert_eq!(
        h.exec(
            &dbs,
            UP_MANIFEST_DELETE,
            &[P::S(H), P::S("ns/a"), P::S("sha256:s1"), P::S(DOCKER)]
        )
        .unwrap(),
        1
    );
    // upstream's reader now also sees our row for that key (documented in `schema`)
    assert_eq!(
        h.query(
            &dbs,
            UP_LAYER_GET,
            &[P::S(H), P::S("ns/a"), P::S("sha256:c1")]
        )
        .len(),
        2
    );
    // reopening is a no-op
    drop(db);
    let db = open_db(h, &dbs);
    assert_eq!(db.layer_in_repo(&k).unwrap().unwrap().digest, "sha256:ours");
}

fn interrupted_migration_completes(h: &dyn Harness) {
    // Version 1 recorded, the layer table already altered, the manifest table not (a crash
    // between the two ALTERs of migration 2): the next open finishes the job.
    let dbs = h.fresh("interrupted");
    let (version_ddl, layers_step) = h.migration_ddl();
    h.batch(&dbs, h.upstream_ddl());
    h.exec(
        &dbs,
        UP_LAYER_INSERT,
        &[
            P::S(H),
            P::S("ns/a"),
            P::S("sha256:c1"),
            P::S("sha256:u1"),
            P::I(1),
        ],
    )
    .unwrap();
    h.batch(&dbs, version_ddl);
    h.batch(&dbs, layers_step);
    h.exec(
        &dbs,
        "INSERT INTO obdconv_schema_version (version, description) VALUES (?, ?)",
        &[P::I(1), P::S(schema::MIGRATIONS[0].description)],
    )
    .unwrap();
    assert_eq!(h.primary_key(&dbs, "overlaybd_manifests").len(), 4);
    let db = open_db(h, &dbs);
    assert_eq!(db.schema_version().unwrap(), schema::LATEST_VERSION);
    assert_eq!(h.primary_key(&dbs, "overlaybd_layers").len(), 4);
    assert_eq!(h.primary_key(&dbs, "overlaybd_manifests").len(), 5);
    assert_eq!(
        h.query(
            &dbs,
            UP_LAYER_GET,
            &[P::S(H), P::S("ns/a"), P::S("sha256:c1")]
        )
        .len(),
        1
    );
    let k = mkey("ns/a", "sha256:s", OCI, &profile("a"));
    db.put_manifest(&ManifestEntry::new(k.clone(), "sha256:m", 1))
        .unwrap();
    assert!(db.manifest_in_repo(&k).unwrap().is_some());
}

fn schema_too_new_is_refused(h: &dyn Harness) {
    let dbs = h.fresh("toonew");
    drop(open_db(h, &dbs));
    h.exec(
        &dbs,
        "INSERT INTO obdconv_schema_version (version, description) VALUES (?, ?)",
        &[P::I(99), P::S("from the future")],
    )
    .unwrap();
    match open(h.db_type(), &dbs) {
        Err(Error::SchemaTooNew { found: 99, known }) => assert_eq!(known, schema::LATEST_VERSION),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

fn db_type_matches(h: &dyn Harness) {
    let db = open_db(h, &h.fresh("dbtype"));
    let want: DbType = h.db_type().parse().unwrap();
    assert_eq!(db.db_type(), want);
    let dbg = format!("{db:?}");
    assert!(!dbg.contains(TestMariaDb::PASSWORD), "{dbg}");
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(&super::Sqlite::new()) } )*
        }
        mod mariadb {
            $(
                #[test]
                fn $case() {
                    let Some(h) = super::Maria::new() else { return };
                    super::$case(&h)
                }
            )*
        }
    };
}

suite!(
    layer_roundtrip,
    manifest_roundtrip,
    profile_isolation,
    other_repo_lookup,
    concurrent_shared_handle,
    concurrent_separate_handles,
    layer_claims,
    migration_idempotent,
    upstream_database_migrates,
    interrupted_migration_completes,
    schema_too_new_is_refused,
    db_type_matches,
);
