//! The server-side request forgery guard: which URLs an endpoint may have, and which addresses
//! a delivery may connect to.
//!
//! A URL is `http` or `https`, at most [`MAX_URL`] characters, with a host and no user info. Its
//! host must not be, or resolve to, an address that is not publicly routable: loopback,
//! private (RFC 1918, ULA `fc00::/7`), link-local (`169.254.0.0/16` with the cloud metadata
//! address, `fe80::/10`), unspecified, broadcast, multicast, CGNAT `100.64.0.0/10`, reserved
//! and documentation ranges, and the IPv6 forms that embed an IPv4 address (mapped,
//! compatible, NAT64, 6to4) of any of those. It is checked when an endpoint is saved
//! ([`vet_url`]) and again at delivery, on the address actually connected: the delivery client
//! resolves through [`GuardedResolver`], which hands the connector only vetted addresses, and
//! checks IP-literal hosts itself (the connector does not resolve those).
//! `WEBHOOK_ALLOW_PRIVATE=true` lifts the address checks (tests, closed networks).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, LazyLock},
    time::Duration,
};

use futures::future::BoxFuture;
use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::Url;

use crate::domain::Invalid;

/// Longest endpoint URL (characters).
pub const MAX_URL: usize = 2048;

/// IPv4 ranges no delivery may reach.
static BLOCKED_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // carrier-grade NAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, broadcast
    ]
    .iter()
    .map(|n| n.parse().expect("a valid network"))
    .collect()
});

/// IPv6 ranges no delivery may reach (embedded IPv4 forms are checked as IPv4).
static BLOCKED_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    [
        "::/128",        // unspecified
        "::1/128",       // loopback
        "100::/64",      // discard-only
        "2001::/23",     // IETF protocol assignments (Teredo among them)
        "2001:db8::/32", // documentation
        "fc00::/7",      // unique local (ULA)
        "fe80::/10",     // link-local
        "fec0::/10",     // site-local (deprecated)
        "ff00::/8",      // multicast
    ]
    .iter()
    .map(|n| n.parse().expect("a valid network"))
    .collect()
});

/// The IPv4 address an IPv6 address carries, in the forms a stack may route to it: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && ip != Ipv6Addr::UNSPECIFIED && ip != Ipv6Addr::LOCALHOST {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Whether a delivery may connect to `ip`: a publicly routable address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !BLOCKED_V4.iter().any(|n| n.contains(&v4)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => !BLOCKED_V6.iter().any(|n| n.contains(&v6)),
        },
    }
}

/// A delivery refused by the guard: the host is, or resolves only to, addresses that are not
/// public. Found in a send error's source chain to tell it from a network failure.
#[derive(Debug, thiserror::Error)]
#[error("refused: {host} resolves to {addr}, which is not a public address")]
pub struct Refused {
    /// The host as named in the URL.
    pub host: String,
    /// The (first) address refused.
    pub addr: IpAddr,
}

/// How host names become addresses (injectable: tests resolve names without DNS).
pub trait HostLookup: Send + Sync + 'static {
    /// Every address `host` resolves to.
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// JSON Schema `pattern` of an endpoint URL: what [`parse_url`] requires of the text before
/// it parses it. The excluded characters are spelled out rather than `\s`: regex engines
/// disagree on what `\s` covers (a schema fuzzer sent U+0085, NEL, as a "non-space").
pub const URL_PATTERN: &str = concat!(
    r"^https?://[^",
    r"\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
    r"@/?#]+([/?#][^",
    r"\x00-\x20\x7f-\x9f\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
    r"]*)?$"
);

/// A character no endpoint URL may hold: a space of any kind (Rust's `char::is_whitespace`), a
/// control character (C0, DEL, C1) or a byte-order mark; the ranges [`URL_PATTERN`] excludes.
fn forbidden_in_url(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '\u{feff}'
}

/// Checks a URL's form (not its addresses): scheme, length, host, no user info, no spaces, as
/// [`URL_PATTERN`] says, then that it parses.
pub fn parse_url(raw: &str) -> Result<Url, Invalid> {
    if raw.chars().count() > MAX_URL {
        return Err(Invalid::new(format!(
            "must be at most {MAX_URL} characters"
        )));
    }
    let Some(rest) = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
    else {
        return Err(Invalid::new("must be an http or https URL (`https://…`)"));
    };
    if raw.chars().any(forbidden_in_url) {
        return Err(Invalid::new(
            "must not contain spaces or control characters",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Invalid::new("must name a host"));
    }
    if authority.contains('@') {
        return Err(Invalid::new("must not hold a user name or password"));
    }
    let url = Url::parse(raw).map_err(|e| Invalid::new(format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Invalid::new("must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Invalid::new("must not hold a user name or password"));
    }
    if url.host().is_none() {
        return Err(Invalid::new("must name a host"));
    }
    Ok(url)
}

/// The IP of an IP-literal URL host (`http://10.0.0.1/`, `http://[::1]/`), if it is one.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Checks a URL when an endpoint is saved: its form, then (unless `allow_private`) that its
/// host is, or resolves within `timeout` only to, public addresses. The message is for a 422
/// naming `url`.
pub async fn vet_url(
    raw: &str,
    allow_private: bool,
    lookup: &dyn HostLookup,
    timeout: Duration,
) -> Result<Url, Invalid> {
    let url = parse_url(raw)?;
    if allow_private {
        return Ok(url);
    }
    let not_public = |addr: IpAddr| {
        Invalid::new(format!(
            "must reach a public address: its host is {addr}, a loopback, private, link-local \
             or otherwise reserved address"
        ))
    };
    if let Some(ip) = literal_ip(&url) {
        return if is_public(ip) {
            Ok(url)
        } else {
            Err(not_public(ip))
        };
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let addrs = match tokio::time::timeout(timeout, lookup.lookup(&host)).await {
        Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
        Ok(_) | Err(_) => {
            return Err(Invalid::new(format!(
                "its host {host:?} could not be resolved"
            )));
        }
    };
    match addrs.into_iter().find(|a| !is_public(*a)) {
        Some(addr) => Err(not_public(addr)),
        None => Ok(url),
    }
}

/// The delivery client's resolver: resolves with a [`HostLookup`], then keeps only public
/// addresses (all, when private ones are allowed), so the connector can only reach a vetted
/// address. A host left with none fails with [`Refused`].
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<dyn HostLookup>,
    allow_private: bool,
}

impl GuardedResolver {
    /// A resolver over `lookup`.
    pub fn new(lookup: Arc<dyn HostLookup>, allow_private: bool) -> Self {
        Self {
            lookup,
            allow_private,
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = self.lookup.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = lookup.lookup(&host).await?;
            let first = *addrs.first().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))
            })?;
            let vetted: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || is_public(*a))
                .map(|a| SocketAddr::new(a, 0))
                .collect();
            if vetted.is_empty() {
                return Err(Box::new(Refused { host, addr: first }) as _);
            }
            Ok(Box::new(vetted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_not_public_in_any_form() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(bad)), "{bad} must be refused");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_user_info() {
        assert!(parse_url("https://hooks.example.com/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "not a url",
            "file:///etc/passwd",
            "data:text/plain,hi",
            "HTTP://example.com/",
            "http:///x",
            "https://exa mple.com/",
            "https://example.com/a b",
            "http://a:99999/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(parse_url(&long).is_err());
    }

    /// The schema's pattern and the validator refuse the same characters, so a schema-valid URL
    /// is never refused for its characters (and a refused one is schema-invalid).
    #[test]
    fn the_url_pattern_and_parse_url_refuse_the_same_characters() {
        let pattern = regex::Regex::new(URL_PATTERN).expect("the pattern compiles");
        let chars = (0..0x3100u32).chain([0xfeff, 0xfffd, 0x1f600]);
        for c in chars.filter_map(char::from_u32) {
            for url in [
                format!("https://example.com/p{c}q"),
                format!("https://example.com/?q={c}"),
            ] {
                let schema_valid = pattern.is_match(&url);
                assert_eq!(
                    schema_valid,
                    !forbidden_in_url(c),
                    "U+{:04X} in {url:?}",
                    c as u32
                );
                if !schema_valid {
                    assert!(parse_url(&url).is_err(), "U+{:04X} accepted", c as u32);
                }
            }
        }
        // what the fuzzer sent
        let nel = "https://\u{85}0\u{cc}4?w";
        assert!(!pattern.is_match(nel));
        assert!(parse_url(nel).is_err());
        assert!(pattern.is_match("https://hooks.example.com/x?y=1"));
    }

    /// Resolves every name to fixed addresses, without DNS.
    struct Fixed(Vec<IpAddr>);

    impl HostLookup for Fixed {
        fn lookup(&self, _: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            let addrs = self.0.clone();
            Box::pin(async move { Ok(addrs) })
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_at_save() {
        let private = Fixed(vec![ip("93.184.216.34"), ip("10.0.0.7")]);
        let err = vet_url("https://internal.example/", false, &private, T)
            .await
            .unwrap_err();
        assert!(err.message().contains("10.0.0.7"), "{}", err.message());
        assert!(
            vet_url("https://internal.example/", true, &private, T)
                .await
                .is_ok()
        );
        let public = Fixed(vec![ip("93.184.216.34")]);
        assert!(
            vet_url("https://x.example/", false, &public, T)
                .await
                .is_ok()
        );
        // IP literals, in the spellings `url` normalises (decimal, hex)
        for literal in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(
                vet_url(literal, false, &public, T).await.is_err(),
                "{literal}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_hands_on_only_public_addresses() {
        use reqwest::dns::Resolve;
        let mixed = GuardedResolver::new(
            Arc::new(Fixed(vec![ip("10.0.0.1"), ip("93.184.216.34")])),
            false,
        );
        let name = || "a.example".parse::<reqwest::dns::Name>().unwrap();
        let got: Vec<SocketAddr> = mixed.resolve(name()).await.unwrap().collect();
        assert_eq!(got, [SocketAddr::new(ip("93.184.216.34"), 0)]);
        let private = GuardedResolver::new(Arc::new(Fixed(vec![ip("10.0.0.1")])), false);
        let err = private.resolve(name()).await.err().unwrap();
        assert!(err.downcast_ref::<Refused>().is_some(), "{err}");
        let allowed = GuardedResolver::new(Arc::new(Fixed(vec![ip("10.0.0.1")])), true);
        assert_eq!(allowed.resolve(name()).await.unwrap().count(), 1);
    }
}
