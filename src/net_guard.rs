//! Which network addresses an untrusted MCP server may live at.
//!
//! Any user can make the bot send requests to a configured server URL and to
//! whatever its metadata names, so without a guard a server (or a DNS
//! record) could point the bot at loopback services, the private network or
//! a cloud metadata endpoint. rmcp filters only its own OAuth requests; this
//! module guards the MCP transport itself: IP literals are checked up front
//! and host names through a [`Resolver`] that drops forbidden answers,
//! which also closes the DNS-rebinding gap between a check and the connect.
//! Servers marked `trusted = true` in config skip the guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{host} is a loopback, private or link-local address; mark the server trusted = true in config if that is intended"
    )]
    Forbidden { host: String },
    #[error("the URL has no host")]
    NoHost,
}

/// Whether a request to `ip` may leave for an untrusted server.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata endpoint
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64 can reach v4 privates
}

/// Rejects URLs whose host is a forbidden IP literal or a `localhost` name;
/// other names are checked at connect time by [`Resolver`].
pub fn check_url(url: &Url, trusted: bool) -> Result<(), GuardError> {
    if trusted {
        return Ok(());
    }
    let host = url.host().ok_or(GuardError::NoHost)?;
    let forbidden = match host {
        Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
        Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if forbidden {
        return Err(GuardError::Forbidden {
            host: host.to_string(),
        });
    }
    Ok(())
}

/// A host name that did not resolve, told apart from every other network
/// failure so a user can be told "that host does not exist".
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}")]
pub struct ResolveError {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// The resolver of every MCP HTTP client: for an untrusted server it
/// answers only with public addresses; for all, a failed lookup is a typed
/// [`ResolveError`].
#[derive(Debug, Clone)]
pub struct Resolver {
    pub trusted: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let trusted = self.trusted;
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| {
                    Box::new(ResolveError {
                        host: host.clone(),
                        source,
                    }) as Box<dyn std::error::Error + Send + Sync>
                })?;
            let addrs: Vec<SocketAddr> = found
                .filter(|addr| trusted || is_public(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(GuardError::Forbidden { host }) as _);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn untrusted_urls_to_loopback_are_refused_trusted_ones_pass() {
        for url in [
            "http://127.0.0.1:3000/mcp",
            "http://localhost:3000/mcp",
            "http://[::1]/mcp",
            "http://169.254.169.254/latest",
            "http://app.localhost/",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url, false).is_err(), "{url}");
            assert!(check_url(&url, true).is_ok(), "{url}");
        }
        assert!(check_url(&Url::parse("https://mcp.example.com/mcp").unwrap(), false).is_ok());
    }
}
