//! Which proxy a request goes through, chosen as Go's net/http chooses it (so `convertor`
//! behaves as docker, skopeo and containerd on the same machine): `HTTPS_PROXY` (or
//! `https_proxy`) for `https` URLs, `HTTP_PROXY` (or `http_proxy`) for `http`, hosts in
//! `NO_PROXY` (or `no_proxy`) direct, and loopback hosts (`localhost`, `127.0.0.0/8`,
//! `::1`) never proxied. `ALL_PROXY` is not read, as in Go.

use std::net::IpAddr;

use url::Url;

/// The first non-empty variable of `names`.
fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// A proxy setting as a URL; a bare `host:port` means `http://host:port`, as in Go.
fn proxy_url(v: &str) -> Option<Url> {
    let v = v.trim();
    let with_scheme = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    Url::parse(&with_scheme).ok()
}

/// True for `localhost` and loopback addresses (brackets around IPv6 allowed).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// True when `NO_PROXY` sends `host` direct: `*`, an exact host, a domain suffix
/// (`example.com` and `.example.com` both match `reg.example.com`), or an IP/CIDR.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|e| {
            let e = e.to_ascii_lowercase();
            if e == "*" {
                return true;
            }
            // Ports in entries are ignored (the host decides).
            let name = match e.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
                _ => e.as_str(),
            };
            if let (Some(ip), Some((net, bits))) = (ip, name.split_once('/')) {
                return cidr_contains(net, bits, ip);
            }
            if let Some(ip) = ip {
                return name.parse::<IpAddr>().is_ok_and(|n| n == ip);
            }
            let suffix = name.trim_start_matches('.');
            host == suffix || host.ends_with(&format!(".{suffix}"))
        })
}

fn cidr_contains(net: &str, bits: &str, ip: IpAddr) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The proxy for `url` under the current environment, or `None` to connect directly.
pub fn for_url(url: &Url) -> Option<Url> {
    let host = url.host_str()?;
    if is_loopback(host) {
        return None;
    }
    if let Some(list) = env(&["NO_PROXY", "no_proxy"]) {
        if no_proxy_matches(&list, host) {
            return None;
        }
    }
    let v = match url.scheme() {
        "https" => env(&["HTTPS_PROXY", "https_proxy"]),
        _ => env(&["HTTP_PROXY", "http_proxy"]),
    }?;
    proxy_url(&v)
}

/// The client's proxy setting: [`for_url`] for every request (reqwest's own reading of the
/// environment, which proxies loopback and reads `ALL_PROXY`, is replaced).
pub(crate) fn reqwest_proxy() -> reqwest::Proxy {
    reqwest::Proxy::custom(for_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.3.4.5",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "example.com", "localhost.example.com", "::2"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn no_proxy_lists() {
        let l = "example.com, .corp.net,10.0.0.0/8,192.168.1.5:5000,fd00::/8";
        for h in [
            "example.com",
            "reg.example.com",
            "a.corp.net",
            "corp.net",
            "10.2.3.4",
            "192.168.1.5",
            "fd00::1",
        ] {
            assert!(no_proxy_matches(l, h), "{h}");
        }
        for h in ["notexample.com", "11.0.0.1", "192.168.1.6", "fe80::1"] {
            assert!(!no_proxy_matches(l, h), "{h}");
        }
        assert!(no_proxy_matches("*", "anything"));
    }

    #[test]
    fn proxy_values() {
        assert_eq!(
            proxy_url("proxy:3128").unwrap().as_str(),
            "http://proxy:3128/"
        );
        assert_eq!(
            proxy_url("https://p.example:8443").unwrap().as_str(),
            "https://p.example:8443/"
        );
    }
}
