//! A key never grants more than its granter has: not more permissions (checked with `scope::covers`), and
//! not fewer restrictions either. A rate-limited caller cannot mint or make an unlimited key, a caller fenced to
//! some addresses cannot mint or open a key outside the fence, and a caller that expires cannot mint a key that
//! outlives it. Omitted settings inherit the caller's restriction.

use ipnet::IpNet;
use opgate_core::{Error, Principal, Timestamp};

use crate::ip;

/// The rate limit of a new key: the requested one, within the caller's; none requested inherits the caller's.
pub(crate) fn rate_limit(caller: &Principal, requested: Option<u32>) -> Result<Option<u32>, Error> {
    match (caller.rate_limit, requested) {
        (None, requested) => Ok(requested),
        (Some(own), None) => Ok(Some(own)),
        (Some(own), Some(r)) if r <= own => Ok(Some(r)),
        (Some(own), Some(r)) => Err(Error::permission_denied(format!(
            "rate_limit: {r} per minute exceeds the caller's own limit of {own}"
        ))),
    }
}

/// A change of rate limit by `caller`: `Some(None)` (clearing it) or a higher limit than the caller's is refused.
pub(crate) fn rate_limit_change(
    caller: &Principal,
    change: Option<Option<u32>>,
) -> Result<(), Error> {
    match (caller.rate_limit, change) {
        (_, None) | (None, _) => Ok(()),
        (Some(own), Some(None)) => Err(Error::permission_denied(format!(
            "rate_limit: the caller is limited to {own} per minute and cannot lift a key's limit"
        ))),
        (Some(_), Some(r)) => rate_limit(caller, r).map(drop),
    }
}

fn fence(caller: &Principal) -> Vec<IpNet> {
    caller
        .allowed_ips
        .iter()
        .filter_map(|e| ip::parse_allowed(e).ok())
        .collect()
}

/// The allow-list of a new key: every requested entry inside the caller's fence; none requested inherits it.
pub(crate) fn allowed_ips(
    caller: &Principal,
    requested: Option<Vec<String>>,
) -> Result<Vec<String>, Error> {
    let own = fence(caller);
    match requested {
        _ if own.is_empty() => Ok(requested.unwrap_or_default()),
        None => Ok(caller.allowed_ips.clone()),
        Some(list) if list.is_empty() => Err(outside("an empty allow-list (any address)")),
        Some(list) => {
            for entry in &list {
                let net = ip::parse_allowed(entry).map_err(|_| outside(entry))?;
                if !own.iter().any(|f| f.contains(&net)) {
                    return Err(outside(entry));
                }
            }
            Ok(list)
        }
    }
}

/// A change of allow-list by `caller`: clearing it, or entries outside the caller's fence, are refused.
pub(crate) fn allowed_ips_change(
    caller: &Principal,
    change: Option<&Option<Vec<String>>>,
) -> Result<(), Error> {
    match change {
        None => Ok(()),
        Some(None) => allowed_ips(caller, Some(Vec::new())).map(drop),
        Some(Some(list)) => allowed_ips(caller, Some(list.clone())).map(drop),
    }
}

fn outside(entry: &str) -> Error {
    Error::permission_denied(format!(
        "allowed_ips: `{entry}` is outside the caller's own allowed addresses"
    ))
}

/// The expiry of a new key: the requested one, no later than the caller's; none requested inherits it.
pub(crate) fn expires_at(caller: &Principal, requested: Option<i64>) -> Result<Option<i64>, Error> {
    match (caller.expires_at, requested) {
        (None, requested) => Ok(requested),
        (Some(own), None) => Ok(Some(own)),
        (Some(own), Some(r)) if r <= own => Ok(Some(r)),
        (Some(own), Some(_)) => Err(Error::permission_denied(format!(
            "expires_in_days: the key would outlive the caller, which expires at {}",
            Timestamp(own).to_rfc3339()
        ))),
    }
}
