//! Lock values: the proof of ownership stored in each key.

use fred::types::Value;

/// Random bytes per lock value: 128 bits, as Redlock asks.
const VALUE_BYTES: usize = 16;

/// A fresh lock value: 128 bits from the OS CSPRNG, hex-encoded. Each
/// attempt draws its own, so a late answer to an old attempt can never be
/// mistaken for the current one.
pub(crate) fn fresh() -> Value {
    let mut bytes = [0u8; VALUE_BYTES];
    // The OS random source does not fail on supported platforms once the
    // process runs; if it ever does, a lock must not go ahead with a guessable value.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    let mut hex = [0u8; VALUE_BYTES * 2];
    for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    // Owned by the one shared allocation its clones (one per node) point to.
    Value::Bytes(fred::bytes::Bytes::from_owner(hex))
}

/// A random duration in `[0, 2 * span]`, for jittered retries.
pub(crate) fn jitter_nanos(span_nanos: u64) -> u64 {
    if span_nanos == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return span_nanos;
    }
    u64::from_le_bytes(bytes) % (2 * span_nanos + 1)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_128_bit_hex_and_distinct() {
        let a = super::fresh();
        let b = super::fresh();
        let a = a.as_str().unwrap().into_owned();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b.as_str().unwrap());
    }
}
