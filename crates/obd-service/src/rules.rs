//! From a pushed image to a job: which rule matches (`HOST/REPO:TAG` globs, first match
//! wins), what the output is called, what the job's key is, and the loop guard (our own
//! output tags never become jobs).

use serde_json::json;

use crate::config::{Config, EngineName, Rule};
use crate::queue::{JobKey, NewJob};

/// An image someone pushed (or asked for): its place and digest, and the tag it was
/// pushed under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub host: String,
    pub repository: String,
    pub digest: String,
    pub tag: Option<String>,
}

impl Pushed {
    /// `HOST/REPO:TAG`, or `HOST/REPO@DIGEST` without a tag: what rules match.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.host, self.repository),
            None => format!("{}/{}@{}", self.host, self.repository, self.digest),
        }
    }
}

/// A glob: `*` matches any run of characters (also `/`), `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The output tag for `tag` (`{tag}` replaced); a digest-only source is named by the first
/// 12 hex digits of its digest.
pub fn output_tag(rule: &Rule, p: &Pushed) -> String {
    let base = match &p.tag {
        Some(t) => t.clone(),
        None => {
            let hex = p.digest.split_once(':').map_or(&*p.digest, |(_, h)| h);
            format!("sha256-{}", &hex[..hex.len().min(12)])
        }
    };
    let t = rule.output_pattern().replace("{tag}", &base);
    // Tags are at most 128 characters.
    t.chars().take(128).collect()
}

/// True when `tag` is what some rule would name an output: such a push is ours (or looks
/// like ours) and is never converted again.
pub fn is_output_tag(config: &Config, tag: &str) -> bool {
    config.rules.iter().any(|r| {
        let pat = r.output_pattern();
        let (pre, post) = pat.split_once("{tag}").unwrap_or((pat, ""));
        tag.len() > pre.len() + post.len() && tag.starts_with(pre) && tag.ends_with(post)
    })
}

/// The conversion a rule asks for, as the JSON a job carries.
pub fn spec(rule: &Rule) -> String {
    json!({
        "engine": match rule.engine { EngineName::Overlaybd => "overlaybd", EngineName::Turbo => "turbo" },
        "fstype": rule.fstype,
        "oci": rule.oci,
        "vsize": rule.vsize,
        "mkfs": rule.mkfs,
        "algorithm": rule.algorithm,
        "referrer": rule.referrer,
        "platforms": rule.platforms,
    })
    .to_string()
}

/// Why a pushed image is not a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// No rule matches it.
    NoRule,
    /// Its tag is one of our output tags (loop guard).
    OurOutput,
    /// It has no tag (a child manifest of an index, pushed by digest).
    Untagged,
}

/// The job for a pushed image under the first rule that matches it.
pub fn job_for(config: &Config, p: &Pushed, require_tag: bool) -> Result<NewJob, Ignored> {
    if require_tag && p.tag.is_none() {
        return Err(Ignored::Untagged);
    }
    if p.tag.as_deref().is_some_and(|t| is_output_tag(config, t)) {
        return Err(Ignored::OurOutput);
    }
    let reference = p.reference();
    let rule = config
        .rules
        .iter()
        .find(|r| glob(&r.pattern, &reference))
        .ok_or(Ignored::NoRule)?;
    let target = rule
        .target
        .clone()
        .unwrap_or_else(|| format!("{}/{}", p.host, p.repository));
    let out = output_tag(rule, p);
    let spec = spec(rule);
    let key = JobKey::new(
        &p.host,
        &p.repository,
        &p.digest,
        &rule.name,
        &spec,
        &format!("{target}:{out}"),
    );
    Ok(NewJob {
        key,
        host: p.host.clone(),
        repository: p.repository.clone(),
        digest: p.digest.clone(),
        tag: p.tag.clone(),
        rule: rule.name.clone(),
        target,
        output_tag: out,
        spec,
        max_attempts: config.max_attempts,
        deadline_secs: config.deadline_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "a/b:c"));
        assert!(glob("*/apps/*:*", "127.0.0.1:5000/apps/web:v1"));
        assert!(!glob("*/apps/*:*", "127.0.0.1:5000/other/web:v1"));
        assert!(glob("reg.io/a?c:v*", "reg.io/abc:v12"));
        assert!(!glob("reg.io/a?c:v*", "reg.io/abbc:v12"));
        assert!(glob("*:v1", "h/r:v1"));
        assert!(!glob("*:v1", "h/r:v12"));
    }

    fn pushed(tag: Option<&str>) -> Pushed {
        Pushed {
            host: "127.0.0.1:5000".into(),
            repository: "apps/web".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            tag: tag.map(str::to_string),
        }
    }

    #[test]
    fn jobs_keys_and_the_loop_guard() {
        let c = Config::default();
        let j = job_for(&c, &pushed(Some("v1")), true).unwrap();
        assert_eq!(j.output_tag, "v1_obd");
        assert_eq!(j.target, "127.0.0.1:5000/apps/web");
        assert_eq!(
            job_for(&c, &pushed(Some("v1_obd")), true),
            Err(Ignored::OurOutput)
        );
        assert_eq!(job_for(&c, &pushed(None), true), Err(Ignored::Untagged));
        let by_digest = job_for(&c, &pushed(None), false).unwrap();
        assert_eq!(by_digest.output_tag, "sha256-abababababab_obd");
        // Two tags of one digest are two jobs; the same tag twice is one.
        let j2 = job_for(&c, &pushed(Some("v2")), true).unwrap();
        assert_ne!(j.key, j2.key);
        assert_eq!(j.key, job_for(&c, &pushed(Some("v1")), true).unwrap().key);
        let c = Config::parse("[[rule]]\nmatch = \"*/other/*\"", "t").unwrap();
        assert_eq!(job_for(&c, &pushed(Some("v1")), true), Err(Ignored::NoRule));
    }
}
