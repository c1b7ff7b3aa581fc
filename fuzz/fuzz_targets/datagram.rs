//! Everything a datagram goes through before it can touch the store: opening (with and
//! without a keyring), decoding and validation, and reassembly of chunks.
#![no_main]

use diskd::peer::keys::Keyring;
use diskd::peer::reassembly::Reassembly;
use diskd::peer::wire::{self, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keyed = Keyring::from_keys(&[[7u8; 32]]);
    let _ = keyed.open(data);
    let plain = Keyring::default();
    if let Ok((bytes, _)) = plain.open(data) {
        if let Ok(env) = wire::decode(&bytes) {
            // Anything that decodes must re-encode to something that decodes the same.
            assert_eq!(wire::decode(&wire::encode(&env)).as_ref(), Ok(&env));
            if let Body::Inventory(chunk) = env.body {
                let mut r = Reassembly::default();
                let _ = r.add(&env.node_id, env.boot, chunk, std::time::Instant::now());
            }
        }
    }
});
