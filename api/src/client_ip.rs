//! The client's IP address, for per-IP rate limits, login audits and session records.
//!
//! By default it is the socket's peer: a client could write anything into `X-Forwarded-For`,
//! so the header is ignored. Behind a load balancer or reverse proxy every request would then
//! come from the proxy, so `TRUSTED_PROXIES` lists the proxies' addresses (IPs or CIDRs). When
//! the peer is one of them, the client is the rightmost `X-Forwarded-For` entry that is not a
//! trusted proxy: entries left of it were written by the client and prove nothing.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::IpNet;

use crate::AppState;

/// The client's address (`unknown` when served without connect info, e.g. in-process tests).
#[derive(Debug)]
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(peer.map_or_else(
            || "unknown".to_owned(),
            |peer| {
                client_ip(peer, &parts.headers, &state.settings.http.trusted_proxies).to_string()
            },
        )))
    }
}

/// The client behind `peer`, given the trusted proxies (see the module docs).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    // Every X-Forwarded-For header, in order, each a comma list; read from the right.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage where an address should be: the last address a trusted hop vouched for.
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse::<IpNet>().unwrap_or_else(|_| IpNet::from(ip(s))))
            .collect()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let h = headers(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_claims() {
        let h = headers(&["1.1.1.1"]);
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.7"]);
        // the client forged the first entry; the proxies appended the rest
        let h = headers(&["6.6.6.6, 198.51.100.4", "192.168.1.7"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("198.51.100.4"));
        // ports and IPv4-mapped peers
        let h = headers(&["198.51.100.4:4711"]);
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &h, &trusted),
            ip("198.51.100.4")
        );
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("2001:db8::1"));
    }

    #[test]
    fn missing_garbled_or_all_trusted_hops_stop_at_the_last_vouched_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.1.2.3"), &HeaderMap::new(), &trusted),
            ip("10.1.2.3")
        );
        let h = headers(&["198.51.100.4, not-an-ip, 10.9.9.9"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.9.9.9"));
        let h = headers(&["10.5.5.5, 10.9.9.9"]);
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("10.5.5.5"));
    }
}
