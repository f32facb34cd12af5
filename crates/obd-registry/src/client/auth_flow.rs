//! Authorization: the header for a request, reacting to `WWW-Authenticate` challenges
//! (Basic, Bearer), token requests (GET, then OAuth2 POST) and the per-scope token cache.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use tracing::{debug, warn};
use url::Url;

use super::transport::{network_err, read_error_detail, status_error, transport_error};
use super::Client;
use crate::auth::Challenge;
use crate::credentials::IDENTITY_TOKEN_USER;
use crate::error::{display_url, Error, Result};

#[derive(Debug, Clone)]
pub(super) enum AuthScheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

pub(super) struct CachedToken {
    token: String,
    expires: Instant,
}

#[derive(Default)]
pub(super) struct AuthState {
    scheme: Option<AuthScheme>,
    tokens: HashMap<String, CachedToken>,
}

impl Client {
    // ---------------------------------------------------------------- auth

    pub(super) fn scope_key(scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s.join(" ")
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token if the
    /// registry uses Bearer auth and none is cached.
    pub(super) fn authorization(&self, scopes: &[String]) -> Result<Option<HeaderValue>> {
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let value = match st.scheme.clone() {
            None => return Ok(None),
            Some(AuthScheme::Basic) => match &self.creds {
                Some(c) => c.basic_header(),
                None => return Ok(None),
            },
            Some(AuthScheme::Bearer { realm, service }) => {
                let key = Self::scope_key(scopes);
                let now = Instant::now();
                match st.tokens.get(&key) {
                    Some(t) if t.expires > now => format!("Bearer {}", t.token),
                    _ => {
                        let t = self.fetch_token(&realm, service.as_deref(), scopes)?;
                        let v = format!("Bearer {}", t.token);
                        st.tokens.insert(key, t);
                        v
                    }
                }
            }
        };
        let mut hv = HeaderValue::from_str(&value).map_err(|_| {
            Error::Config("credentials contain characters not allowed in HTTP headers".into())
        })?;
        hv.set_sensitive(true);
        Ok(Some(hv))
    }

    /// React to a 401. Returns whether the request should be retried.
    pub(super) fn handle_challenge(
        &self,
        challenges: &[Challenge],
        scopes: &[String],
        sent: Option<&str>,
    ) -> Result<bool> {
        let sent_auth = sent.is_some();
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = b.param("realm").filter(|r| !r.is_empty()) else {
                return Err(Error::Protocol("Bearer challenge without realm".into()));
            };
            let realm = realm.to_string();
            let service = b.param("service").map(|s| s.to_string());
            let mut want: Vec<String> = scopes.to_vec();
            if let Some(sc) = b.param("scope") {
                for s in sc.split(' ').filter(|s| !s.is_empty()) {
                    if !want.iter().any(|w| w == s) {
                        want.push(s.to_string());
                    }
                }
            }
            st.scheme = Some(AuthScheme::Bearer {
                realm: realm.clone(),
                service: service.clone(),
            });
            // Another thread may have fetched a token for these scopes meanwhile.
            let challenge_adds_scope = want.len() > scopes.len();
            if !challenge_adds_scope {
                if let Some(t) = st.tokens.get(&Self::scope_key(scopes)) {
                    let fresh = t.expires > Instant::now();
                    if fresh && sent.is_none_or(|h| h != format!("Bearer {}", t.token)) {
                        return Ok(true);
                    }
                }
            }
            let token = self.fetch_token(&realm, service.as_deref(), &want)?;
            st.tokens.insert(Self::scope_key(scopes), token);
            return Ok(true);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let was_basic = matches!(st.scheme, Some(AuthScheme::Basic));
            st.scheme = Some(AuthScheme::Basic);
            // Credentials were already sent and refused: do not loop.
            return Ok(self.creds.is_some() && !(was_basic && sent_auth));
        }
        Ok(false)
    }

    /// [`Client::fetch_token_once`], retried like other requests when the token endpoint
    /// fails transiently (5xx, 429, dropped connections).
    pub(super) fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken> {
        let mut attempt = 0u32;
        loop {
            match self.fetch_token_once(realm, service, scopes) {
                Err(e) if e.is_transient() && attempt < self.opts.retries => {
                    let d = self.backoff(attempt);
                    warn!(error = %e, delay_ms = d.as_millis() as u64, "token request failed; retrying");
                    std::thread::sleep(d);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    pub(super) fn fetch_token_once(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken> {
        let mut url = Url::parse(realm)
            .map_err(|e| Error::Protocol(format!("bad token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let identity_token = self
            .creds
            .as_ref()
            .is_some_and(|c| c.username == IDENTITY_TOKEN_USER);
        let resp = if identity_token {
            // A refresh token (from a credential helper or `identitytoken`): only the OAuth2
            // POST can use it.
            self.fetch_token_oauth(realm, service, scopes)?
        } else {
            self.fetch_token_get(&url, realm, service, scopes)?
        };
        #[derive(serde::Deserialize)]
        struct TokenResp {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let mut body = Vec::new();
        resp.take(1 << 20).read_to_end(&mut body).map_err(|e| {
            network_err(
                &url,
                format!(
                    "reading token response: {}",
                    read_error_detail(&e, self.opts.read_timeout)
                ),
            )
        })?;
        let tr: TokenResp = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("token response is not JSON: {e}")))?;
        let token = tr
            .token
            .filter(|t| !t.is_empty())
            .or(tr.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                Error::Protocol("token response has neither token nor access_token".into())
            })?;
        let ttl = tr.expires_in.unwrap_or(60).max(10);
        Ok(CachedToken {
            token,
            expires: Instant::now() + Duration::from_secs(ttl.saturating_sub(5)),
        })
    }

    /// The token request by `GET` (Basic auth or anonymous), falling back to the OAuth2
    /// POST when the token server refuses a GET that carried credentials.
    fn fetch_token_get(
        &self,
        url: &Url,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Response> {
        debug!(url = %display_url(url), scopes = ?scopes, "requesting token (GET)");
        let mut rb = self.http.get(url.clone());
        if let Some(c) = &self.creds {
            let mut hv = HeaderValue::from_str(&c.basic_header())
                .map_err(|_| Error::Config("credentials contain invalid characters".into()))?;
            hv.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, hv);
        }
        let resp = rb
            .send()
            .map_err(|e| transport_error(e, url, self.read_deadline(), &self.opts.hints).0)?;
        let status = resp.status().as_u16();
        let resp = if status == 200 {
            resp
        } else if self.creds.is_some() && matches!(status, 400 | 401 | 403 | 404 | 405) {
            drop(resp);
            self.fetch_token_oauth(realm, service, scopes)?
        } else {
            return Err(match status_error(&Method::GET, url, resp, "token") {
                Error::NotFound { .. } => Error::Auth {
                    url: display_url(url),
                    status,
                    detail: "token endpoint not found".into(),
                },
                e => e,
            });
        };
        Ok(resp)
    }

    /// OAuth2 POST: `grant_type=password`, used when the GET token request is refused, or
    /// `grant_type=refresh_token` for an identity token (user name `<token>`).
    pub(super) fn fetch_token_oauth(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Response> {
        let url = Url::parse(realm)
            .map_err(|e| Error::Protocol(format!("bad token realm {realm:?}: {e}")))?;
        let creds = self
            .creds
            .as_ref()
            .ok_or_else(|| Error::Protocol("OAuth2 token request without credentials".into()))?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if creds.username == IDENTITY_TOKEN_USER {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("client_id", "obdconv");
            form.append_pair("refresh_token", &creds.password);
        } else {
            form.append_pair("grant_type", "password");
            form.append_pair("client_id", "obdconv");
            form.append_pair("username", &creds.username);
            form.append_pair("password", &creds.password);
        }
        if let Some(s) = service {
            form.append_pair("service", s);
        }
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        debug!(url = %display_url(&url), "requesting token (OAuth2 POST)");
        let resp = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .map_err(|e| transport_error(e, &url, self.read_deadline(), &self.opts.hints).0)?;
        if resp.status().as_u16() == 200 {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        Err(match status_error(&Method::POST, &url, resp, "token") {
            Error::Status { body, .. } if matches!(status, 400 | 401 | 403 | 404 | 405) => {
                Error::Auth {
                    url: display_url(&url),
                    status,
                    detail: format!("token endpoint refused the credentials: {body}"),
                }
            }
            Error::NotFound { .. } => Error::Auth {
                url: display_url(&url),
                status,
                detail: "token endpoint refused the credentials".into(),
            },
            e => e,
        })
    }
}
