//! Integration tests against real `docker-registry` instances (see `obd_registry::testutil`).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use obd_registry::testutil::{
    RegistryKind, TestRegistry, TEST_PASSWORD, TEST_REFRESH_TOKEN, TEST_USER,
};
use obd_registry::{
    referrers_fallback_tag, sha256_digest, BlobPush, Client, ClientOptions, Credentials,
    Descriptor, Error, Reference, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn read_all(c: &Client, repo: &str, digest: &str) -> Result<Vec<u8>, Error> {
    let mut r = c.get_blob(repo, digest)?;
    let mut v = Vec::new();
    r.read_to_end(&mut v).map_err(Error::from_io)?;
    Ok(v)
}

/// Push config + one layer + an OCI manifest (with odd but valid formatting) by digest and
/// by tag; returns (manifest bytes, manifest digest, layer digest).
fn push_image(c: &Client, repo: &str, tag: &str, seed: u64) -> (Vec<u8>, String, String) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#
    )
    .into_bytes();
    let (cfg_digest, _) = c.push_blob_bytes(repo, config.clone()).unwrap();
    let layer = pseudo_random(4096, seed);
    let (layer_digest, _) = c.push_blob_bytes(repo, layer.clone()).unwrap();
    let manifest = format!(
        "{{\n   \"schemaVersion\": 2,\n  \"mediaType\": \"{OCI_MANIFEST}\",\n  \"config\": {{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"{cfg_digest}\", \"size\": {}}},\n  \"layers\": [{{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"{layer_digest}\", \"size\": {}}}]\n}}\n",
        config.len(),
        layer.len()
    )
    .into_bytes();
    let d = sha256_digest(&manifest);
    assert_eq!(
        c.put_manifest(repo, &d, OCI_MANIFEST, &manifest).unwrap(),
        d
    );
    assert_eq!(
        c.put_manifest(repo, tag, OCI_MANIFEST, &manifest).unwrap(),
        d
    );
    (manifest, d, layer_digest)
}

/// Path of a blob's data file inside the registry's filesystem storage.
fn blob_data_path(reg: &TestRegistry, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    reg.dir
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn plain_blobs_small_and_large() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    c.ping().unwrap();
    let repo = "test/blobs";

    // small blob from a one-shot stream
    let small = b"hello registry".to_vec();
    let d = sha256_digest(&small);
    assert_eq!(c.head_blob(repo, &d).unwrap(), None);
    let r = c
        .push_blob(
            repo,
            &d,
            small.len() as u64,
            std::io::Cursor::new(small.clone()),
        )
        .unwrap();
    assert_eq!(r, BlobPush::Uploaded);
    assert_eq!(c.head_blob(repo, &d).unwrap(), Some(small.len() as u64));
    assert_eq!(read_all(&c, repo, &d).unwrap(), small);
    // second push: HEAD finds it
    let r = c
        .push_blob(
            repo,
            &d,
            small.len() as u64,
            std::io::Cursor::new(small.clone()),
        )
        .unwrap();
    assert_eq!(r, BlobPush::AlreadyExists);

    // empty blob
    let (ed, _) = c.push_blob_bytes(repo, Vec::new()).unwrap();
    assert_eq!(read_all(&c, repo, &ed).unwrap(), Vec::<u8>::new());

    // multi-MiB monolithic from a file
    let tmp = tempfile::tempdir().unwrap();
    let big = pseudo_random(6 * 1024 * 1024 + 123, 7);
    let p = tmp.path().join("big");
    std::fs::write(&p, &big).unwrap();
    let (bd, size, r) = c.push_blob_file(repo, &p).unwrap();
    assert_eq!((size, r), (big.len() as u64, BlobPush::Uploaded));
    assert_eq!(bd, sha256_digest(&big));
    let mut reader = c.get_blob(repo, &bd).unwrap();
    assert_eq!(reader.size(), Some(big.len() as u64));
    let mut got = Vec::new();
    reader.read_to_end(&mut got).unwrap();
    assert!(got == big);
    assert_eq!(c.get_blob_bytes(repo, &bd).unwrap().len(), big.len());
    // ranged reads
    assert_eq!(
        c.get_blob_range(repo, &bd, 1000, 512).unwrap(),
        &big[1000..1512]
    );
    assert_eq!(
        c.get_blob_range(repo, &bd, big.len() as u64 - 10, 100)
            .unwrap(),
        &big[big.len() - 10..]
    );
    assert!(c
        .get_blob_range(repo, &bd, big.len() as u64 + 5, 10)
        .unwrap()
        .is_empty());

    // chunked PATCH upload (1 MiB chunks, last chunk partial) from a stream
    let chunked = Client::new(
        &reg.host,
        ClientOptions {
            chunk_size: Some(1024 * 1024),
            ..reg.options()
        },
    )
    .unwrap();
    let big2 = pseudo_random(3 * 1024 * 1024 + 5, 8);
    let d2 = sha256_digest(&big2);
    let r = chunked
        .push_blob(
            "test/chunked",
            &d2,
            big2.len() as u64,
            std::io::Cursor::new(big2.clone()),
        )
        .unwrap();
    assert_eq!(r, BlobPush::Uploaded);
    assert!(read_all(&c, "test/chunked", &d2).unwrap() == big2);
    // chunked, exact multiple of the chunk size, from a file (rewindable)
    let big3 = pseudo_random(2 * 1024 * 1024, 9);
    let p3 = tmp.path().join("big3");
    std::fs::write(&p3, &big3).unwrap();
    let (d3, _, _) = chunked.push_blob_file("test/chunked", &p3).unwrap();
    assert!(read_all(&c, "test/chunked", &d3).unwrap() == big3);
    let log = reg.log();
    assert!(
        log.contains("\"PATCH /v2/test/chunked/blobs/uploads/"),
        "no PATCH in log"
    );

    // wrong digest on upload: the registry rejects it
    let wrong = sha256_digest(b"something else");
    let e = c
        .push_blob(repo, &wrong, 5, std::io::Cursor::new(b"12345".to_vec()))
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // a short stream is an error, not a hang
    let d5 = sha256_digest(b"12345");
    let e = c
        .push_blob(repo, &d5, 10, std::io::Cursor::new(b"12345".to_vec()))
        .unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e}");
    assert!(e.to_string().contains("before the announced size"), "{e}");
    assert_eq!(c.head_blob(repo, &d5).unwrap(), None);

    // missing blob
    let missing = sha256_digest(b"missing");
    assert_eq!(c.head_blob(repo, &missing).unwrap(), None);
    let e = c.get_blob(repo, &missing).err().unwrap();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert_eq!(e.exit_code(), 4);
}

#[test]
fn plain_manifests_tags_mount_and_corruption() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let repo = "test/img";
    let (bytes, digest, layer) = push_image(&c, repo, "v1", 1);

    // exact bytes by tag and by digest
    let m = c.get_manifest(repo, "v1").unwrap();
    assert_eq!(m.bytes, bytes);
    assert_eq!(m.digest, digest);
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert!(!m.is_index());
    let m2 = c.get_manifest(repo, &digest).unwrap();
    assert_eq!(m2, m);
    let h = c.head_manifest(repo, "v1").unwrap().unwrap();
    assert_eq!(h.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(h.size, Some(bytes.len() as u64));
    assert_eq!(c.head_manifest(repo, "nope").unwrap(), None);

    // through a parsed reference
    let r = Reference::parse(&reg.reference("test/img:v1")).unwrap();
    let c2 = Client::new(&r.registry, reg.options()).unwrap();
    assert_eq!(
        c2.get_manifest(&r.repository, r.object()).unwrap().bytes,
        bytes
    );

    // tags
    push_image(&c, repo, "v2", 2);
    let mut tags = c.list_tags(repo).unwrap();
    tags.sort();
    assert_eq!(tags, vec!["v1".to_string(), "v2".to_string()]);

    // not found: tag, digest, repository
    for e in [
        c.get_manifest(repo, "missing").unwrap_err(),
        c.get_manifest(repo, &sha256_digest(b"x")).unwrap_err(),
        c.get_manifest("no/such/repo", "v1").unwrap_err(),
        c.list_tags("no/such/repo").unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
    // a manifest referring to a missing blob is refused (not reported as NotFound)
    let bad = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},"layers":[]}}"#,
        sha256_digest(b"nothing")
    );
    let e = c
        .put_manifest(repo, "bad", OCI_MANIFEST, bad.as_bytes())
        .unwrap_err();
    assert!(matches!(e, Error::Status { code: 400, .. }), "{e}");
    // pushing by a digest that does not match the bytes is caught locally
    let e = c
        .put_manifest(repo, &sha256_digest(b"x"), OCI_MANIFEST, &bytes)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");

    // cross-repo mount
    assert!(c.mount_blob("test/other", repo, &layer).unwrap());
    assert!(c.head_blob("test/other", &layer).unwrap().is_some());
    let absent = sha256_digest(b"absent");
    assert!(!c.mount_blob("test/other", repo, &absent).unwrap());
    assert_eq!(c.head_blob("test/other", &absent).unwrap(), None);

    // delete
    let (_, d3, _) = push_image(&c, repo, "v3", 3);
    c.delete_manifest(repo, &d3).unwrap();
    assert!(matches!(
        c.get_manifest(repo, &d3).unwrap_err(),
        Error::NotFound { .. }
    ));

    // corrupt the layer on disk (same length): streaming verification catches it at EOF
    let path = blob_data_path(&reg, &layer);
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    let e = read_all(&c, repo, &layer).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // and a truncated blob is an error too
    std::fs::write(&path, &data[..1000]).unwrap();
    assert!(read_all(&c, repo, &layer).is_err());
    // corrupt a manifest: fetching by digest detects it
    let mpath = blob_data_path(&reg, &digest);
    let mut mb = std::fs::read(&mpath).unwrap();
    let i = mb.iter().position(|b| *b == b' ').unwrap();
    mb[i] = b'\t';
    std::fs::write(&mpath, &mb).unwrap();
    let e = c.get_manifest(repo, &digest).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}

#[test]
fn plain_referrers_fallback() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let repo = "test/ref";
    let (_, subject, _) = push_image(&c, repo, "v1", 11);
    assert!(c.referrers(repo, &subject, None).unwrap().is_empty());

    let (empty_digest, _) = c.push_blob_bytes(repo, b"{}".to_vec()).unwrap();
    let (layer_digest, _) = c.push_blob_bytes(repo, b"overlaybd".to_vec()).unwrap();
    let subject_size = c.get_manifest(repo, &subject).unwrap().bytes.len();
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.obd.test",
        "config": {"mediaType": OCI_EMPTY, "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer_digest, "size": 9}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let pushed = c
        .put_manifest_full(repo, &sha256_digest(&artifact), OCI_MANIFEST, &artifact)
        .unwrap();
    // distribution 2.8 has no referrers API
    assert_eq!(pushed.oci_subject, None);

    let mut desc = Descriptor::new(OCI_MANIFEST, &pushed.digest, artifact.len() as u64);
    desc.artifact_type = Some("application/vnd.obd.test".into());
    desc.annotations = Some([("k".to_string(), "v".to_string())].into());
    let idx_digest = c.add_referrer_fallback(repo, &subject, &desc).unwrap();
    // idempotent: same descriptor replaces itself
    let idx_digest2 = c.add_referrer_fallback(repo, &subject, &desc).unwrap();
    assert_eq!(idx_digest, idx_digest2);

    let refs = c.referrers(repo, &subject, None).unwrap();
    assert_eq!(refs, vec![desc.clone()]);
    let refs = c
        .referrers(repo, &subject, Some("application/vnd.obd.test"))
        .unwrap();
    assert_eq!(refs.len(), 1);
    assert!(c
        .referrers(repo, &subject, Some("application/other"))
        .unwrap()
        .is_empty());

    // the fallback tag holds an OCI index
    let tag = referrers_fallback_tag(&subject);
    assert!(tag.starts_with("sha256-"));
    assert!(c.list_tags(repo).unwrap().contains(&tag));
    let idx = c.get_manifest(repo, &tag).unwrap();
    assert_eq!(idx.media_type, OCI_INDEX);
    assert!(idx.is_index());
    assert_eq!(idx.digest, idx_digest);
}

#[test]
fn tls_basic_auth() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::TlsBasic) else {
        return;
    };
    let c = reg.client();
    c.ping().unwrap();
    let (bytes, digest, layer) = push_image(&c, "test/tls", "v1", 21);
    assert_eq!(c.get_manifest("test/tls", "v1").unwrap().bytes, bytes);
    assert_eq!(c.get_manifest("test/tls", &digest).unwrap().digest, digest);
    assert_eq!(read_all(&c, "test/tls", &layer).unwrap().len(), 4096);
    assert!(c.mount_blob("test/tls2", "test/tls", &layer).unwrap());

    // wrong password, and none at all
    for creds in [Some(Credentials::new(TEST_USER, "wrong")), None] {
        let bad = Client::new(
            &reg.host,
            ClientOptions {
                credentials: creds,
                ..reg.options()
            },
        )
        .unwrap();
        let e = bad.get_manifest("test/tls", "v1").unwrap_err();
        assert!(matches!(e, Error::Auth { .. }), "{e}");
        assert_eq!(e.exit_code(), 3);
        assert!(!e.to_string().contains("wrong"), "{e}");
    }

    // unknown CA: TLS error; insecure skip verify: works
    let opts = ClientOptions {
        root_cas: vec![],
        ..reg.options()
    };
    let e = Client::new(&reg.host, opts.clone())
        .unwrap()
        .ping()
        .unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    Client::new(
        &reg.host,
        ClientOptions {
            insecure_skip_verify: true,
            ..opts.clone()
        },
    )
    .unwrap()
    .get_manifest("test/tls", "v1")
    .unwrap();
    // CA from a docker-style cert dir
    Client::new(
        &reg.host,
        ClientOptions {
            cert_dirs: vec![reg.cert_dir.clone().unwrap()],
            ..opts
        },
    )
    .unwrap()
    .ping()
    .unwrap();
}

#[test]
fn docker_config_credentials() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::TlsBasic) else {
        return;
    };
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USER}:{TEST_PASSWORD}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::json!({"auths": {(format!("https://{}", reg.host)): {"auth": auth}}})
            .to_string(),
    )
    .unwrap();
    // Only this test reads DOCKER_CONFIG.
    std::env::set_var("DOCKER_CONFIG", dir.path());
    let c = Client::new(
        &reg.host,
        ClientOptions {
            credentials: None,
            use_docker_config: true,
            ..reg.options()
        },
    )
    .unwrap();
    c.ping().unwrap();
    push_image(&c, "test/dockercfg", "v1", 31);
}

#[test]
fn mutual_tls() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::MutualTls) else {
        return;
    };
    let c = reg.client();
    c.ping().unwrap();
    let (bytes, _, layer) = push_image(&c, "test/mtls", "v1", 41);
    assert_eq!(c.get_manifest("test/mtls", "v1").unwrap().bytes, bytes);
    assert_eq!(read_all(&c, "test/mtls", &layer).unwrap().len(), 4096);

    // no client certificate: refused during/after the handshake
    let anon = Client::new(&reg.host, reg.anonymous_options()).unwrap();
    let e = anon.ping().unwrap_err();
    eprintln!("mTLS without client cert: {e}");
    assert!(
        matches!(e, Error::Tls { .. } | Error::Network { .. }),
        "{e}"
    );
    // CA and client pair from a docker-style cert dir
    let cd = Client::new(
        &reg.host,
        ClientOptions {
            root_cas: vec![],
            client_cert: None,
            cert_dirs: vec![reg.cert_dir.clone().unwrap()],
            ..reg.options()
        },
    )
    .unwrap();
    assert_eq!(cd.get_manifest("test/mtls", "v1").unwrap().bytes, bytes);
    // containerd certs.d layout: <dir>/<host:port>/{ca.crt,client.cert,client.key}
    let root = tempfile::tempdir().unwrap();
    let hostdir = root.path().join(&reg.host);
    std::fs::create_dir(&hostdir).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(reg.cert_dir.as_ref().unwrap().join(f), hostdir.join(f)).unwrap();
    }
    let cd = Client::new(
        &reg.host,
        ClientOptions {
            root_cas: vec![],
            client_cert: None,
            cert_dirs: vec![root.path().to_path_buf()],
            ..reg.options()
        },
    )
    .unwrap();
    cd.ping().unwrap();
    // a missing client cert file is a configuration error
    let e = Client::new(
        &reg.host,
        ClientOptions {
            client_cert: Some((reg.dir.join("nope.crt"), reg.dir.join("nope.key"))),
            ..reg.options()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[test]
fn token_auth() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Token) else {
        return;
    };
    let c = reg.client();
    c.ping().unwrap();
    let (bytes, digest, layer) = push_image(&c, "test/tok", "v1", 51);
    assert_eq!(c.get_manifest("test/tok", "v1").unwrap().bytes, bytes);
    // mount needs pull on the source repository too
    assert!(c.mount_blob("test/tok2", "test/tok", &layer).unwrap());
    let reqs = reg.token_requests();
    assert!(reqs.iter().all(|r| r.starts_with("GET")), "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.contains("repository:test/tok2:pull,push")
                && r.contains("repository:test/tok:pull")),
        "{reqs:?}"
    );
    // tokens are cached per scope: far fewer token requests than registry requests
    assert!(reqs.len() <= 8, "{reqs:?}");

    // anonymous: pull works, push is denied
    let anon = Client::new(&reg.host, reg.anonymous_options()).unwrap();
    assert_eq!(anon.get_manifest("test/tok", &digest).unwrap().bytes, bytes);
    let e = anon
        .push_blob_bytes("test/tok", b"anon".to_vec())
        .unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");

    // wrong password: the token server refuses
    let bad = Client::new(
        &reg.host,
        ClientOptions {
            credentials: Some(Credentials::new(TEST_USER, "nope")),
            ..reg.options()
        },
    )
    .unwrap();
    let e = bad.get_manifest("test/tok", "v1").unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(!e.to_string().contains("nope"));
}

#[test]
fn check_push_identity_tokens_and_auth_context() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Token) else {
        return;
    };
    reg.client().check_push("test/cp").unwrap();
    // Anonymous gets pull only: refused, saying no credentials were found and where we looked.
    let anon = Client::new(
        &reg.host,
        ClientOptions {
            credentials_searched: vec!["/x/auth.json (absent)".into()],
            ..reg.anonymous_options()
        },
    )
    .unwrap();
    let e = anon.check_push("test/cp").unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Auth { .. }), "{m}");
    assert!(
        m.contains("no credentials for") && m.contains("/x/auth.json (absent)"),
        "{m}"
    );
    assert!(
        m.contains("docker login") && m.contains("-u user:password"),
        "{m}"
    );
    // Refused credentials: their source is named, never the secret.
    let bad = Client::new(
        &reg.host,
        ClientOptions {
            credentials: Some(Credentials::new(TEST_USER, "wrong-secret")),
            credentials_source: Some("REGISTRY_AUTH_FILE=/y.json auths[h]".into()),
            ..reg.options()
        },
    )
    .unwrap();
    let m = bad.check_push("test/cp").unwrap_err().to_string();
    assert!(
        m.contains("credentials from REGISTRY_AUTH_FILE=/y.json"),
        "{m}"
    );
    assert!(!m.contains("wrong-secret"), "{m}");
    // An identity token (user `<token>`) is a refresh token for the OAuth2 POST.
    let it = Client::new(
        &reg.host,
        ClientOptions {
            credentials: Some(Credentials::new("<token>", TEST_REFRESH_TOKEN)),
            ..reg.options()
        },
    )
    .unwrap();
    it.check_push("test/it").unwrap();
    push_image(&it, "test/it", "v1", 71);
    assert!(
        reg.token_requests().iter().any(|r| r.starts_with("POST")),
        "{:?}",
        reg.token_requests()
    );
}

#[test]
fn tls_messages_and_certs_d() {
    let (Some(tls), Some(plain)) = (
        TestRegistry::start_or_skip(RegistryKind::TlsBasic),
        TestRegistry::start_or_skip(RegistryKind::Plain),
    ) else {
        return;
    };
    // HTTPS to a plain-HTTP registry: said so, not retried.
    let c = Client::new(
        &plain.host,
        ClientOptions {
            plain_http: false,
            ..plain.options()
        },
    )
    .unwrap();
    let t = std::time::Instant::now();
    let m = c.ping().unwrap_err().to_string();
    assert!(
        m.contains("speaks plain HTTP") && m.contains("--plain"),
        "{m}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "retried: {m}");
    // Unknown CA: the fix is named.
    let no_ca = Client::new(
        &tls.host,
        ClientOptions {
            root_cas: vec![],
            certs_d_roots: Some(vec![]),
            ..tls.options()
        },
    )
    .unwrap();
    let m = no_ca.ping().unwrap_err().to_string();
    assert!(
        m.contains("UnknownIssuer") && m.contains("--root-ca"),
        "{m}"
    );
    // The CA in <certs.d root>/<host:port>/ca.crt is trusted.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(&tls.host)).unwrap();
    std::fs::copy(
        tls.ca_cert.as_ref().unwrap(),
        root.path().join(&tls.host).join("ca.crt"),
    )
    .unwrap();
    let via = Client::new(
        &tls.host,
        ClientOptions {
            root_cas: vec![],
            certs_d_roots: Some(vec![PathBuf::from("/nonexistent"), root.path().into()]),
            ..tls.options()
        },
    )
    .unwrap();
    via.ping().unwrap();
}

#[test]
fn token_auth_oauth_post() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::TokenOAuth) else {
        return;
    };
    let c = reg.client();
    let (bytes, _, layer) = push_image(&c, "test/oauth", "v1", 61);
    assert_eq!(c.get_manifest("test/oauth", "v1").unwrap().bytes, bytes);
    assert_eq!(read_all(&c, "test/oauth", &layer).unwrap().len(), 4096);
    let reqs = reg.token_requests();
    assert!(reqs.iter().any(|r| r.starts_with("POST")), "{reqs:?}");
    let bad = Client::new(
        &reg.host,
        ClientOptions {
            credentials: Some(Credentials::new(TEST_USER, "nope")),
            ..reg.options()
        },
    )
    .unwrap();
    let e = bad.get_manifest("test/oauth", "v1").unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
}

#[test]
fn connection_refused_is_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = Client::new(
        &format!("127.0.0.1:{port}"),
        ClientOptions {
            plain_http: true,
            retries: 2,
            retry_base_delay: std::time::Duration::from_millis(10),
            ..Default::default()
        },
    )
    .unwrap();
    let e = c.ping().unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    assert_eq!(e.exit_code(), 6);
}

#[test]
fn retries_on_5xx_429_and_dropped_connections() {
    use obd_registry::testutil::{Fault, FlakyProxy};
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let (bytes, digest, _) = push_image(&reg.client(), "test/retry", "v1", 71);
    let proxy = FlakyProxy::start(
        &reg.host,
        vec![
            Fault::status(503),
            Fault::retry_after(429, 1),
            Fault::close(),
            Fault::status(502),
        ],
    )
    .unwrap();
    let opts = ClientOptions {
        retries: 5,
        ..reg.options()
    };
    let c = Client::new(&proxy.host, opts.clone()).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(c.get_manifest("test/retry", "v1").unwrap().bytes, bytes);
    assert_eq!(proxy.faults_served(), 4);
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After ignored"
    );

    // uploads from a file restart from scratch after the PUT fails
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("blob");
    std::fs::write(&p, pseudo_random(100_000, 72)).unwrap();
    proxy.add_faults([Fault::status(500).on("PUT"), Fault::close().on("PUT")]);
    let (d, _, r) = c.push_blob_file("test/retry", &p).unwrap();
    assert_eq!(r, BlobPush::Uploaded);
    assert_eq!(proxy.faults_served(), 6);
    assert_eq!(read_all(&c, "test/retry", &d).unwrap().len(), 100_000);

    // chunked upload from bytes: a failed PATCH restarts the upload
    let chunked = Client::new(
        &proxy.host,
        ClientOptions {
            chunk_size: Some(40_000),
            ..opts.clone()
        },
    )
    .unwrap();
    proxy.add_faults([Fault::status(503).on("PATCH")]);
    let data = pseudo_random(100_000, 73);
    let (d, r) = chunked.push_blob_bytes("test/retry", data.clone()).unwrap();
    assert_eq!(r, BlobPush::Uploaded);
    assert_eq!(proxy.faults_served(), 7);
    assert!(read_all(&c, "test/retry", &d).unwrap() == data);

    // a one-shot stream is never silently retried
    proxy.add_faults([Fault::status(500).on("PUT")]);
    let data = pseudo_random(1000, 74);
    let e = c
        .push_blob(
            "test/retry",
            &sha256_digest(&data),
            1000,
            std::io::Cursor::new(data),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Status { code: 500, .. }), "{e}");
    assert_eq!(proxy.faults_served(), 8);

    // without retries the status surfaces as a typed error
    let c0 = Client::new(&proxy.host, ClientOptions { retries: 0, ..opts }).unwrap();
    proxy.add_faults([Fault::status(503)]);
    let e = c0.get_manifest("test/retry", &digest).unwrap_err();
    assert!(matches!(e, Error::Status { code: 503, .. }), "{e}");
    assert!(e.is_transient());
}

#[test]
fn token_auth_concurrent_pushes_share_one_client() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Token) else {
        return;
    };
    let c = reg.client();
    let digests: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let data = pseudo_random(200_000 + i * 1000, 100 + i as u64);
                    let repo = if i % 2 == 0 {
                        "test/par-a"
                    } else {
                        "test/par-b"
                    };
                    let (d, r) = c.push_blob_bytes(repo, data.clone()).unwrap();
                    assert_eq!(r, BlobPush::Uploaded);
                    assert!(read_all(c, repo, &d).unwrap() == data);
                    d
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(digests.len(), 8);
    // one token per scope set, not one per request
    let reqs = reg.token_requests();
    assert!(reqs.len() <= 6, "{reqs:?}");
}

#[test]
fn harness_push_oci_image() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    let m = obd_registry::testutil::push_oci_image(
        &c,
        "seed/img",
        Some("latest"),
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        &[("application/vnd.oci.image.layer.v1.tar", vec![0u8; 1024])],
    )
    .unwrap();
    assert_eq!(c.get_manifest("seed/img", "latest").unwrap(), m);
}

/// A registry that stalls (no answer, a body that stops, an upload it stops reading) is
/// given up on after the read timeout or the upload deadline and retried; one that keeps
/// stalling gives a network error naming the timeout, in bounded time. A slow but steady
/// transfer that takes longer than the read timeout is not cut.
#[test]
fn stalls_time_out_and_are_retried() {
    use obd_registry::testutil::{Fault, FlakyProxy};
    use std::time::{Duration, Instant};
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let direct = reg.client();
    let (bytes, _, layer) = push_image(&direct, "test/stall", "v1", 81);
    let big = pseudo_random(3 << 20, 82);
    let (big_d, _) = direct.push_blob_bytes("test/stall", big.clone()).unwrap();
    let proxy = FlakyProxy::start(&reg.host, Vec::new()).unwrap();
    // retries 2, backoff from 50 ms (reg.options())
    let opts = ClientOptions {
        read_timeout: Some(Duration::from_secs(1)),
        ..reg.options()
    };
    let c = Client::new(&proxy.host, opts.clone()).unwrap();
    let mut served = 0;
    let mut step = |name: &str, faults: Vec<Fault>, f: &mut dyn FnMut()| -> Duration {
        served += faults.len();
        proxy.add_faults(faults);
        let t = Instant::now();
        f();
        let took = t.elapsed();
        assert_eq!(proxy.faults_served(), served, "{name}: every fault was hit");
        eprintln!("{name}: {took:.1?}");
        took
    };

    // no response head: asked again after the read timeout
    let took = step(
        "manifest-stall",
        vec![Fault::stall().on("GET").path("/manifests/")],
        &mut || assert_eq!(c.get_manifest("test/stall", "v1").unwrap().bytes, bytes),
    );
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10));
    // a manifest body that stops half-way: asked again
    step(
        "manifest-body-stall",
        vec![Fault::stall_mid_body().on("GET").path("/manifests/")],
        &mut || assert_eq!(c.get_manifest("test/stall", "v1").unwrap().bytes, bytes),
    );
    // a blob body that stops half-way: resumed with a ranged GET
    step(
        "blob-body-stall",
        vec![Fault::stall_mid_body().on("GET").path("/blobs/")],
        &mut || assert!(read_all(&c, "test/stall", &big_d).unwrap() == big),
    );
    // a blob GET without answer, then a resumed one that stalls too
    step(
        "blob-stall-twice",
        vec![
            Fault::stall().on("GET").path("/blobs/"),
            Fault::stall_mid_body().on("GET").path("/blobs/"),
        ],
        &mut || assert!(read_all(&c, "test/stall", &big_d).unwrap() == big),
    );
    // slow but steady: 3 MiB at 1 MiB/s takes ~3 s, three times the read timeout
    let took = step(
        "slow-download",
        vec![Fault::throttle(1 << 20).on("GET").path("/blobs/")],
        &mut || assert!(read_all(&c, "test/stall", &big_d).unwrap() == big),
    );
    assert!(took >= Duration::from_secs(2), "throttled: {took:?}");

    // uploads the registry stops reading: restarted after the upload deadline
    // (2 x 1 s + 200 kB at 128 KiB/s = 3.5 s)
    let data = pseudo_random(200_000, 83);
    let took = step(
        "put-stall",
        vec![Fault::stall_request(1000).on("PUT").path("/blobs/")],
        &mut || {
            let (d, r) = c.push_blob_bytes("test/stall", data.clone()).unwrap();
            assert_eq!(r, BlobPush::Uploaded);
            assert!(read_all(&direct, "test/stall", &d).unwrap() == data);
        },
    );
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(15));
    let chunked = Client::new(
        &proxy.host,
        ClientOptions {
            chunk_size: Some(64_000),
            ..opts.clone()
        },
    )
    .unwrap();
    let data = pseudo_random(200_000, 84);
    step(
        "patch-stall",
        vec![Fault::stall_request(1000).on("PATCH")],
        &mut || {
            let (d, r) = chunked.push_blob_bytes("test/stall", data.clone()).unwrap();
            assert_eq!(r, BlobPush::Uploaded);
            assert!(read_all(&direct, "test/stall", &d).unwrap() == data);
        },
    );
    // a slow but steady upload longer than the read timeout is not cut:
    // 600 kB at 256 KiB/s ~ 2.3 s, within its deadline of 2 s + 4.6 s
    let data = pseudo_random(600_000, 85);
    let took = step(
        "slow-upload",
        vec![Fault::throttle(256 << 10).on("PUT").path("/blobs/")],
        &mut || {
            let (d, r) = c.push_blob_bytes("test/stall", data.clone()).unwrap();
            assert_eq!(r, BlobPush::Uploaded);
            assert!(read_all(&direct, "test/stall", &d).unwrap() == data);
        },
    );
    assert!(took >= Duration::from_secs(2), "throttled: {took:?}");

    // stalls that do not end: 3 attempts (retries 2), then a typed error naming the timeout
    step(
        "get-stall-forever",
        vec![Fault::stall().on("GET").path("/blobs/"); 3],
        &mut || {
            let t = Instant::now();
            let Err(e) = c.get_blob("test/stall", &layer) else {
                panic!("a stalled GET succeeded")
            };
            let took = t.elapsed();
            assert!(matches!(e, Error::Network { .. }), "{e}");
            assert!(e.to_string().contains("read timeout"), "{e}");
            assert!(e.is_transient() && e.exit_code() == 6, "{e}");
            assert!(took < Duration::from_secs(8), "{took:?}");
            eprintln!("get-stall-forever: {e}");
        },
    );
    step(
        "body-stall-forever",
        vec![Fault::stall_mid_body().on("GET").path("/blobs/"); 3],
        &mut || {
            let t = Instant::now();
            let e = read_all(&c, "test/stall", &big_d).unwrap_err();
            let took = t.elapsed();
            assert!(matches!(e, Error::Network { .. }), "{e}");
            assert!(e.to_string().contains("read timeout"), "{e}");
            assert!(took < Duration::from_secs(8), "{took:?}");
            eprintln!("body-stall-forever: {e}");
        },
    );
    let data = pseudo_random(200_000, 86);
    step(
        "put-stall-forever",
        vec![Fault::stall_request(1000).on("PUT").path("/blobs/"); 3],
        &mut || {
            let t = Instant::now();
            let e = c.push_blob_bytes("test/stall", data.clone()).unwrap_err();
            let took = t.elapsed();
            assert!(matches!(e, Error::Network { .. }), "{e}");
            assert!(e.to_string().contains("deadline"), "{e}");
            assert!(took < Duration::from_secs(20), "{took:?}");
            eprintln!("put-stall-forever: {e}");
        },
    );
    assert!(direct
        .head_blob("test/stall", &sha256_digest(&data))
        .unwrap()
        .is_none());
}

/// A chunked file upload resumes in its session after a failed chunk and a failed commit,
/// and starts over when the registry dropped the session (distribution does after a chunk
/// cut half-way).
#[test]
fn chunked_file_upload_resumes_or_restarts() {
    use obd_registry::testutil::{Fault, FlakyProxy};
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let proxy = FlakyProxy::start(&reg.host, Vec::new()).unwrap();
    let c = Client::new(
        &proxy.host,
        ClientOptions {
            retries: 5,
            chunk_size: Some(4 << 20),
            ..reg.options()
        },
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("blob");
    let pass = || Fault::delay(std::time::Duration::ZERO).on("PATCH");
    for (seed, faults) in [
        // A chunk lost before the registry saw it: resumed at the registry's offset.
        (
            91,
            vec![
                pass(),
                Fault::close().on("PATCH"),
                Fault::status(500).on("PUT"),
            ],
        ),
        // A chunk cut half-way: distribution drops the session; the upload starts over.
        (
            92,
            vec![pass(), pass(), Fault::cut_request(1 << 20).on("PATCH")],
        ),
        (
            93,
            vec![
                pass(),
                Fault::close().on("PATCH"),
                Fault::status(404).on("GET"),
            ],
        ),
    ] {
        let data = pseudo_random(18 << 20, seed);
        std::fs::write(&p, &data).unwrap();
        let d = sha256_digest(&data);
        let served = proxy.faults_served();
        let n = faults.len();
        proxy.add_faults(faults);
        let r = c
            .push_blob_file_as("test/resume", &p, &d, data.len() as u64)
            .unwrap();
        assert_eq!(r, BlobPush::Uploaded);
        assert_eq!(proxy.faults_served(), served + n, "seed {seed}");
        assert!(
            read_all(&c, "test/resume", &d).unwrap() == data,
            "seed {seed}"
        );
    }
}
