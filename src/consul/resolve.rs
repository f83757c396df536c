//! Resolving the agent's address without a thread per request. ureq's `DefaultResolver`
//! enforces its timeout by starting a thread for every lookup, and ureq looks the host up
//! for every request, pooled connection or not: with pilot's timeouts that was one
//! short-lived thread per TTL update. The agent is nearly always an IP literal or
//! `localhost` (node-local): those need no lookup at all. Any other name still goes to
//! `DefaultResolver`, with its timeout, as before.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

#[derive(Debug, Default)]
pub struct LiteralFirst(DefaultResolver);

/// The addresses `host` stands for without a lookup: an IP literal (`[…]` for IPv6), or
/// `localhost`, which is loopback by definition (RFC 6761), IPv4 first as getaddrinfo
/// orders it.
fn literal(host: &str) -> Option<Vec<IpAddr>> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(vec![ip]);
    }
    host.eq_ignore_ascii_case("localhost")
        .then(|| vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)])
}

impl Resolver for LiteralFirst {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let port = uri.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        match (uri.host().and_then(literal), port) {
            (Some(ips), Some(port)) => {
                let mut out = self.0.empty();
                for ip in ips {
                    out.push(SocketAddr::new(ip, port));
                }
                Ok(out)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_localhost_need_no_lookup() {
        assert_eq!(literal("127.0.0.1"), Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]));
        assert_eq!(literal("[::1]"), Some(vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]));
        assert_eq!(literal("LocalHost").map(|v| v.len()), Some(2));
        assert_eq!(literal("consul.service.consul"), None);
    }
}
