//! Paginated listings against a real `docker-registry` whose catalog pages are capped
//! (`catalog: maxentries`): the catalog and tags come back whole whatever page size is asked
//! for, a refused page size is retried smaller, and token registries get the catalog scope.

use obd_registry::testutil::{RegistryKind, TestRegistry};
use obd_registry::{sha256_digest, Client, Error, OCI_MANIFEST};

/// One tiny image per repository (config and manifest, no layers), tagged `tags`.
fn seed(c: &Client, repo: &str, tags: &[String]) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (cfg, _) = c.push_blob_bytes(repo, config.to_vec()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let d = sha256_digest(manifest.as_bytes());
    for t in tags {
        assert_eq!(
            c.put_manifest(repo, t, OCI_MANIFEST, manifest.as_bytes())
                .unwrap(),
            d
        );
    }
}

fn catalog_requests(reg: &TestRegistry) -> Vec<String> {
    reg.log()
        .lines()
        .filter_map(|l| {
            let i = l.find("GET /v2/_catalog")?;
            Some(l[i..].split_whitespace().nth(1)?.to_string())
        })
        .collect()
}

#[test]
fn catalog_and_tags_paginate_past_maxentries() {
    let Some(mut reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    reg.append_config("catalog:\n  maxentries: 5\n").unwrap();
    let c = reg.client();
    let mut want: Vec<String> = (0..12)
        .map(|i| format!("team{}/app{i:02}", i % 3))
        .collect();
    let tags: Vec<String> = (0..13).map(|i| format!("t{i:02}")).collect();
    for r in &want {
        seed(&c, r, &tags[..2]);
    }
    seed(&c, "team0/app00", &tags);
    want.sort();

    // Pages of 5 (the limit): 12 repositories in 3 pages, by Link.
    assert_eq!(c.catalog(5).unwrap(), want);
    let seen = catalog_requests(&reg);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|u| u.contains("n=5")), "{seen:?}");

    // 100 is refused (PAGINATION_NUMBER_INVALID): halved to 50, 25, 12, 6, 3 until the
    // registry takes it, then followed to the end.
    let before = catalog_requests(&reg).len();
    assert_eq!(c.catalog(100).unwrap(), want);
    let seen = catalog_requests(&reg)[before..].to_vec();
    let sizes: Vec<&str> = seen
        .iter()
        .filter_map(|u| u.split("n=").nth(1))
        .map(|n| n.split('&').next().unwrap_or(n))
        .collect();
    assert_eq!(&sizes[..5], ["100", "50", "25", "12", "6"], "{seen:?}");
    assert!(sizes[5..].iter().all(|s| *s == "3"), "{seen:?}");
    assert_eq!(sizes.len(), 5 + 4, "{seen:?}");

    // Page size 1 still works; 0 is asked for as 1.
    assert_eq!(c.catalog(1).unwrap(), want);
    assert_eq!(c.catalog(0).unwrap(), want);

    // Tags: all of them, whatever the page size (registries that do not paginate tags
    // answer the whole list).
    for n in [1, 5, 100] {
        let mut got = c.list_tags_paged("team0/app00", n).unwrap();
        got.sort();
        assert_eq!(got, tags, "page size {n}");
    }
    let e = c.list_tags_paged("no/such", 5).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

#[test]
fn catalog_with_bearer_tokens_uses_the_catalog_scope() {
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Token) else {
        return;
    };
    let c = reg.client();
    seed(&c, "tok/a", &["v1".into()]);
    seed(&c, "tok/b", &["v1".into()]);
    assert_eq!(c.catalog(100).unwrap(), ["tok/a", "tok/b"]);
    let reqs = reg.token_requests();
    assert!(
        reqs.iter().any(|r| r.contains("registry:catalog:*")),
        "{reqs:?}"
    );
    // Anonymous tokens carry no catalog access: an authentication error that says how to
    // give credentials.
    let anon = Client::new(&reg.host, reg.anonymous_options()).unwrap();
    let e = anon.catalog(100).unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(e.to_string().contains("no credentials"), "{e}");
}
