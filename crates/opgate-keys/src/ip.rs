//! Allow-lists of client addresses: single addresses and CIDR ranges, IPv4 and IPv6.

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses one allow-list entry: an address (`203.0.113.7`, `::1`) or a range (`10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_allowed(entry: &str) -> Result<IpNet, ipnet::AddrParseError> {
    match entry.parse::<IpAddr>() {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(_) => entry.parse::<IpNet>(),
    }
}

/// Whether `client` is inside any entry; an empty list allows every address. IPv4-mapped IPv6 clients
/// (`::ffff:a.b.c.d`) match IPv4 entries.
pub fn allows(entries: &[IpNet], client: Option<IpAddr>) -> bool {
    if entries.is_empty() {
        return true;
    }
    let Some(client) = client else { return false };
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    entries.iter().any(|net| net.contains(&client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ranges() {
        let list: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
            .iter()
            .map(|e| parse_allowed(e).unwrap())
            .collect();
        let ok = |s: &str| allows(&list, Some(s.parse().unwrap()));
        assert!(ok("10.1.2.3"));
        assert!(ok("192.0.2.7"));
        assert!(!ok("192.0.2.8"));
        assert!(ok("2001:db8::1"));
        assert!(!ok("2001:db9::1"));
        assert!(ok("::ffff:10.9.9.9"));
        assert!(allows(&[], None));
        assert!(!allows(&list, None));
        assert!(parse_allowed("10.0.0.0/33").is_err());
        assert!(parse_allowed("not-an-ip").is_err());
    }
}
