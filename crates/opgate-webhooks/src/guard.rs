//! Outbound requests must not become a way into the operator's network. Every delivery resolves its host
//! itself, refuses loopback, private, link-local, shared, multicast and other special addresses (unless
//! `--allow-private-webhooks`), and connects only to the addresses it vetted: the HTTP client never resolves
//! the name again, so a second DNS answer cannot point it elsewhere. Plain HTTP goes to loopback only, unless
//! `--allow-insecure-webhooks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// What outbound requests may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allow loopback, private and other special addresses (development and tests).
    pub allow_private: bool,
    /// Allow plain `http://` to addresses other than loopback (development only).
    pub allow_insecure: bool,
}

/// Resolves a host name to addresses (the system's resolver; tests put their own map in).
#[async_trait::async_trait]
pub trait NameResolver: Send + Sync + 'static {
    /// The addresses of `host` for `port`.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl NameResolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Whether `ip` is one an outbound request may reach without `allow_private`: a public unicast address.
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
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata included
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

/// IPv6: only global unicast (2000::/3) is reachable, minus the ranges that are not really global or that
/// carry an IPv4 address inside (6to4 and Teredo are judged by that address; the others are refused).
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if (seg[0] & 0xe000) != 0x2000 {
        // Everything outside 2000::/3: loopback, unspecified, IPv4-compatible/translated (::/8 and
        // ::ffff:0:0:0/96), NAT64 (64:ff9b::/96), unique local, link-local, multicast, 5f00::/16 (SRv6 SIDs).
        return false;
    }
    match seg[0] {
        // 6to4: 2002:AABB:CCDD::/48 embeds IPv4 AA.BB.CC.DD.
        0x2002 => is_public_v4(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        )),
        0x2001 => match seg[1] {
            // Teredo (2001::/32): tunnels to an obfuscated IPv4 address; refused.
            0x0000 => false,
            // Benchmarking (2001:2::/48), ORCHID (2001:10::/28, 2001:20::/28), documentation (2001:db8::/32).
            0x0002 => false,
            0x0010..=0x002f => false,
            0x0db8 => false,
            _ => true,
        },
        // Documentation (3fff::/20).
        0x3fff => (seg[1] & 0xf000) != 0,
        _ => true,
    }
}

/// Whether `ip` is a loopback address (plain HTTP is allowed there).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A URL an endpoint may have, checked when it is set: `http(s)`, a host, no credentials, and, when the host
/// is an address, one the policy allows. A host name is checked again at each delivery, after resolution.
pub fn check_url(url: &str, policy: Policy) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url: not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("url: must be https:// (or http:// to loopback)".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url: must not carry credentials".into());
    }
    let Some(host) = parsed.host() else {
        return Err("url: must name a host".into());
    };
    if parsed.fragment().is_some() {
        return Err("url: must not have a fragment".into());
    }
    let literal = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal {
        vet(&parsed, &[ip], policy)?;
    } else if parsed.scheme() == "http" && !policy.allow_insecure {
        // A name might resolve to loopback; whether it does is only known at delivery time.
        if !policy.allow_private {
            return Err(
                "url: plain http:// is only for loopback (or start the server with --allow-insecure-webhooks)"
                    .into(),
            );
        }
    }
    Ok(parsed)
}

/// Whether a request to `url` may go to `addrs` (all of them): each allowed by the policy, and plain HTTP only
/// to loopback unless insecure is allowed.
fn vet(url: &reqwest::Url, addrs: &[IpAddr], policy: Policy) -> Result<(), String> {
    if let Some(ip) = addrs
        .iter()
        .find(|ip| !policy.allow_private && !is_public(**ip))
    {
        return Err(format!(
            "url: {ip} is a loopback, private or otherwise special address; refused (--allow-private-webhooks \
             allows it)"
        ));
    }
    if url.scheme() == "http" && !policy.allow_insecure && !addrs.iter().all(|ip| is_loopback(*ip))
    {
        return Err(
            "url: plain http:// is only for loopback (or start the server with --allow-insecure-webhooks)".into(),
        );
    }
    Ok(())
}

/// The addresses a delivery to `url` may connect to, resolved and vetted now.
pub async fn vetted_addresses(
    url: &reqwest::Url,
    policy: Policy,
    resolver: &Arc<dyn NameResolver>,
) -> Result<Vec<SocketAddr>, String> {
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "url: no port".to_owned())?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
        Some(url::Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
        Some(url::Host::Domain(name)) => resolver
            .resolve(name, port)
            .await
            .map_err(|e| format!("resolving {name} failed: {e}"))?,
        None => return Err("url: must name a host".into()),
    };
    if addrs.is_empty() {
        return Err("the host resolves to no address".into());
    }
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    vet(url, &ips, policy)?;
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_and_public_ones_allowed() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::",
            "::ffff:0:127.0.0.1",
            "::ffff:0:7f00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "192.88.99.1",
            "4000::1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "2a00:1450:4001::1",
            "3fff:1000::1",
        ] {
            assert!(is_public(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn urls_are_checked_when_set() {
        let strict = Policy::default();
        assert!(check_url("https://hooks.example.com/x", strict).is_ok());
        for (bad, why) in [
            ("ftp://example.com", "https://"),
            ("https://user:pw@example.com", "credentials"),
            ("https://127.0.0.1/x", "refused"),
            ("https://[::1]/x", "refused"),
            ("https://169.254.169.254/latest", "refused"),
            ("http://example.com", "only for loopback"),
            ("not a url", "not a URL"),
        ] {
            let err = check_url(bad, strict).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let private = Policy {
            allow_private: true,
            allow_insecure: false,
        };
        assert!(check_url("http://127.0.0.1:8080/hook", private).is_ok());
        assert!(check_url("http://10.0.0.1/hook", private)
            .unwrap_err()
            .contains("only for loopback"));
    }

    /// A resolver that maps names without asking anyone: a name pointing at a refused address is refused
    /// before any connection.
    struct Map(Vec<(&'static str, IpAddr)>);

    #[async_trait::async_trait]
    impl NameResolver for Map {
        async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            Ok(self
                .0
                .iter()
                .filter(|(h, _)| *h == host)
                .map(|(_, ip)| SocketAddr::new(*ip, port))
                .collect())
        }
    }

    #[tokio::test]
    async fn names_are_vetted_after_resolution() {
        let resolver: Arc<dyn NameResolver> = Arc::new(Map(vec![
            ("metadata.test", "169.254.169.254".parse().unwrap()),
            ("intranet.test", "10.0.0.7".parse().unwrap()),
            ("mixed.test", "8.8.8.8".parse().unwrap()),
            ("mixed.test", "192.168.0.1".parse().unwrap()),
            ("public.test", "8.8.4.4".parse().unwrap()),
        ]));
        let strict = Policy::default();
        for host in ["metadata.test", "intranet.test", "mixed.test"] {
            let url = reqwest::Url::parse(&format!("https://{host}/hook")).unwrap();
            let err = vetted_addresses(&url, strict, &resolver).await.unwrap_err();
            assert!(err.contains("refused"), "{host}: {err}");
        }
        let url = reqwest::Url::parse("https://public.test/hook").unwrap();
        assert_eq!(
            vetted_addresses(&url, strict, &resolver).await.unwrap(),
            ["8.8.4.4:443".parse::<SocketAddr>().unwrap()]
        );
        let nowhere = reqwest::Url::parse("https://nowhere.test/hook").unwrap();
        assert!(vetted_addresses(&nowhere, strict, &resolver)
            .await
            .unwrap_err()
            .contains("no address"));
    }
}
