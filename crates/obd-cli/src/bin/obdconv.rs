//! `obdconv`: the conversion service. `serve` converts images when registries report their
//! push, `worker` runs conversions only, `jobs` shows and retries them, `backfill` enqueues
//! what was pushed before the service listened.
// The flags' doc comments are their `--help` text (`HOST[:PORT]` is not a link).
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use obd_convert::ConvertError;
use obd_service::config::Config;
use obd_service::queue::{self, Job, JobState};

const EXAMPLES: &str = "Examples:
  obdconv serve --token-file /etc/obdconv/token --config /etc/obdconv/obdconv.toml
  obdconv worker --db-type mysql --db-str 'obd:secret@tcp(db:3306)/obdconv'
  obdconv jobs list --state dead
  obdconv jobs retry 42
  obdconv backfill --registry reg.example.com --include 'reg.example.com/apps/*' --dry-run

Point a registry's notifications at serve (distribution config.yml):
  notifications:
    endpoints:
      - name: obdconv
        url: http://127.0.0.1:8080/v1/events/distribution
        headers: { Authorization: [Bearer <token>] }";

#[derive(Parser, Debug)]
#[command(
    name = "obdconv",
    version = obd_cli::docs::VERSION,
    about = "The overlaybd conversion service: converts images when they are pushed, and never loses one.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(flatten)]
    log: obd_cli::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// HTTP ingest of registry events, workers, the lease reaper and /metrics
    Serve(ServeArgs),
    /// workers and the lease reaper only (more conversion capacity on the same database)
    Worker(WorkerArgs),
    /// enqueue what was pushed before the service listened: a registry's whole catalog, or
    /// a file of references
    Backfill(BackfillArgs),
    /// show and retry jobs
    Jobs {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// print the completion script for a shell
    Completion { shell: clap_complete::Shell },
    /// print the man page
    Man,
}

#[derive(Args, Debug, Clone)]
struct DbArgs {
    /// TOML configuration file (flags override it)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// database of the job queue and dedup: sqlite or mysql (default sqlite)
    #[arg(long = "db-type", global = true)]
    db_type: Option<String>,
    /// SQLite file or MySQL DSN (user:pass@tcp(host:port)/db); default ~/.cache/obdconv/dedup.sqlite
    #[arg(long = "db-str", global = true)]
    db_str: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct Common {
    #[command(flatten)]
    db: DbArgs,
    /// conversions running at once in this process
    #[arg(long)]
    workers: Option<usize>,
    /// directory for the conversions' temporary data (each process uses WORK_DIR/PID)
    #[arg(long = "work-dir")]
    work_dir: Option<PathBuf>,
    /// seconds a claimed job's lease lasts without a heartbeat
    #[arg(long = "lease-secs")]
    lease_secs: Option<u64>,
    /// seconds between heartbeats (less than the lease)
    #[arg(long = "heartbeat-secs")]
    heartbeat_secs: Option<u64>,
    /// seconds running jobs get to finish after SIGTERM before they are given back
    #[arg(long = "grace-secs")]
    grace_secs: Option<u64>,
    /// seconds one run of a job may take
    #[arg(long = "deadline-secs")]
    deadline_secs: Option<u64>,
    /// runs of a job before it is dead
    #[arg(long = "max-attempts")]
    max_attempts: Option<u32>,
    /// first retry delay in milliseconds (doubled per attempt, with jitter)
    #[arg(long = "backoff-ms")]
    backoff_ms: Option<u64>,
    /// registries reached over plain HTTP (HOST or HOST:PORT; repeatable), as convertor's --plain
    #[arg(long = "plain-registry", value_name = "HOST")]
    plain_registry: Vec<String>,
    /// registries whose certificate is not verified (repeatable), as convertor's --insecure
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// an extra CA file for one registry (repeatable), as convertor's --root-ca
    #[arg(long = "registry-root-ca", value_name = "HOST=FILE")]
    registry_root_ca: Vec<String>,
    /// a certs.d-style directory (*.crt CAs, *.cert + *.key client pairs) for one registry
    /// (repeatable), as convertor's --cert-dir
    #[arg(long = "registry-cert-dir", value_name = "HOST=DIR")]
    registry_cert_dir: Vec<String>,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    #[command(flatten)]
    common: Common,
    /// serve /metrics and /healthz on this address (e.g. 0.0.0.0:9090)
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// exit 0 once no job is queued, waiting to retry or running (batch runs)
    #[arg(long = "exit-when-empty")]
    exit_when_empty: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// address to listen on
    #[arg(long)]
    listen: Option<String>,
    /// file holding the bearer token every request but /healthz, /readyz and /metrics must carry
    #[arg(long = "token-file")]
    token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct BackfillArgs {
    #[command(flatten)]
    db: DbArgs,
    /// a registry whose every repository and tag is backfilled (HOST[:PORT]; repeatable;
    /// its catalog must be readable: registry:catalog:* with token auth)
    #[arg(long = "registry", value_name = "HOST")]
    registry: Vec<String>,
    /// a file of references, one HOST/REPO:TAG or HOST/REPO@DIGEST a line, # comments
    /// (repeatable)
    #[arg(long, value_name = "FILE")]
    file: Vec<PathBuf>,
    /// only references (HOST/REPO:TAG) matching this glob (* any run, ? one character;
    /// repeatable: any of them)
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// no reference (HOST/REPO:TAG) matching this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// entries asked for per catalog and tags page (fewer when the registry refuses it)
    #[arg(long = "page-size", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    page_size: u64,
    /// print the jobs that would be enqueued (SOURCE -> OUTPUT), enqueue nothing
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// registries reached over plain HTTP (HOST[:PORT]; repeatable), as convertor's --plain
    #[arg(long = "plain-registry", value_name = "HOST")]
    plain_registry: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// list jobs, newest first
    List {
        /// only jobs in this state (queued, running, succeeded, failed, dead, skipped)
        #[arg(long)]
        state: Option<String>,
        /// at most this many
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// one JSON object per job
        #[arg(long)]
        json: bool,
    },
    /// show one job as JSON
    Show { id: i64 },
    /// run a finished (dead, failed, succeeded, skipped) job again
    Retry { id: i64 },
}

fn usage(m: String) -> anyhow::Error {
    anyhow::Error::new(ConvertError::Unsupported(m))
}

fn unavailable(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(ConvertError::io(
        "job database",
        std::io::Error::other(e.to_string()),
    ))
}

fn load(db: &DbArgs) -> Result<Config> {
    let mut c = match &db.config {
        Some(p) => Config::load(p).map_err(|e| usage(e.to_string()))?,
        None => Config::default(),
    };
    if let Some(t) = &db.db_type {
        c.db_type = t.clone();
    }
    if let Some(s) = &db.db_str {
        c.db_str = Some(s.clone());
    }
    if !matches!(c.db_type.as_str(), "sqlite" | "mysql") {
        return Err(usage(format!(
            "--db-type {:?}: the job queue needs sqlite or mysql",
            c.db_type
        )));
    }
    Ok(c)
}

fn apply(c: &mut Config, a: &Common) -> Result<()> {
    macro_rules! set {
        ($($f:ident),*) => {$(if let Some(v) = a.$f.clone() { c.$f = v; })*};
    }
    set!(
        workers,
        work_dir,
        lease_secs,
        heartbeat_secs,
        grace_secs,
        deadline_secs,
        max_attempts,
        backoff_ms
    );
    for (flag, values, dir) in [
        ("--registry-root-ca", &a.registry_root_ca, false),
        ("--registry-cert-dir", &a.registry_cert_dir, true),
    ] {
        for v in values {
            let (host, path) = v
                .split_once('=')
                .ok_or_else(|| usage(format!("{flag} {v:?}: give HOST=PATH")))?;
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(usage(format!(
                    "{flag} {v}: {} does not exist",
                    path.display()
                )));
            }
            let r = registry_entry(c, host);
            if dir {
                r.cert_dir.push(path);
            } else {
                r.root_ca.push(path);
            }
        }
    }
    for h in &a.insecure_registry {
        registry_entry(c, h).insecure = true;
    }
    plain(c, &a.plain_registry)
}

/// The `[[registry]]` entry of `host`, made when missing.
fn registry_entry<'c>(
    c: &'c mut Config,
    host: &str,
) -> &'c mut obd_service::config::RegistryConfig {
    if let Some(i) = c.registries.iter().position(|r| r.host == host) {
        return &mut c.registries[i];
    }
    c.registries.push(obd_service::config::RegistryConfig {
        host: host.to_string(),
        ..Default::default()
    });
    c.registries.last_mut().expect("just pushed")
}

/// `--plain-registry`: these hosts over plain HTTP; then the configuration is checked.
fn plain(c: &mut Config, hosts: &[String]) -> Result<()> {
    for h in hosts {
        match c.registries.iter_mut().find(|r| r.host == *h) {
            Some(r) => r.plain = true,
            None => c.registries.push(obd_service::config::RegistryConfig {
                host: h.clone(),
                plain: true,
                ..Default::default()
            }),
        }
    }
    c.finish().map_err(|e| usage(e.to_string()))
}

fn backfill(a: BackfillArgs) -> Result<()> {
    use obd_service::backfill::{self, BackfillError, Options, Source};
    let mut c = load(&a.db)?;
    plain(&mut c, &a.plain_registry)?;
    let mut sources: Vec<Source> = a.registry.iter().cloned().map(Source::Registry).collect();
    sources.extend(a.file.iter().cloned().map(Source::File));
    let opts = Options {
        sources,
        include: a.include,
        exclude: a.exclude,
        page_size: usize::try_from(a.page_size).unwrap_or(usize::MAX),
        dry_run: a.dry_run,
    };
    let q = if a.dry_run {
        None
    } else {
        Some(queue::open(&c.db_type, &c.db_str()).map_err(unavailable)?)
    };
    let summary = backfill::run(&c, q.as_deref(), &opts).map_err(|e| match e {
        BackfillError::Usage(m) => usage(m),
        BackfillError::Queue { .. } => unavailable(e),
        other => anyhow::Error::new(other),
    })?;
    let mut out = String::new();
    if a.dry_run {
        for p in &summary.planned {
            out.push_str(&format!("{} -> {}\n", p.source, p.output));
        }
    }
    for e in &summary.errors {
        eprintln!("error: {}: {}", e.what, e.error);
    }
    out.push_str(&summary.line(a.dry_run));
    out.push('\n');
    obd_cli::print_out(&out)?;
    let failed = summary.errors.len();
    match summary.errors.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(anyhow::Error::new(first.error).context(format!(
            "{failed} reference(s) could not be backfilled (listed above; the first: {}); fix \
             them and run again: jobs already enqueued are not enqueued twice",
            first.what
        ))),
    }
}

/// SIGINT/SIGTERM set `stopping`; a second one exits at once.
fn on_signals() -> Result<Arc<AtomicBool>> {
    let stopping = Arc::new(AtomicBool::new(false));
    let s = stopping.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("second signal: exiting now");
            std::process::exit(obd_cli::exit::INTERRUPTED);
        }
        eprintln!("stopping: finishing running jobs (a second signal exits at once)");
    })
    .context("installing the signal handler")?;
    Ok(stopping)
}

/// `2026-12-02T13:31:56Z` for milliseconds since the epoch.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn line(j: &Job) -> String {
    let when = j.finished_ms.or(j.started_ms).unwrap_or(j.created_ms);
    format!(
        "{:>6}  {:<9}  {}/{}  {}  ->  {}:{}  {}{}",
        j.id,
        j.state,
        j.attempts,
        j.max_attempts,
        j.source(),
        j.target,
        j.output_tag,
        utc(when),
        match (&j.output_digest, &j.last_error) {
            (Some(d), _) if j.state == JobState::Succeeded => format!("  {d}"),
            (_, Some(e)) => format!("  error: {e}"),
            _ => String::new(),
        }
    )
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completion { shell } => {
            use clap::CommandFactory;
            obd_cli::docs::print_completion(Cli::command(), shell)
        }
        Command::Man => {
            use clap::CommandFactory;
            obd_cli::docs::print_man(Cli::command())
        }
        Command::Serve(a) => {
            let mut c = load(&a.common.db)?;
            if let Some(l) = &a.listen {
                c.listen = l.clone();
            }
            if let Some(t) = &a.token_file {
                c.token_file = Some(t.clone());
            }
            apply(&mut c, &a.common)?;
            let Some(tf) = c.token_file.clone() else {
                return Err(usage(
                    "serve needs --token-file (or token_file in --config): every request but \
                     /healthz, /readyz and /metrics must carry Authorization: Bearer <token>"
                        .into(),
                ));
            };
            let token = std::fs::read_to_string(&tf)
                .map_err(|e| usage(format!("--token-file {}: {e}", tf.display())))?
                .trim()
                .to_string();
            if token.len() < 16 {
                return Err(usage(format!(
                    "--token-file {}: the token must be at least 16 characters",
                    tf.display()
                )));
            }
            let stopping = on_signals()?;
            let shared = obd_service::service::shared(c, stopping).map_err(unavailable)?;
            obd_service::service::serve(shared, token).map_err(|e| usage(e.to_string()))
        }
        Command::Worker(a) => {
            let mut c = load(&a.common.db)?;
            apply(&mut c, &a.common)?;
            let stopping = on_signals()?;
            let shared = obd_service::service::shared(c, stopping).map_err(unavailable)?;
            obd_service::service::work(shared, a.metrics_listen.as_deref(), a.exit_when_empty)
                .map_err(|e| usage(e.to_string()))
        }
        Command::Backfill(a) => backfill(a),
        Command::Jobs { db, command } => {
            let c = load(&db)?;
            let q = queue::open(&c.db_type, &c.db_str()).map_err(unavailable)?;
            match command {
                JobsCommand::List { state, limit, json } => {
                    let st = match state.as_deref() {
                        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                            usage(format!(
                                "--state {s:?}: queued, running, succeeded, failed, dead or skipped"
                            ))
                        })?),
                        None => None,
                    };
                    let mut out = String::new();
                    for j in q.list(st, limit).map_err(unavailable)? {
                        if json {
                            out.push_str(&serde_json::to_string(&j)?);
                        } else {
                            out.push_str(&line(&j));
                        }
                        out.push('\n');
                    }
                    obd_cli::print_out(&out)
                }
                JobsCommand::Show { id } => match q.get(id).map_err(unavailable)? {
                    Some(j) => {
                        obd_cli::print_out(&format!("{}\n", serde_json::to_string_pretty(&j)?))
                    }
                    None => Err(anyhow::Error::new(ConvertError::NotFound(format!(
                        "job {id}"
                    )))),
                },
                JobsCommand::Retry { id } => {
                    if q.retry(id).map_err(unavailable)? {
                        obd_cli::print_out(&format!("job {id} queued again\n"))
                    } else {
                        match q.get(id).map_err(unavailable)? {
                            Some(j) => Err(usage(format!(
                                "job {id} is {}: only finished jobs are retried",
                                j.state
                            ))),
                            None => Err(anyhow::Error::new(ConvertError::NotFound(format!(
                                "job {id}"
                            )))),
                        }
                    }
                }
            }
        }
    }
}

fn main() {
    let cli = Cli::parse();
    obd_cli::logging::init(&cli.log, None);
    obd_cli::run_main(|| run(cli))
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(1_796_218_316_758), "2026-12-02T13:31:56Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
