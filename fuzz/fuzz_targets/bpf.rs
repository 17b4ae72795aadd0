//! Classic BPF from untrusted input, as the endpoint's `bpf=` gets it: arbitrary bytes
//! split into a program and a packet. The program is read both as bytecode text (lossy
//! UTF-8, through `Bpf::from_bytecode`) and as raw 8-byte instructions (`Bpf::new`); a
//! program accepted either way runs over the packet. Nothing panics, every run ends
//! (jumps only go forward), an accepted program reads back from its own bytecode, and a
//! run gives the same answer twice.
//!
//! Input: a u16 (little-endian) length of the program part, the program, the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcapcast_core::bpf::Instruction;
use pcapcast_core::Bpf;

fn check(bpf: &Bpf, packet: &[u8]) {
    assert_eq!(
        Bpf::from_bytecode(&bpf.to_string()).as_ref().ok(),
        Some(bpf),
        "an accepted program reads back"
    );
    let len = packet.len() as u32;
    for wire_len in [len, len.wrapping_mul(3), u32::MAX] {
        let verdict = bpf.run(packet, wire_len);
        assert_eq!(bpf.run(packet, wire_len), verdict);
    }
    let _ = bpf.matches(packet);
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (program, packet) = rest.split_at(split);

    if let Ok(bpf) = Bpf::from_bytecode(&String::from_utf8_lossy(program)) {
        check(&bpf, packet);
    }

    let instructions: Vec<Instruction> = program
        .chunks_exact(8)
        .map(|i| Instruction {
            code: u16::from_le_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect();
    if let Ok(bpf) = Bpf::new(instructions.clone()) {
        assert_eq!(bpf.instructions(), &instructions[..]);
        check(&bpf, packet);
    }
});
