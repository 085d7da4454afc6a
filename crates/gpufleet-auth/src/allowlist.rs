//! Which client IPs may connect ([`IpAllowlist`], CIDRs) and who the client is behind proxies
//! ([`client_ip`]).
//!
//! The default allowlist is loopback and private ranges: `127.0.0.0/8`, `::1/128`, the RFC 1918
//! ranges `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, and unique-local `fc00::/7`. Open it
//! with `0.0.0.0/0` and `::/0` deliberately.
//!
//! `X-Forwarded-For` is honoured only when the TCP peer is a configured trusted proxy; anyone else
//! could write any address in it.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// The allowlist and trusted proxies as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistConfig {
    /// Networks clients may connect from.
    pub allow: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed (e.g. the ingress). Empty: none.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        Self { allow: default_allow(), trusted_proxies: Vec::new() }
    }
}

/// An unusable allowlist configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AllowlistError {
    /// An empty `allow` would refuse every client, including the operator.
    #[error("allowlist.allow is empty: it would refuse every client (use 0.0.0.0/0 and ::/0 to allow all)")]
    Empty,
}

fn default_allow() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A set of networks that may connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
}

impl Default for IpAllowlist {
    fn default() -> Self {
        Self { nets: default_allow() }
    }
}

impl IpAllowlist {
    /// An allowlist of `nets` (must not be empty).
    pub fn new(nets: Vec<IpNet>) -> Result<Self, AllowlistError> {
        if nets.is_empty() {
            return Err(AllowlistError::Empty);
        }
        Ok(Self { nets: nets.into_iter().map(|n| n.trunc()).collect() })
    }

    /// Whether `ip` may connect. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) count as IPv4.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The networks.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// Reads one `X-Forwarded-For` hop: an IP, optionally with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` hop that is not itself a trusted proxy. Pass several
/// `X-Forwarded-For` headers joined with `,` in order.
///
/// Walking stops at a hop that does not parse; the last address walked (a trusted proxy) is then
/// the answer, so garbage can never name an arbitrary client. If every hop is a trusted proxy, the
/// left-most one is the client.
pub fn client_ip(peer: SocketAddr, x_forwarded_for: Option<&str>, trusted_proxies: &[IpNet]) -> IpAddr {
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client, trusted_proxies) {
        return client;
    }
    let Some(xff) = x_forwarded_for else {
        return client;
    };
    for hop in xff.rsplit(',') {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(client, trusted_proxies) {
            return client;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 40000)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn default_allows_loopback_and_private_ranges_only() {
        let a = IpAllowlist::default();
        for ok in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(a.allows(ip(ok)), "{ok}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::2", "169.254.1.1"] {
            assert!(!a.allows(ip(no)), "{no}");
        }
        assert_eq!(IpAllowlist::new(AllowlistConfig::default().allow).unwrap(), a);
    }

    #[test]
    fn configured_networks_replace_the_default() {
        let a = IpAllowlist::new(nets(&["203.0.113.7/32"])).unwrap();
        assert!(a.allows(ip("203.0.113.7")));
        assert!(!a.allows(ip("127.0.0.1")));
        assert_eq!(IpAllowlist::new(Vec::new()), Err(AllowlistError::Empty));
        let c: AllowlistConfig =
            toml::from_str("allow = [\"0.0.0.0/0\"]\ntrusted_proxies = [\"10.0.0.5/32\"]").unwrap();
        assert!(IpAllowlist::new(c.allow).unwrap().allows(ip("8.8.8.8")));
        assert!(toml::from_str::<AllowlistConfig>("allow = [\"10.0.0.0/33\"]").is_err());
    }

    #[test]
    fn spoofed_xff_from_an_untrusted_peer_is_ignored() {
        let trusted = nets(&["10.0.0.5/32"]);
        assert_eq!(client_ip(sock("203.0.113.9"), Some("127.0.0.1"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(sock("203.0.113.9"), Some("10.0.0.1, 127.0.0.1"), &[]), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_yields_the_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/29"]);
        // The client wrote a fake first hop; the proxy appended the real address.
        let xff = "127.0.0.1, 198.51.100.4, 10.0.0.2";
        assert_eq!(client_ip(sock("10.0.0.5"), Some(xff), &trusted), ip("198.51.100.4"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some("198.51.100.4:5555"), &trusted), ip("198.51.100.4"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some("[2001:db8::1]:443"), &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn edge_cases_fall_back_to_a_trusted_address() {
        let trusted = nets(&["10.0.0.0/29"]);
        assert_eq!(client_ip(sock("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some("not-an-ip"), &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some("8.8.8.8, junk, 10.0.0.3"), &trusted), ip("10.0.0.3"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some("10.0.0.1, 10.0.0.3"), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(sock("10.0.0.5"), Some(""), &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(sock("::ffff:10.0.0.5"), Some("198.51.100.4"), &trusted), ip("198.51.100.4"));
    }
}
