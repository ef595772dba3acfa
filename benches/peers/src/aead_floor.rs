//! The AEAD floor of TLS's cost: the CPU that sealing and opening a call's
//! payload bytes takes by itself, measured in the bench's own run with ring's
//! AES-128-GCM (the fastest AEAD ring has on hardware with AES instructions,
//! and the suite ringrpc's TLS helpers prefer).
//!
//! Any TLS 1.3 stack must at least encrypt a call's request and reply once and
//! decrypt each once, so their cost over the payload bytes alone is a strict
//! lower bound on the CPU per call TLS adds (records also carry frame headers,
//! a tag and a header of their own, and are copied): `(plain + floor) / plain`
//! is the smallest TLS-over-plaintext ratio any implementation could show for
//! a stack that spends `plain` per call without TLS. The bench prints it next
//! to the measured costs (`TLS floor` lines).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

/// The largest TLS record's plaintext (RFC 8446 §5.1): records this size
/// spread the per-record work thinnest.
const FULL_RECORD: usize = 1 << 14;

/// How long each measurement seals and opens.
const SPELL: Duration = Duration::from_millis(30);

/// Microseconds of CPU to seal and open, once each, every payload byte of one
/// call (request and reply, `payload` bytes each) at `in_flight` calls in
/// flight: with one call in flight each message is a record of its own; with
/// more, records carry many messages and the bytes go at full-record speed.
/// Best of three spells (a floor, not a typical figure).
pub fn per_call_us(in_flight: usize, payload: usize) -> f64 {
    let payload = payload.max(1);
    let best = |record: usize| {
        (0..3)
            .map(|_| seal_open_ns(record))
            .fold(f64::INFINITY, f64::min)
    };
    let ns = if in_flight <= 1 {
        2.0 * best(payload)
    } else {
        2.0 * payload as f64 * best(FULL_RECORD) / FULL_RECORD as f64
    };
    ns / 1e3
}

/// Nanoseconds to seal one `len`-byte record and open it again.
fn seal_open_ns(len: usize) -> f64 {
    let key = match UnboundKey::new(&AES_128_GCM, &[0x5A; 16]) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => return f64::NAN,
    };
    let mut record = vec![0xA5u8; len + AES_128_GCM.tag_len()];
    let (start, mut seq, mut rounds) = (Instant::now(), 0u64, 0u32);
    while start.elapsed() < SPELL {
        for _ in 0..16 {
            seq += 1;
            let body = &mut record[..len];
            let sealed = key.seal_in_place_separate_tag(nonce(seq), Aad::empty(), body);
            let Ok(tag) = sealed else {
                return f64::NAN;
            };
            record[len..].copy_from_slice(tag.as_ref());
            if key
                .open_in_place(nonce(seq), Aad::empty(), &mut record)
                .is_err()
            {
                return f64::NAN;
            }
            black_box(&record);
        }
        rounds += 16;
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds)
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_grows_with_the_payload_and_is_positive() {
        let small = per_call_us(128, 64);
        let large = per_call_us(128, 4096);
        assert!(small > 0.0 && small.is_finite(), "{small}");
        assert!(large > 10.0 * small, "4 KiB {large} vs 64 B {small}");
        let alone = per_call_us(1, 64);
        assert!(
            alone > small,
            "a record per message costs more: {alone} vs {small}"
        );
    }
}
