//! Opening arbitrary bytes as a sealed chunk must give an error or the plaintext, never a panic
//! or an unbounded allocation. Half the inputs start from a valid sealed chunk with bytes
//! flipped, so the fuzzer reaches past the header checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strongbox_core::chunk::{Opener, Sealer};
use strongbox_core::keys::FleetKey;

fuzz_target!(|data: &[u8]| {
    let keys = FleetKey::from_bytes(1, [3u8; 32]).service_keys("fuzz");
    let mut opener = Opener::new().expect("opener");
    let id = keys.chunk_id(b"fuzz");
    let _ = opener.open(&keys, &id, data);

    if let Some((&flip, rest)) = data.split_first() {
        let mut sealed = Sealer::new(Some(1))
            .expect("sealer")
            .seal(&keys, rest)
            .expect("seal");
        let at = usize::from(flip) * 7 % sealed.bytes.len();
        sealed.bytes[at] ^= flip | 1;
        assert!(
            opener.open(&keys, &sealed.id, &sealed.bytes).is_err(),
            "a flipped byte was not detected"
        );
    }
});
