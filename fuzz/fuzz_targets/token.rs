//! Token parsing: any bytes as a bearer token must give a verdict, never a panic. API-key format and checksum
//! checks, the router's classification, and session-token verification (header parsing, signature, claims).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opgate_auth::{classify, SessionConfig, TokenKind};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let _ = opgate_keys::token::check(token);
    let config = SessionConfig::new(&[7u8; 32], Some("issuer".into()), None).expect("a 32-byte secret");
    if classify(token) == TokenKind::Session {
        let verdict = config.verify(token);
        // A forged token is never accepted.
        assert!(verdict.is_err(), "an unsigned fuzz input verified as a session");
    }
});
