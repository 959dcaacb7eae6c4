//! Which address a request comes from. Only a trusted proxy may speak for its client: for a peer inside
//! `trusted_proxies`, `X-Forwarded-For` is read right to left and the first address that is not itself a
//! trusted proxy is the client (addresses further left could have been written by anyone).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Whether `addr` is one of the trusted proxies.
pub(crate) fn is_trusted(addr: IpAddr, proxies: &[IpNet]) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&addr))
}

/// The network a client address stands for when counting connections: an IPv4 address (or an IPv4-mapped IPv6
/// one) itself, an IPv6 address's /64, since one host commonly holds a whole /64.
pub(crate) fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
        v4 => v4,
    }
}

/// The client address of a request from `peer`.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if proxies.is_empty() || !is_trusted(peer, proxies) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        // An unparsable hop ends the chain: nothing to its left can be trusted either.
        let Ok(addr) = hop.parse::<IpAddr>() else {
            break;
        };
        client = addr;
        if !is_trusted(addr, proxies) {
            break;
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

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_peers_speak_for_clients() {
        let proxies: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let h = xff(&["203.0.113.9, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &proxies), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("192.0.2.1"), &h, &proxies),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &proxies),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["2001:db8::1"]), &proxies),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["1.2.3.4", "10.0.0.2"]), &proxies),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["garbage, 10.0.0.2"]), &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &[]),
            ip("127.0.0.1"),
            "no proxies configured"
        );
    }
}
