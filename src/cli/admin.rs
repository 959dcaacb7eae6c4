//! `opgate admin ...`: offline administration of a data directory, with or without a server running on it
//! (a running server learns of revocations through the key change log).

use opgate::auth::NewSession;
use opgate::keys::KeySpec;
use opgate::BoxError;

use crate::{CreateKeyArgs, MintSessionArgs, RevokeKeyArgs, SeedKeysArgs};

/// `opgate admin revoke-key KEY_ID`: revokes a key of any organization.
pub(crate) async fn revoke_key(args: RevokeKeyArgs) -> Result<(), BoxError> {
    let data = args.data.open().await?;
    let key = opgate::store::KeyStore::find_key(&*data.store, &args.key_id)
        .await?
        .ok_or_else(|| format!("no API key `{}` in this data directory", args.key_id))?;
    let now = opgate::core::Timestamp::now().unix();
    let scope = opgate::store::Scope {
        org_id: key.org_id.clone(),
        mode: key.mode,
        workspace_id: None,
    };
    opgate::store::KeyStore::revoke_key(&*data.store, &scope, &key.id, now).await?;
    data.store.close().await;
    eprintln!("revoked {} (organization {})", key.id, key.org_id);
    Ok(())
}

/// `opgate admin create-key`: mints an organization-wide admin key and prints only its secret.
pub(crate) async fn create_key(args: CreateKeyArgs) -> Result<(), BoxError> {
    validate_scopes(&args.permissions, args.config.as_deref())?;
    validate_org(&args.org)?;
    let data = args.data.open().await?;
    let spec = KeySpec {
        permissions: args.permissions,
        rate_limit: args.rate_limit,
        allowed_ips: args.allowed_ips,
        mode: if args.test {
            opgate::core::Mode::Test
        } else {
            opgate::core::Mode::Live
        },
        expires_at: args.expires_at.or_else(|| {
            let days = i64::from(args.expires_in_days?);
            Some(opgate::core::Timestamp(
                opgate::core::Timestamp::now().unix() + days * 86_400,
            ))
        }),
        ..KeySpec::admin(&args.org, &args.name, "cli")
    };
    let (secret, _) = data.keys.mint(spec).await?;
    data.store.close().await;
    println!("{secret}");
    Ok(())
}

/// `opgate admin mint-session`: signs a session token and prints only the token.
pub(crate) fn mint_session(args: MintSessionArgs) -> Result<(), BoxError> {
    let scopes: Vec<String> = args
        .scopes
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    validate_scopes(&scopes, args.config.as_deref())?;
    validate_org(&args.org)?;
    let settings = args.data.session_settings(args.issuer, args.audience);
    let config = opgate::session_config(&args.data.data_dir, &settings)?;
    let token = config.mint(&NewSession {
        sub: args.sub,
        org: args.org,
        scopes,
        ttl_seconds: args.ttl,
        mode: if args.test {
            opgate::core::Mode::Test
        } else {
            opgate::core::Mode::Live
        },
    })?;
    // Printed deliberately, alone on stdout (for `TOKEN=$(opgate admin mint-session ...)`); never logged.
    println!("{token}");
    Ok(())
}

/// `opgate admin seed-keys`: inserts many keys in one transaction (fixtures).
pub(crate) async fn seed_keys(args: SeedKeysArgs) -> Result<(), BoxError> {
    validate_scopes(&args.permissions, None)?;
    let data = args.data.open().await?;
    const CHUNK: usize = 10_000;
    let mut done = 0;
    while done < args.count {
        let n = CHUNK.min(args.count - done);
        let specs = (done..done + n)
            .map(|i| KeySpec {
                permissions: args.permissions.clone(),
                ..KeySpec::admin(&args.org, &format!("seed-{i}"), "cli")
            })
            .collect();
        data.keys.mint_many(specs).await?;
        done += n;
    }
    data.store.close().await;
    eprintln!("seeded {done} keys into org {}", args.org);
    Ok(())
}

/// Every scope must be one some operation requires (or a wildcard over one): a built-in, or an upstream
/// operation of `config` when given. Anything else would silently grant nothing.
fn validate_scopes(scopes: &[String], config: Option<&std::path::Path>) -> Result<(), BoxError> {
    let mut registry = opgate::describe_registry()?;
    if let Some(path) = config {
        let upstreams =
            opgate::upstream::load_description(path).map_err(|problems| problems.join("\n"))?;
        for upstream in upstreams {
            registry.register_dynamic(upstream.operation()?)?;
        }
    }
    let catalog = registry.scopes();
    for scope in scopes {
        catalog.check(scope)?;
    }
    Ok(())
}

fn validate_org(org: &str) -> Result<(), BoxError> {
    if opgate::core::validate::is_org_id(org) {
        Ok(())
    } else {
        Err(format!(
            "--org: `{org}` is not an organization id: 1–128 letters, digits, `.`, `_` or `-`, starting with a \
             letter or digit"
        )
        .into())
    }
}
