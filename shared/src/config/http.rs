//! The API's HTTP settings: port, request timeout, trusted proxies.

use std::time::Duration;

use super::{ConfigError, Env};

/// How the API serves HTTP.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `PORT`: the API's HTTP port (default 8080).
    pub port: u16,
    /// `REQUEST_TIMEOUT_SECS`: API request timeout (default 30).
    pub request_timeout: Duration,
    /// `TRUSTED_PROXIES`: comma list of the reverse proxies' addresses (IPs or CIDRs) whose
    /// `X-Forwarded-For` the API believes (default none: the socket's peer is the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl HttpSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mut trusted_proxies = Vec::new();
        for item in env.list("TRUSTED_PROXIES") {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    env.invalid(
                        "TRUSTED_PROXIES",
                        format!("{item:?}: expected an IP address or a CIDR (10.0.0.0/8)"),
                    )
                })?;
            trusted_proxies.push(net);
        }
        Ok(Self {
            port: env.parse("PORT", 8080)?,
            request_timeout: Duration::from_secs(env.at_least("REQUEST_TIMEOUT_SECS", 30, 1)?),
            trusted_proxies,
        })
    }
}
