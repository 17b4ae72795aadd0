//! What an output's BPF filter costs its reader per packet: `Bpf::run` over an IPv4 TCP
//! packet of 64 and 1500 bytes that the program accepts and one it rejects, against a
//! floor in the same run: one pass that reads every byte of the packet (a sum), and a
//! copy of it. The datapath never runs the filter (see `capture_filtered` in the
//! `log_packet` bench).
//!
//! `cargo bench -p pcapcast-core --bench bpf`
//!
//! The programs are what `tcpdump -r RAW.pcap -ddd EXPR` prints (tcpdump 4.99.3,
//! libpcap 1.10.3) for an empty `LINKTYPE_RAW` file, joined by commas; the
//! `bpf_libpcap` test checks `tcp port 80` against libpcap's own compiler.

use std::hint::black_box;

use divan::Bencher;
use pcapcast_core::Bpf;

fn main() {
    divan::main();
}

const SIZES: [usize; 2] = [64, 1500];

/// `tcp port 80`: 23 instructions; an IPv4 TCP packet runs 16 of them, to either verdict.
const TCP_80: &str = "23,48 0 0 0,84 0 0 240,21 0 6 96,48 0 0 6,21 0 17 6,40 0 0 40,21 14 0 80,40 0 0 42,21 12 13 80,48 0 0 0,84 0 0 240,21 0 10 64,48 0 0 9,21 0 8 6,40 0 0 6,69 6 0 8191,177 0 0 0,72 0 0 0,21 2 0 80,72 0 0 2,21 0 1 80,6 0 0 65535,6 0 0 0";

/// `(tcp port 80 or udp port 53) and host 10.0.0.1`: 29 instructions; the packets here
/// (TCP to port 80, from 10.0.0.1 or from 10.0.0.9) run 19 and 20 of them.
const COMBINED: &str = "29,48 0 0 0,84 0 0 240,21 25 0 96,48 0 0 0,84 0 0 240,21 0 22 64,48 0 0 9,21 0 7 6,40 0 0 6,69 18 0 8191,177 0 0 0,72 0 0 0,21 10 0 80,72 0 0 2,21 8 13 80,21 0 12 17,40 0 0 6,69 10 0 8191,177 0 0 0,72 0 0 0,21 2 0 53,72 0 0 2,21 0 5 53,32 0 0 12,21 2 0 167772161,32 0 0 16,21 0 1 167772161,6 0 0 65535,6 0 0 0";

/// An IPv4 TCP packet of `size` bytes from `src`:1000 to 10.0.0.2:`dst_port`.
fn tcp_packet(size: usize, src: [u8; 4], dst_port: u16) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dst_port.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x18; // PSH ACK
    for (i, byte) in p.iter_mut().enumerate().skip(40) {
        *byte = i as u8;
    }
    p
}

fn run(bencher: Bencher, program: &str, packet: Vec<u8>, accepts: bool) {
    let bpf = Bpf::from_bytecode(program).unwrap();
    assert_eq!(bpf.matches(&packet), accepts, "{program}");
    let len = packet.len() as u32;
    bencher
        .counter(divan::counter::BytesCount::new(packet.len()))
        .bench_local(|| bpf.run(black_box(&packet), black_box(len)));
}

/// `tcp port 80`, a packet to port 80: accepted.
#[divan::bench(args = SIZES)]
fn tcp80_accept(bencher: Bencher, size: usize) {
    run(bencher, TCP_80, tcp_packet(size, [10, 0, 0, 1], 80), true);
}

/// `tcp port 80`, a packet to port 443: rejected.
#[divan::bench(args = SIZES)]
fn tcp80_reject(bencher: Bencher, size: usize) {
    run(bencher, TCP_80, tcp_packet(size, [10, 0, 0, 1], 443), false);
}

/// The 29-instruction program, a packet from 10.0.0.1 to port 80: accepted.
#[divan::bench(args = SIZES)]
fn combined29_accept(bencher: Bencher, size: usize) {
    run(bencher, COMBINED, tcp_packet(size, [10, 0, 0, 1], 80), true);
}

/// The 29-instruction program, a packet from 10.0.0.9 to port 80: rejected at the last
/// test.
#[divan::bench(args = SIZES)]
fn combined29_reject(bencher: Bencher, size: usize) {
    run(
        bencher,
        COMBINED,
        tcp_packet(size, [10, 0, 0, 9], 80),
        false,
    );
}

/// The floor: one pass reading every byte of the packet, summed.
#[divan::bench(args = SIZES)]
fn floor_sum(bencher: Bencher, size: usize) {
    let packet = tcp_packet(size, [10, 0, 0, 1], 80);
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench_local(|| {
            black_box(&packet)
                .iter()
                .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
        });
}

/// The floor: the packet copied into a reused buffer.
#[divan::bench(args = SIZES)]
fn floor_copy(bencher: Bencher, size: usize) {
    let packet = tcp_packet(size, [10, 0, 0, 1], 80);
    let mut buffer = vec![0u8; size];
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench_local(|| {
            buffer.copy_from_slice(black_box(&packet));
            black_box(&buffer);
        });
}
