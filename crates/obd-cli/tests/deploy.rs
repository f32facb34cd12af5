//! `deploy/` as users run it: every YAML document parses, every container's arguments are
//! flags the real `obdconv <subcommand> --help` lists, the files and ports they name are
//! the ones mounted and exposed, probes are the unauthenticated `/healthz` and `/readyz`,
//! KEDA counts the queue table, the ConfigMap's `obdconv.toml` is a valid configuration,
//! the registry snippet posts to `/v1/events/distribution` with a Bearer header, and the
//! Dockerfile builds and copies the binaries `obd-cli` has. No cluster or docker needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use obd_service::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `.yaml`/`.yml` under `deploy/`, sorted, relative to the repository root.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = format!("{rel}/{name}");
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &r, out);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(r);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy"), "deploy", &mut out);
    out.sort();
    out
}

/// The documents of one file (a multi-document file gives several).
fn docs(rel: &str) -> Vec<Yaml> {
    let d = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(!d.is_empty(), "{rel}: no YAML document");
    d
}

/// Every Kubernetes object of `deploy/k8s/`, with the file it is in.
fn objects() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    for f in yaml_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/k8s/"))
    {
        for d in docs(&f) {
            out.push((f.clone(), d));
        }
    }
    out
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
}

fn seq(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn name(o: &Yaml) -> &str {
    s(&o["metadata"]["name"], "metadata.name")
}

fn of_kind<'a>(objs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    objs.iter()
        .filter(|(_, o)| o["kind"].as_str() == Some(kind))
        .map(|(_, o)| o)
        .collect()
}

fn one<'a>(objs: &'a [(String, Yaml)], kind: &str, n: &str) -> &'a Yaml {
    let v: Vec<_> = of_kind(objs, kind)
        .into_iter()
        .filter(|o| name(o) == n)
        .collect();
    assert_eq!(v.len(), 1, "one {kind} {n:?} in deploy/k8s");
    v[0]
}

/// `(object, pod spec)` of every Deployment and Job.
fn pod_specs(objs: &[(String, Yaml)]) -> Vec<(&Yaml, &Yaml)> {
    objs.iter()
        .filter(|(_, o)| matches!(o["kind"].as_str(), Some("Deployment" | "Job")))
        .map(|(_, o)| (o, &o["spec"]["template"]["spec"]))
        .collect()
}

fn args(c: &Yaml) -> Vec<String> {
    seq(&c["args"])
        .iter()
        .map(|a| match a {
            Yaml::String(v) => v.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("container arg {other:?} is not a string"),
        })
        .collect()
}

/// The value after `flag` (`--flag VALUE` or `--flag=VALUE`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

fn obdconv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_obdconv"))
}

/// `obdconv SUB --help`, or `None` when this build has no such subcommand.
fn help(sub: &str) -> Option<String> {
    let o = obdconv().args([sub, "--help"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("unrecognized subcommand") {
        return None;
    }
    assert!(o.status.success(), "obdconv {sub} --help: {err}");
    Some(String::from_utf8(o.stdout).unwrap())
}

/// Whether `text` names `flag` as a whole word (`--db-str` is not `--db-str-x`).
fn names_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The flags `obdconv backfill` is being given (its own branch), used only while this build
/// lacks the subcommand; once it is there its real `--help` is checked instead.
const BACKFILL_FLAGS: &[&str] = &[
    "--registry",
    "--file",
    "--include",
    "--exclude",
    "--page-size",
    "--dry-run",
    "--plain-registry",
    "--config",
    "--db-type",
    "--db-str",
];

#[test]
fn every_yaml_document_parses_and_every_object_is_named() {
    let files = yaml_files();
    for want in [
        "deploy/k8s/serve.yaml",
        "deploy/k8s/worker.yaml",
        "deploy/k8s/backfill-job.yaml",
        "deploy/registry-notifications.yml",
    ] {
        assert!(files.iter().any(|f| f == want), "{want} missing: {files:?}");
    }
    for f in &files {
        for (i, d) in docs(f).iter().enumerate() {
            assert!(d.as_hash().is_some(), "{f} document {i}: not a mapping");
        }
    }
    let objs = objects();
    for (f, o) in &objs {
        for k in ["apiVersion", "kind"] {
            s(&o[k], &format!("{f}: {k}"));
        }
        assert!(!name(o).is_empty(), "{f}: empty metadata.name");
    }
    let kinds: Vec<_> = objs.iter().map(|(_, o)| s(&o["kind"], "kind")).collect();
    for k in [
        "ConfigMap",
        "Deployment",
        "Service",
        "ScaledObject",
        "TriggerAuthentication",
        "Job",
    ] {
        assert!(kinds.contains(&k), "no {k} in deploy/k8s: {kinds:?}");
    }
}

#[test]
fn container_args_are_flags_obdconv_accepts() {
    let objs = objects();
    let mut checked = Vec::new();
    for (o, pod) in pod_specs(&objs) {
        let containers = seq(&pod["containers"]);
        assert!(!containers.is_empty(), "{}: no containers", name(o));
        for c in containers {
            let a = args(c);
            let what = format!("{} container {}", name(o), s(&c["name"], "container name"));
            assert!(
                c["command"].is_badvalue(),
                "{what}: the image's ENTRYPOINT is obdconv"
            );
            let sub = a.first().unwrap_or_else(|| panic!("{what}: no args"));
            let text = match help(sub) {
                Some(t) => t,
                None if sub == "backfill" => {
                    eprintln!("note: this obdconv has no backfill yet; checking {what} against the flags it is getting");
                    BACKFILL_FLAGS.join("\n")
                }
                None => panic!("{what}: obdconv has no subcommand {sub:?}"),
            };
            for f in a.iter().filter(|x| x.starts_with("--")) {
                let f = f.split('=').next().unwrap();
                assert!(
                    names_flag(&text, f),
                    "{what}: obdconv {sub} has no {f}:\n{text}"
                );
            }
            // $(VAR) in args is expanded by the kubelet only from the container's env.
            let env: Vec<_> = seq(&c["env"])
                .iter()
                .map(|e| s(&e["name"], "env name"))
                .collect();
            for x in &a {
                if let Some(v) = x.strip_prefix("$(").and_then(|v| v.strip_suffix(')')) {
                    assert!(env.contains(&v), "{what}: {x} but no env {v}");
                }
            }
            checked.push(sub.clone());
        }
    }
    checked.sort();
    assert_eq!(checked, ["backfill", "serve", "worker"]);
}

/// The volume mounted at `path`'s directory, and the name of the key it holds there.
fn mounted<'a>(pod: &'a Yaml, c: &Yaml, path: &str) -> (&'a Yaml, String) {
    let m = seq(&c["volumeMounts"])
        .iter()
        .filter(|m| path.starts_with(&format!("{}/", s(&m["mountPath"], "mountPath"))))
        .max_by_key(|m| s(&m["mountPath"], "mountPath").len())
        .unwrap_or_else(|| panic!("{path} is not under any volumeMount"));
    let mp = s(&m["mountPath"], "mountPath");
    let vname = s(&m["name"], "volumeMount name");
    let v = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(vname))
        .unwrap_or_else(|| panic!("no volume {vname}"));
    (v, path[mp.len() + 1..].to_string())
}

/// Where a volume gets the file `rel` from: `(kind, object name, key)`.
fn source_of(v: &Yaml, rel: &str) -> Option<(&'static str, String, String)> {
    let mut sources: Vec<(&'static str, &Yaml)> = Vec::new();
    for src in seq(&v["projected"]["sources"]) {
        for k in ["configMap", "secret"] {
            if !src[k].is_badvalue() {
                sources.push((k, &src[k]));
            }
        }
    }
    for k in ["configMap", "secret"] {
        if !v[k].is_badvalue() {
            sources.push((k, &v[k]));
        }
    }
    sources.into_iter().find_map(|(k, src)| {
        let n = src["name"]
            .as_str()
            .or_else(|| src["secretName"].as_str())?
            .to_string();
        seq(&src["items"])
            .iter()
            .find(|i| i["path"].as_str() == Some(rel))
            .map(|i| (k, n, s(&i["key"], "item key").to_string()))
    })
}

fn configmap_toml(objs: &[(String, Yaml)], cm: &str, key: &str) -> String {
    s(
        &one(objs, "ConfigMap", cm)["data"][key],
        &format!("ConfigMap {cm} {key}"),
    )
    .to_string()
}

#[test]
fn config_and_token_files_are_mounted_and_valid() {
    let objs = objects();
    for (o, pod) in pod_specs(&objs) {
        for c in seq(&pod["containers"]) {
            let a = args(c);
            let what = name(o);
            let cfg = flag_value(&a, "--config").unwrap_or_else(|| panic!("{what}: no --config"));
            let (v, rel) = mounted(pod, c, &cfg);
            let (kind, cm, key) =
                source_of(v, &rel).unwrap_or_else(|| panic!("{what}: nothing mounted at {cfg}"));
            assert_eq!(kind, "configMap", "{what}: {cfg}");
            let text = configmap_toml(&objs, &cm, &key);
            // deny_unknown_fields: only keys obdconv knows; the rules are checked too.
            let conf = Config::parse(&text, &format!("ConfigMap {cm} {key}"))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                conf.db_type, "mysql",
                "{what}: the shared queue is MySQL/MariaDB"
            );
            let db = flag_value(&a, "--db-str");
            assert!(
                conf.db_str.is_some() != db.is_some(),
                "{what}: the DSN comes from exactly one of db_str and --db-str"
            );
            if let Some(db) = db {
                let var = db.trim_start_matches("$(").trim_end_matches(')');
                let e = seq(&c["env"])
                    .iter()
                    .find(|e| e["name"].as_str() == Some(var))
                    .unwrap_or_else(|| panic!("{what}: --db-str {db}: no env {var}"));
                assert!(
                    !e["valueFrom"]["secretKeyRef"].is_badvalue(),
                    "{what}: the DSN holds a password: from a Secret"
                );
            }
            // The work directory is a writable volume, not the read-only root filesystem.
            let wd = conf.work_dir.display().to_string();
            if s(&o["kind"], "kind") == "Deployment" {
                let (v, _) = mounted(pod, c, &wd);
                assert!(
                    !v["emptyDir"].is_badvalue(),
                    "{what}: work_dir {wd} on a volume"
                );
            }
            if a[0] == "serve" {
                let tf = flag_value(&a, "--token-file")
                    .unwrap_or_else(|| panic!("{what}: serve needs --token-file"));
                let (v, rel) = mounted(pod, c, &tf);
                let (kind, _, _) =
                    source_of(v, &rel).unwrap_or_else(|| panic!("{what}: nothing mounted at {tf}"));
                assert_eq!(kind, "secret", "{what}: the token is a Secret");
            }
        }
    }
}

/// A probe's or Service's port (a number or a container port's name) as a number.
fn resolve_port(c: &Yaml, p: &Yaml) -> i64 {
    match p {
        Yaml::Integer(n) => *n,
        Yaml::String(n) => seq(&c["ports"])
            .iter()
            .find(|x| x["name"].as_str() == Some(n))
            .and_then(|x| x["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {n}")),
        other => panic!("port {other:?}"),
    }
}

#[test]
fn serve_listens_probes_and_service_agree() {
    let objs = objects();
    let d = one(&objs, "Deployment", "obdconv-serve");
    let pod = &d["spec"]["template"]["spec"];
    let c = &seq(&pod["containers"])[0];
    let a = args(c);
    let listen = flag_value(&a, "--listen").expect("serve --listen");
    let (host, port) = listen.rsplit_once(':').expect("--listen HOST:PORT");
    assert_eq!(host, "0.0.0.0", "reachable from other pods");
    let port: i64 = port.parse().unwrap();
    let ports: Vec<_> = seq(&c["ports"])
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [port], "containerPort is --listen's port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"].as_str(), Some(path), "{probe}");
        assert_eq!(resolve_port(c, &g["port"]), port, "{probe} port");
        // Probes carry no token: only these paths answer without one.
        assert!(g["httpHeaders"].is_badvalue(), "{probe}: no headers");
    }
    // Long enough for grace_secs.
    let cm = configmap_toml(&objs, "obdconv-config", "obdconv.toml");
    let conf = Config::parse(&cm, "configmap").unwrap();
    let tg = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(
        tg > conf.grace_secs as i64,
        "terminationGracePeriodSeconds > grace_secs"
    );

    let svc = one(&objs, "Service", "obdconv");
    let labels = d["spec"]["template"]["metadata"]["labels"]
        .as_hash()
        .unwrap();
    for (k, v) in svc["spec"]["selector"].as_hash().expect("Service selector") {
        assert_eq!(
            labels.get(k),
            Some(v),
            "Service selector {k:?} selects serve"
        );
    }
    let sp = &seq(&svc["spec"]["ports"])[0];
    let target = if sp["targetPort"].is_badvalue() {
        &sp["port"]
    } else {
        &sp["targetPort"]
    };
    assert_eq!(resolve_port(c, target), port, "Service targetPort");
    assert_eq!(sp["port"].as_i64(), Some(port), "Service port");

    // The registry snippet reaches this Service.
    let n = &docs("deploy/registry-notifications.yml")[0];
    let url = s(&n["notifications"]["endpoints"][0]["url"], "url");
    let rest = url
        .strip_prefix("http://")
        .expect("http:// inside the cluster");
    let (authority, _) = rest.split_once('/').unwrap();
    let (h, p) = authority.rsplit_once(':').unwrap();
    assert_eq!(
        h.split('.').next(),
        Some(name(svc)),
        "url host is the Service"
    );
    assert_eq!(
        p.parse::<i64>().unwrap(),
        port,
        "url port is the Service port"
    );
}

#[test]
fn keda_scales_the_worker_on_queued_jobs() {
    let objs = objects();
    let so = of_kind(&objs, "ScaledObject");
    assert_eq!(so.len(), 1);
    let so = so[0];
    assert_eq!(
        s(&so["apiVersion"], "apiVersion"),
        "keda.sh/v1alpha1",
        "KEDA 2.x"
    );
    let target = s(&so["spec"]["scaleTargetRef"]["name"], "scaleTargetRef");
    let d = one(&objs, "Deployment", target);
    let c = &seq(&d["spec"]["template"]["spec"]["containers"])[0];
    assert_eq!(args(c)[0], "worker", "KEDA scales obdconv worker");
    let triggers = seq(&so["spec"]["triggers"]);
    assert_eq!(triggers.len(), 1);
    let t = &triggers[0];
    assert_eq!(t["type"].as_str(), Some("mysql"));
    let q = s(&t["metadata"]["query"], "query");
    assert!(q.starts_with("SELECT COUNT(*) FROM obdconv_jobs "), "{q}");
    assert!(q.contains("state='queued'"), "{q}");
    for k in ["queryValue", "activationQueryValue"] {
        let v = s(&t["metadata"][k], k);
        assert!(
            v.parse::<f64>().is_ok(),
            "{k} {v:?}: KEDA wants a number as a string"
        );
    }
    // The scaler's DSN is the one the worker uses.
    let ta = one(
        &objs,
        "TriggerAuthentication",
        s(&t["authenticationRef"]["name"], "authenticationRef"),
    );
    let r = seq(&ta["spec"]["secretTargetRef"])
        .iter()
        .find(|r| r["parameter"].as_str() == Some("connectionString"))
        .expect("connectionString from a Secret");
    let db = flag_value(&args(c), "--db-str").unwrap();
    let var = db.trim_start_matches("$(").trim_end_matches(')');
    let e = seq(&c["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
        .unwrap();
    let k = &e["valueFrom"]["secretKeyRef"];
    assert_eq!(r["name"], k["name"], "same Secret");
    assert_eq!(r["key"], k["key"], "same key");
}

#[test]
fn registry_notifications_post_events_with_the_token() {
    let d = docs("deploy/registry-notifications.yml");
    assert_eq!(d.len(), 1);
    let top = d[0].as_hash().unwrap();
    assert_eq!(top.len(), 1, "only the notifications: section");
    let eps = seq(&d[0]["notifications"]["endpoints"]);
    assert_eq!(eps.len(), 1);
    let ep = &eps[0];
    // distribution's configuration.Endpoint fields.
    const KNOWN: &[&str] = &[
        "name",
        "disabled",
        "url",
        "headers",
        "timeout",
        "threshold",
        "maxretries",
        "backoff",
        "ignoredmediatypes",
        "ignore",
        "queuepurgetimeout",
        "queuesizelimit",
    ];
    for k in ep.as_hash().unwrap().keys() {
        let k = s(k, "endpoint key");
        assert!(KNOWN.contains(&k), "unknown endpoint key {k}");
    }
    if let Some(h) = ep["ignore"].as_hash() {
        for k in h.keys() {
            let k = s(k, "ignore key");
            assert!(["mediatypes", "actions"].contains(&k), "ignore.{k}");
        }
    }
    // Manifest pushes must get through.
    for mt in seq(&ep["ignore"]["mediatypes"]) {
        assert!(!s(mt, "mediatype").contains("manifest"), "{mt:?}");
    }
    for a in seq(&ep["ignore"]["actions"]) {
        assert_ne!(a.as_str(), Some("push"));
    }
    let url = s(&ep["url"], "url");
    let path = url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('/'))
        .map(|(_, p)| format!("/{p}"))
        .unwrap();
    assert_eq!(path, "/v1/events/distribution");
    let auth = seq(&ep["headers"]["Authorization"]);
    assert_eq!(
        auth.len(),
        1,
        "headers: {{ Authorization: [Bearer TOKEN] }}"
    );
    let v = s(&auth[0], "Authorization");
    assert!(v.starts_with("Bearer ") && v.len() > 7, "{v}");
    // serve answers within 5 s (503 when the database does not); wait longer than that.
    let t = s(&ep["timeout"], "timeout");
    let secs: f64 = t.strip_suffix('s').and_then(|n| n.parse().ok()).unwrap();
    assert!(secs > 5.0, "timeout {t}");
}

/// `[[bin]]` names of crates/obd-cli/Cargo.toml.
fn bins() -> Vec<String> {
    let text = read("crates/obd-cli/Cargo.toml");
    let mut out = Vec::new();
    let mut in_bin = false;
    for l in text.lines().map(str::trim) {
        if l.starts_with('[') {
            in_bin = l == "[[bin]]";
        } else if in_bin {
            if let Some(n) = l.strip_prefix("name = ") {
                out.push(n.trim_matches('"').to_string());
            }
        }
    }
    out
}

#[test]
fn dockerfile_builds_and_ships_the_binaries() {
    let df = read("deploy/Dockerfile");
    // Instructions, continuation lines joined, comments dropped.
    let mut ins: Vec<String> = Vec::new();
    let mut cur = String::new();
    for l in df.lines() {
        let t = l.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(x) => {
                cur.push_str(x);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                ins.push(std::mem::take(&mut cur));
            }
        }
    }
    let get = |k: &str| -> Vec<&String> {
        ins.iter()
            .filter(|i| i.split_whitespace().next() == Some(k))
            .collect()
    };
    let from = get("FROM");
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(
        from[0].starts_with("FROM rust:1-bookworm AS "),
        "{}",
        from[0]
    );
    assert_eq!(from[1], "FROM debian:bookworm-slim");
    let stage = from[0].split_whitespace().last().unwrap();

    let build = get("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build");
    let words: Vec<&str> = build.split_whitespace().collect();
    for w in ["--release", "--locked"] {
        assert!(words.contains(&w), "cargo build {w}");
    }
    let have = bins();
    let mut built: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    built.sort();
    let mut want = vec!["convertor", "obd", "obdconv"];
    want.sort();
    assert_eq!(built, want);
    for b in &built {
        assert!(
            have.iter().any(|h| h == b),
            "{b} is not a [[bin]] of obd-cli: {have:?}"
        );
        assert!(
            build.contains(&format!("target/release/{b}")),
            "{b} taken from target/release"
        );
    }
    let copy = get("COPY")
        .into_iter()
        .find(|c| c.contains(&format!("--from={stage}")))
        .expect("COPY --from the build stage");
    for b in &built {
        assert!(names_flag(copy, &format!("/{b}")), "{b} copied: {copy}");
    }
    assert!(
        get("RUN").iter().any(|r| r.contains("ca-certificates")),
        "ca-certificates in the runtime image"
    );
    let user = get("USER");
    assert_eq!(user.len(), 1);
    let uid = user[0].split_whitespace().nth(1).unwrap();
    assert!(!["root", "0", "0:0"].contains(&uid), "non-root: {uid}");
    assert_eq!(get("ENTRYPOINT"), [&"ENTRYPOINT [\"obdconv\"]".to_string()]);
    assert!(
        get("VOLUME")
            .iter()
            .any(|v| v.contains("\"/var/lib/obdconv\"")),
        "a /var/lib/obdconv volume"
    );
    // The manifests run as the image's user.
    let uid_num: i64 = uid.split(':').next().unwrap().parse().unwrap();
    for (o, pod) in pod_specs(&objects()) {
        assert_eq!(
            pod["securityContext"]["runAsUser"].as_i64(),
            Some(uid_num),
            "{} runs as the image's user",
            name(o)
        );
    }
    // The build context filter keeps what the build needs.
    let ignore = read("deploy/Dockerfile.dockerignore");
    let pats: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        pats.contains(&"target/"),
        "target/ stays out of the context"
    );
    for needed in ["Cargo.toml", "Cargo.lock", "crates", "bench", "testdata"] {
        assert!(root().join(needed).exists(), "{needed}");
        assert!(
            !pats
                .iter()
                .any(|p| p.trim_end_matches('/') == needed || *p == "*"),
            "{needed} must stay in the build context"
        );
    }
}

#[test]
fn obdconv_help_lists_the_flags_the_manifests_use() {
    // The help text check above is only as good as --help: a flag it does not list is not
    // accepted either.
    let o = obdconv()
        .args(["worker", "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = help("serve").unwrap();
    for f in [
        "--listen",
        "--token-file",
        "--config",
        "--db-str",
        "--workers",
    ] {
        assert!(names_flag(&t, f), "{f}");
    }
    assert!(!names_flag(&t, "--db"), "whole flags only");
}
