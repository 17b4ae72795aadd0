//! The default output is byte for byte what the Go original wrote, and
//! `Format::Tailscale` what Tailscale's current Go code writes.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Encoder, Format, Meta, Options, Path};

mod support;

struct Input {
    path: Path,
    when: std::time::SystemTime,
    data: Vec<u8>,
}

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn inputs() -> Vec<Input> {
    let text =
        std::fs::read_to_string(golden_dir().join("seed-basic.json")).expect("seed-basic.json");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let data: Vec<u8> = match input.get("data_hex") {
                Some(text) => hex(text.as_str().unwrap()),
                None => {
                    let generator = &input["data_generator"];
                    assert_eq!(generator["kind"], "mod");
                    let modulus = generator["modulus"].as_u64().unwrap();
                    (0..generator["len"].as_u64().unwrap())
                        .map(|i| (i % modulus) as u8)
                        .collect()
                }
            };
            assert_eq!(data.len() as u64, input["data_len"].as_u64().unwrap());
            Input {
                path: Path::from(input["path"].as_u64().unwrap() as u16),
                when: UNIX_EPOCH
                    + Duration::new(
                        input["unix_sec"].as_u64().unwrap(),
                        input["nanos"].as_u64().unwrap() as u32,
                    ),
                data,
            }
        })
        .collect()
}

/// The bytes the Go code wrote, from `tests/golden/`.
fn golden(name: &str) -> Vec<u8> {
    std::fs::read(golden_dir().join(name)).expect(name)
}

/// An output's whole stream, once its capture is closed.
fn drain(output: &mut pcapcast_core::Subscription) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some(bytes) = block_on(output.next()) {
        file.extend_from_slice(&bytes);
    }
    file
}

#[test]
fn capture_default_output_equals_the_go_original() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    for input in inputs() {
        capture.log_packet(input.path, input.when, &input.data);
    }
    capture.close();
    assert_eq!(drain(&mut output), golden("seed-basic.pcap"));
}

#[test]
fn encoder_alone_equals_the_go_original() {
    let encoder = Encoder::new(Options::default());
    let mut out = bytes::BytesMut::new();
    encoder.put_header(&mut out);
    for input in inputs() {
        encoder.put_record(&mut out, input.path, input.when, &input.data);
    }
    assert_eq!(&out[..], &golden("seed-basic.pcap")[..]);
}

#[test]
fn golden_file_parses_with_both_readers() {
    let bytes = golden("seed-basic.pcap");
    let file = support::parse(&bytes);
    assert_eq!(file, support::parse_with_pcap_file(&bytes));
    let expected = inputs();
    assert_eq!(file.records.len(), expected.len());
    for (record, input) in file.records.iter().zip(&expected) {
        assert_eq!(record.path, Some(u16::from(input.path)));
        assert_eq!(record.packet, input.data);
    }
}

/// The inputs of `tailscale-basic.json`, with their metadata.
fn tailscale_inputs() -> Vec<(Input, Meta)> {
    let text = std::fs::read_to_string(golden_dir().join("tailscale-basic.json"))
        .expect("tailscale-basic.json");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|input| {
            let m = &input["meta"];
            let addr = |key: &str| m[key].as_str().map(|a| a.parse::<SocketAddr>().unwrap());
            let mut meta = Meta::new();
            if m["did_snat"].as_bool().unwrap() {
                meta = meta.snat(addr("original_src").unwrap());
            }
            if m["did_dnat"].as_bool().unwrap() {
                meta = meta.dnat(addr("original_dst").unwrap());
            }
            let data = hex(input["packet_hex"].as_str().unwrap());
            assert_eq!(data.len() as u64, input["packet_len"].as_u64().unwrap());
            let input = Input {
                path: Path::from(input["path"].as_u64().unwrap() as u16),
                when: UNIX_EPOCH
                    + Duration::new(
                        input["unix_seconds"].as_u64().unwrap(),
                        input["nanoseconds"].as_u64().unwrap() as u32,
                    ),
                data,
            };
            (input, meta)
        })
        .collect()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn tailscale_format_equals_tailscales_current_code() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::new().format(Format::Tailscale));
    for (input, meta) in tailscale_inputs() {
        capture.log_packet_with(input.path, input.when, &input.data, &meta);
    }
    capture.close();
    assert_eq!(drain(&mut output), golden("tailscale-basic.pcap"));

    let encoder = Encoder::new(Options::new().format(Format::Tailscale));
    let mut out = bytes::BytesMut::new();
    encoder.put_header(&mut out);
    for (input, meta) in tailscale_inputs() {
        encoder.put_record_with(&mut out, input.path, input.when, &input.data, &meta);
    }
    assert_eq!(&out[..], &golden("tailscale-basic.pcap")[..]);
}

#[test]
fn the_seed_format_leaves_metadata_out() {
    let capture = Capture::new();
    let mut with = capture.subscribe(Options::default());
    for (input, meta) in tailscale_inputs() {
        capture.log_packet_with(input.path, input.when, &input.data, &meta);
    }
    let without = Capture::new();
    let mut plain = without.subscribe(Options::default());
    for (input, _) in tailscale_inputs() {
        without.log_packet(input.path, input.when, &input.data);
    }
    capture.close();
    without.close();
    assert_eq!(drain(&mut with), drain(&mut plain));
}
