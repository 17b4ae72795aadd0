//! The framer the CLI reads a daemon's stream through, fed arbitrary bytes in
//! arbitrary pieces: it never panics, never hands out more bytes than it was given,
//! and after an error it keeps refusing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcapcast_core::framer::{Framer, Unit};

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut framer = Framer::new();
    let mut given = 0usize;
    let mut taken = 0usize;
    for piece in stream.chunks(step) {
        framer.push(piece);
        given += piece.len();
        loop {
            match framer.next_unit() {
                Ok(Some(Unit::Header(b) | Unit::Other(b) | Unit::Packet { bytes: b, .. })) => {
                    assert!(!b.is_empty());
                    taken += b.len();
                    assert!(taken + framer.buffered() <= given);
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(framer.next_unit().is_err(), "an error is final");
                    return;
                }
            }
        }
    }
});
