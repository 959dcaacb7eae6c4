//! The key format: `opg_` (live) or `opg_test_` (test) + 32 random base62 characters + 6 base62 characters of
//! the CRC32 of everything before them. The checksum lets the gateway refuse typos and forgeries without
//! touching storage; the prefix tells a test key at a glance (base62 has no `_`, so no live key reads
//! `opg_test_`).

use opgate_core::{Mode, API_KEY_PREFIX as PREFIX};
/// The prefix of a test key.
pub const TEST_PREFIX: &str = "opg_test_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// Length of every well-formed live key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Length of every well-formed test key.
pub const TEST_KEY_LEN: usize = TEST_PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;

fn prefix(mode: Mode) -> &'static str {
    match mode {
        Mode::Live => PREFIX,
        Mode::Test => TEST_PREFIX,
    }
}
/// Characters of the key shown in metadata to recognise it.
pub const DISPLAY_PREFIX_LEN: usize = 12;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a token is not a well-formed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Wrong prefix, length or alphabet.
    #[error("the API key is malformed")]
    Malformed,
    /// Well formed, but the checksum does not match.
    #[error("the API key's checksum does not match")]
    BadChecksum,
}

/// A new random key of `mode` from the operating system's CSPRNG.
pub fn generate(mode: Mode) -> String {
    let mut key = String::with_capacity(TEST_KEY_LEN);
    key.push_str(prefix(mode));
    let mut filled = 0;
    while filled < RANDOM_LEN {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).expect("the OS random source failed");
        // Rejection sampling: 248 = 4 * 62, so accepted bytes map uniformly onto the alphabet.
        for b in buf.into_iter().filter(|&b| b < 248) {
            if filled == RANDOM_LEN {
                break;
            }
            key.push(BASE62[(b % 62) as usize] as char);
            filled += 1;
        }
    }
    key.push_str(&checksum(&key));
    key
}

/// Checks prefix, length, alphabet and checksum; the key's mode, read from its prefix.
pub fn check(token: &str) -> Result<Mode, TokenError> {
    let mode = if token.starts_with(TEST_PREFIX) {
        Mode::Test
    } else {
        Mode::Live
    };
    let (prefix, len) = (prefix(mode), prefix(mode).len() + RANDOM_LEN + CHECKSUM_LEN);
    let bytes = token.as_bytes();
    if bytes.len() != len
        || !token.starts_with(prefix)
        || !bytes[prefix.len()..].iter().all(u8::is_ascii_alphanumeric)
    {
        return Err(TokenError::Malformed);
    }
    let (body, sum) = token.split_at(len - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(TokenError::BadChecksum);
    }
    Ok(mode)
}

/// The shown part of a key, e.g. `opg_3fA9xQ2b`.
pub fn display_prefix(key: &str) -> &str {
    &key[..DISPLAY_PREFIX_LEN.min(key.len())]
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_check_and_differ() {
        let a = generate(Mode::Live);
        let b = generate(Mode::Live);
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.starts_with("opg_") && !a.starts_with(TEST_PREFIX));
        assert_ne!(a, b);
        assert_eq!(check(&a), Ok(Mode::Live));
        let t = generate(Mode::Test);
        assert_eq!(t.len(), TEST_KEY_LEN);
        assert!(t.starts_with("opg_test_"));
        assert_eq!(check(&t), Ok(Mode::Test));
    }

    #[test]
    fn a_test_key_cannot_pass_for_a_live_one_or_back() {
        let t = generate(Mode::Test);
        // The test prefix stripped to `opg_`: a live key's shape, but the checksum covers the prefix.
        let stripped = format!("opg_{}", &t[TEST_PREFIX.len()..]);
        assert_eq!(check(&stripped), Err(TokenError::BadChecksum));
        let live = generate(Mode::Live);
        let dressed = format!("opg_test_{}", &live[4..]);
        assert_eq!(check(&dressed), Err(TokenError::BadChecksum));
    }

    #[test]
    fn forged_truncated_and_foreign_tokens_fail() {
        let key = generate(Mode::Live);
        let mut forged = key.clone().into_bytes();
        let i = 10;
        forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            check(std::str::from_utf8(&forged).unwrap()),
            Err(TokenError::BadChecksum)
        );
        assert_eq!(check(&key[..KEY_LEN - 1]), Err(TokenError::Malformed));
        assert_eq!(
            check(&format!("sk_{}", &key[3..])),
            Err(TokenError::Malformed)
        );
        assert_eq!(check(&key.replace('_', "-")), Err(TokenError::Malformed));
        assert_eq!(check(""), Err(TokenError::Malformed));
        let mut non_ascii = key[..KEY_LEN - 2].to_string();
        non_ascii.push('é');
        assert_eq!(check(&non_ascii), Err(TokenError::Malformed));
    }
}
