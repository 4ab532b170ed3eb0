//! Arbitrary bytes as a token, through the whole stateless verification path. Beyond "never
//! panics", it checks what must hold for every input: an oversized token is refused as such
//! before any parsing, and only a token signed by the ring's key can ever pass.
#![no_main]

use libfuzzer_sys::fuzz_target;
use support_access_fuzz::{EXPECTED_NOW, expected, keys};
use support_access_verify::{MAX_TOKEN_BYTES, Rejection, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    match verify(token, keys(), &expected(), EXPECTED_NOW) {
        Ok(claims) => {
            // Only the checked-in seed is signed by the fuzz key; whatever passes must be it.
            assert!(token.len() <= MAX_TOKEN_BYTES);
            assert_eq!(claims.iss, "support-access");
        }
        Err(rejection) => {
            if token.len() > MAX_TOKEN_BYTES {
                assert_eq!(rejection, Rejection::Oversized);
            }
        }
    }
});
