//! Paginated listings: the repository catalog (`GET /v2/_catalog?n=N`, token scope
//! `registry:catalog:*`) and a repository's tags (`GET /v2/<repo>/tags/list?n=N`).
//!
//! Both follow the `Link: <...>; rel="next"` header until the registry stops sending one.
//! A registry that refuses the page size (distribution answers 400 `PAGINATION_NUMBER_INVALID`
//! when `n` exceeds its `catalog.maxentries`) is asked again with the limit its error names,
//! if it names one below `n`, else with half of `n`, down to 1.

use std::io::Read;

use reqwest::Method;
use tracing::debug;
use url::Url;

use super::transport::{header_str, status_error, ReqBody};
use super::{scope_pull, Client};
use crate::error::{Error, Result};
use crate::reference::validate_repository;

/// Token scope for listing the catalog.
pub const SCOPE_CATALOG: &str = "registry:catalog:*";

/// Page size [`Client::list_tags`] asks for.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Most pages followed before a listing is declared endless.
const MAX_PAGES: usize = 1_000_000;

/// `url` with its `n` query parameter set to `n` (other parameters kept in order).
fn with_page_size(url: &Url, n: usize) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "n")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut u = url.clone();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair("n", &n.to_string());
    }
    u
}

/// The `rel="next"` target of a `Link` header, resolved against `base`.
fn next_link(link: &str, base: &Url) -> Option<Url> {
    link.split(',').find_map(|part| {
        let start = part.find('<')? + 1;
        let end = part[start..].find('>')? + start;
        let params = &part[end + 1..];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| base.join(&part[start..end]).ok()).flatten()
    })
}

/// The page size to try after the registry refused `n` with `body`: a smaller limit named
/// in the error (`"max": 50`, `... at most 50 ...`), else half of `n`.
fn smaller_page_size(n: usize, body: &str) -> usize {
    let named = body
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse::<usize>().ok())
        .filter(|&m| m >= 1 && m < n)
        .max();
    named.unwrap_or(n / 2).max(1)
}

impl Client {
    /// Every repository of the registry, walking `GET /v2/_catalog?n=<page_size>` and its
    /// `Link` pages. Needs the `registry:catalog:*` scope on registries with token auth
    /// (usually an admin's credentials).
    pub fn catalog(&self, page_size: usize) -> Result<Vec<String>> {
        self.paginate(
            "v2/_catalog",
            "repositories",
            page_size,
            &[SCOPE_CATALOG.to_string()],
            "the registry catalog (/v2/_catalog)",
        )
    }

    /// All tags of a repository (pages of [`DEFAULT_PAGE_SIZE`], following `Link`).
    pub fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        self.list_tags_paged(repo, DEFAULT_PAGE_SIZE)
    }

    /// All tags of a repository, asking for `page_size` tags per request and following
    /// `Link` pagination.
    pub fn list_tags_paged(&self, repo: &str, page_size: usize) -> Result<Vec<String>> {
        validate_repository(repo)?;
        self.paginate(
            &format!("v2/{repo}/tags/list"),
            "tags",
            page_size,
            &[scope_pull(repo)],
            &format!("repository {repo}"),
        )
    }

    /// `GET path?n=page_size`, collecting the string array `field` of every page.
    fn paginate(
        &self,
        path: &str,
        field: &str,
        page_size: usize,
        scopes: &[String],
        what: &str,
    ) -> Result<Vec<String>> {
        let mut n = page_size.max(1);
        let mut url = with_page_size(&self.url(path)?, n);
        let mut out = Vec::new();
        let mut pages = 0usize;
        loop {
            let resp = self.send(Method::GET, &url, &[], &mut ReqBody::Empty, scopes)?;
            let status = resp.status().as_u16();
            if status == 400 {
                let mut body = Vec::new();
                let _ = resp.take(16 * 1024).read_to_end(&mut body);
                let text = String::from_utf8_lossy(&body);
                if text.contains("PAGINATION_NUMBER_INVALID") && n > 1 {
                    let smaller = smaller_page_size(n, &text);
                    debug!(
                        what,
                        refused = n,
                        next = smaller,
                        "page size refused; asking for fewer"
                    );
                    n = smaller;
                    url = with_page_size(&url, n);
                    continue;
                }
                return Err(Error::Status {
                    method: "GET".into(),
                    url: crate::error::display_url(&url),
                    code: 400,
                    body: crate::error::truncate_body(&body),
                });
            }
            if status != 200 {
                return Err(self.auth_context(status_error(&Method::GET, &url, resp, what)));
            }
            let next = header_str(resp.headers(), "link").and_then(|l| next_link(l, &url));
            let page: serde_json::Value = serde_json::from_reader(resp)
                .map_err(|e| Error::Protocol(format!("bad response listing {what}: {e}")))?;
            match page.get(field) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(items)) => {
                    for i in items {
                        let s = i.as_str().ok_or_else(|| {
                            Error::Protocol(format!("listing {what}: {field} holds a non-string"))
                        })?;
                        out.push(s.to_string());
                    }
                }
                Some(_) => {
                    return Err(Error::Protocol(format!(
                        "listing {what}: {field} is not an array"
                    )))
                }
            }
            pages += 1;
            match next {
                Some(u) if pages < MAX_PAGES => {
                    // Keep the page size that worked when the link does not carry one.
                    url = if u.query_pairs().any(|(k, _)| k == "n") {
                        u
                    } else {
                        with_page_size(&u, n)
                    };
                }
                Some(_) => {
                    return Err(Error::Protocol(format!(
                        "listing {what}: pagination does not end after {MAX_PAGES} pages"
                    )))
                }
                None => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_replaces_n() {
        let u = Url::parse("http://r/v2/_catalog?last=a%2Fb&n=100").unwrap();
        assert_eq!(
            with_page_size(&u, 5).as_str(),
            "http://r/v2/_catalog?last=a%2Fb&n=5"
        );
        let u = Url::parse("http://r/v2/_catalog").unwrap();
        assert_eq!(with_page_size(&u, 7).as_str(), "http://r/v2/_catalog?n=7");
    }

    #[test]
    fn next_links() {
        let base = Url::parse("http://r:5000/v2/_catalog?n=5").unwrap();
        let n = next_link("</v2/_catalog?last=apps%2Fa&n=5>; rel=\"next\"", &base).unwrap();
        assert_eq!(n.as_str(), "http://r:5000/v2/_catalog?last=apps%2Fa&n=5");
        assert!(next_link("</v2/_catalog?last=x>; rel=\"prev\"", &base).is_none());
        let two = "</a?p=1>; rel=\"prev\", </b?p=3>; rel=next";
        assert_eq!(
            next_link(two, &base).unwrap().as_str(),
            "http://r:5000/b?p=3"
        );
    }

    #[test]
    fn smaller_sizes() {
        let dist = r#"{"errors":[{"code":"PAGINATION_NUMBER_INVALID","message":"invalid number of results requested","detail":{"n":100}}]}"#;
        assert_eq!(smaller_page_size(100, dist), 50);
        assert_eq!(
            smaller_page_size(100, "PAGINATION_NUMBER_INVALID: n must be at most 20"),
            20
        );
        assert_eq!(smaller_page_size(1, dist), 1);
        assert_eq!(smaller_page_size(3, dist), 1);
    }
}
