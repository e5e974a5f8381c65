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

use ip_network::{Ipv4Network, Ipv6Network};
use url::{Host, Url};

/// How long a connection to a server may sit idle in a client's pool.
/// Node.js closes idle keep-alive connections after 5 s by default, and
/// most MCP and authorization servers run on it: a request sent on a
/// connection the server is closing at that moment fails without reaching
/// it ("error sending request"), and a POST cannot be sent again blindly.
/// Dropping idle connections first avoids the race.
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    #[error(
        "{host} is a loopback, private or link-local address; mark the server trusted = true in config if that is intended"
    )]
    Forbidden { host: String },
    #[error("the URL has no host")]
    NoHost,
}

/// Whether a request to `ip` may leave for an untrusted server: a
/// globally reachable unicast address by IANA's special-purpose registries
/// (the `ip_network` crate keeps them). An IPv6 address that carries an
/// IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is judged by the
/// IPv4 address it leads to, since that is where the packets go.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    // Multicast is "global" in the registry but never an HTTP server.
    Ipv4Network::from(ip).is_global() && !ip.is_multicast()
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let network = Ipv6Network::from(ip);
    network.is_unicast_global()
        && !network.is_documentation()
        // Local-use NAT64 (RFC 8215) translates to whatever the operator
        // chose, the private network included.
        && !(ip.segments()[0] == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 0x0001)
}

/// The IPv4 address an IPv6 one embeds, for the forms that route to it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(low),
        // 64:ff9b::a.b.c.d, the well-known NAT64 prefix (RFC 6052)
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 2002:aabb:ccdd::/48, 6to4 (RFC 3056)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        // 2001:0::/32, Teredo (RFC 4380): the client's address, inverted
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(low))),
        _ => None,
    }
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
            "198.18.0.1", // benchmarking, 198.18.0.0/15
            "198.19.255.254",
            "240.0.0.1", // reserved
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.7", // documentation
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",                           // IPv4-compatible
            "64:ff9b::a9fe:a9fe",                   // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b:1::1",                         // local-use NAT64
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:a00:1::",                         // 6to4 of 10.0.0.1
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo of 10.0.0.1
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101", // NAT64 of 1.1.1.1
            "2002:101:101::1",  // 6to4 of 1.1.1.1
            "::ffff:8.8.8.8",
        ] {
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
