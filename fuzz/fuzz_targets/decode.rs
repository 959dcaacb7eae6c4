//! The dispatcher's request decoding: any body for any operation input type must give a value or a clear
//! `invalid_argument`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opgate_core::{decode_input, Code};

fn check<T: serde::de::DeserializeOwned + garde::Validate<Context = ()> + 'static>(body: &[u8]) {
    if let Err(e) = decode_input::<T>(body) {
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(!e.message.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    use opgate_keys::types::*;
    check::<CreateKeyInput>(data);
    check::<ListKeysInput>(data);
    check::<UpdateKeyInput>(data);
    check::<RotateKeyInput>(data);
    check::<RevokeKeyInput>(data);
    check::<opgate_audit::ListAuditInput>(data);
});
