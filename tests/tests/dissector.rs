//! The Wireshark dissector `dissector/pcapcast.lua` under real tshark: both framings
//! (seed and Tailscale's current one), the NAT addresses of Tailscale's framing, disco
//! frames in both framings, and odd records that must never raise a Lua error.
//!
//! tshark must be installed: without it these tests fail, they do not skip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use pcapcast_core::disco::{DiscoFrame, DERP_MAGIC_IP};
use pcapcast_core::{Encoder, Format, Meta, Options, Path};
use pcapcast_tests::temp_dir;

fn dissector() -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR")).join("../dissector/pcapcast.lua")
}

fn golden(name: &str) -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/golden")
        .join(name)
}

/// What every run asks for besides the test's own fields: Lua errors show there.
const ALWAYS: [&str; 4] = [
    "frame.number",
    "_ws.lua.error",
    "_ws.expert.message",
    "_ws.col.Info",
];

/// One decoded record: field name to tshark's text for it ("" when absent).
type Row = BTreeMap<String, String>;

/// Decodes `file` with the dissector; one row per record. Fails the test when tshark
/// is missing, exits non-zero, or a Lua error shows anywhere (the `_ws.lua.error`
/// field, an expert message "Lua Error: ...", stdout or stderr).
fn decode(file: &FsPath, fields: &[&str]) -> Vec<Row> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(file)
        .arg("-X")
        .arg(format!("lua_script:{}", dissector().display()))
        .args(["-T", "fields", "-E", "separator=|"]);
    let all: Vec<&str> = ALWAYS.iter().chain(fields).copied().collect();
    for field in &all {
        command.args(["-e", field]);
    }
    let output = command
        .output()
        .expect("tshark must be installed to test the dissector (apt-get install tshark)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tshark on {} exited with {}: {stderr}",
        file.display(),
        output.status
    );
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains("Lua Error") && !text.contains("Lua: Error"),
            "a Lua error on {} ({name}):\n{text}",
            file.display()
        );
    }
    let rows: Vec<Row> = stdout
        .lines()
        .map(|line| {
            let values: Vec<&str> = line.split('|').collect();
            assert_eq!(values.len(), all.len(), "line {line:?}");
            all.iter()
                .zip(values)
                .map(|(f, v)| (f.to_string(), v.to_owned()))
                .collect()
        })
        .collect();
    for row in &rows {
        assert_eq!(
            row["_ws.lua.error"],
            "",
            "a Lua error on {} record {}: {}",
            file.display(),
            row["frame.number"],
            row["_ws.expert.message"]
        );
    }
    rows
}

fn when(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(i)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// A capture file in a temporary folder of its own, removed on drop.
struct TempCapture(PathBuf);

impl TempCapture {
    fn write(name: &str, bytes: &[u8]) -> TempCapture {
        let file = temp_dir("dissector").join(format!("{name}.pcap"));
        std::fs::write(&file, bytes).expect("write capture");
        TempCapture(file)
    }
}

impl std::ops::Deref for TempCapture {
    type Target = FsPath;
    fn deref(&self) -> &FsPath {
        &self.0
    }
}

impl Drop for TempCapture {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes a capture of `records` (path, packet, metadata) in `options`' format.
fn capture_file(name: &str, options: Options, records: &[(Path, Vec<u8>, Meta)]) -> TempCapture {
    let encoder = Encoder::new(options);
    let mut out = BytesMut::new();
    encoder.put_header(&mut out);
    for (i, (path, packet, meta)) in records.iter().enumerate() {
        let n = encoder.put_record_with(&mut out, *path, when(i as u64), packet, meta);
        assert!(n > 0, "record {i} written");
    }
    TempCapture::write(name, &out)
}

/// Writes a capture of raw record payloads, each `(captured bytes, original length)`,
/// after the seed file header: records no encoder would write.
fn raw_file(name: &str, records: &[(Vec<u8>, usize)]) -> TempCapture {
    let mut out = BytesMut::new();
    Encoder::new(Options::new()).put_header(&mut out);
    for (i, (bytes, orig_len)) in records.iter().enumerate() {
        out.put_u32_le(1_700_000_000);
        out.put_u32_le(i as u32);
        out.put_u32_le(bytes.len() as u32);
        out.put_u32_le(*orig_len as u32);
        out.put_slice(bytes);
    }
    TempCapture::write(name, &out)
}

/// A UDP/IPv4 packet from 10.0.0.1:41000 to 10.0.0.2:41001 (ports no heuristic
/// dissector claims).
fn udp_v4() -> Vec<u8> {
    let mut packet = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(41000, 41001)
        .write(&mut packet, b"hello")
        .expect("build packet");
    packet
}

const TXID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const TXID_HEX: &str = "0102030405060708090a0b0c";
const NODE_KEY: [u8; 32] = [0xAB; 32];
const DERP_KEY: [u8; 32] = [0xDE; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A disco ping: type 1, version 0, txid, node key, padding.
fn ping() -> Vec<u8> {
    let mut m = vec![1, 0];
    m.extend_from_slice(&TXID);
    m.extend_from_slice(&NODE_KEY);
    m.extend_from_slice(&[0; 8]);
    m
}

/// A disco pong: type 2, version 0, txid, ::ffff:198.51.100.7, port 41641 big-endian.
fn pong() -> Vec<u8> {
    let mut m = vec![2, 0];
    m.extend_from_slice(&TXID);
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7]);
    m.extend_from_slice(&41641u16.to_be_bytes());
    m
}

/// A call-me-maybe with two endpoints.
fn call_me_maybe() -> Vec<u8> {
    let mut m = vec![3, 0];
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 1]);
    m.extend_from_slice(&1234u16.to_be_bytes());
    m.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    m.extend_from_slice(&5678u16.to_be_bytes());
    m
}

fn framing_of(rows: &[Row]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["pcapcast.framing"].as_str())
        .collect()
}

#[test]
fn golden_tailscale_capture_decodes_with_its_nat_addresses() {
    let rows = decode(
        &golden("tailscale-basic.pcap"),
        &[
            "pcapcast.path",
            "pcapcast.framing",
            "pcapcast.snat_ip",
            "pcapcast.snat_ipv6",
            "pcapcast.dnat_ip",
            "pcapcast.dnat_ipv6",
            "ip.src",
            "ipv6.src",
        ],
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(framing_of(&rows), ["tailscale"; 4]);
    let table: Vec<[&str; 7]> = rows
        .iter()
        .map(|r| {
            [
                r["pcapcast.path"].as_str(),
                r["pcapcast.snat_ip"].as_str(),
                r["pcapcast.snat_ipv6"].as_str(),
                r["pcapcast.dnat_ip"].as_str(),
                r["pcapcast.dnat_ipv6"].as_str(),
                r["ip.src"].as_str(),
                r["ipv6.src"].as_str(),
            ]
        })
        .collect();
    assert_eq!(
        table,
        [
            ["0", "", "", "", "", "100.64.0.1", ""],
            ["1", "", "", "100.64.0.9", "", "", "fd7a:115c:a1e0::2"],
            [
                "2",
                "100.64.0.7",
                "",
                "",
                "fd7a:115c:a1e0::9",
                "100.64.0.1",
                ""
            ],
            [
                "3",
                "",
                "fd7a:115c:a1e0::1",
                "",
                "",
                "",
                "fd7a:115c:a1e0::3"
            ],
        ]
    );
    assert!(rows[0]["_ws.col.Info"].starts_with("FromLocal: 12345 → 53"));
}

#[test]
fn golden_seed_capture_decodes_as_before() {
    let rows = decode(
        &golden("seed-basic.pcap"),
        &[
            "pcapcast.path",
            "pcapcast.path_name",
            "pcapcast.framing",
            "pcapcast.snat_ip",
            "pcapcast.snat_ipv6",
            "pcapcast.dnat_ip",
            "pcapcast.dnat_ipv6",
            "pcapcast.payload_len",
            "ip.src",
        ],
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(framing_of(&rows), ["seed"; 4]);
    let paths: Vec<&str> = rows.iter().map(|r| r["pcapcast.path"].as_str()).collect();
    assert_eq!(paths, ["0", "1", "2", "3"]);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["pcapcast.path_name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "FromLocal",
            "FromPeer",
            "SynthesizedToLocal",
            "SynthesizedToPeer"
        ]
    );
    for row in &rows {
        for nat in [
            "pcapcast.snat_ip",
            "pcapcast.snat_ipv6",
            "pcapcast.dnat_ip",
            "pcapcast.dnat_ipv6",
        ] {
            assert_eq!(row[nat], "", "{nat} on a seed record");
        }
    }
    assert_eq!(rows[0]["ip.src"], "100.64.0.1");
    assert_eq!(rows[1]["ip.src"], "100.64.0.2");
    assert_eq!(rows[2]["pcapcast.payload_len"], "0");
    // Record 4's 1500 bytes start 00 01: not a valid Tailscale prefix, so seed, not IP.
    assert_eq!(rows[3]["pcapcast.payload_len"], "1500");
    assert!(rows[3]["_ws.col.Info"].contains("Non-IP payload"));
}

#[test]
fn nat_addresses_of_every_family_in_our_tailscale_output() {
    let v4 = udp_v4();
    let records = [
        (Path::FromPeer, v4.clone(), Meta::new()),
        (
            Path::FromPeer,
            v4.clone(),
            Meta::new().snat(addr("100.64.0.7:1000")),
        ),
        (
            Path::FromPeer,
            v4.clone(),
            Meta::new().dnat(addr("[fd7a:115c:a1e0::9]:443")),
        ),
        (
            Path::FromLocal,
            v4.clone(),
            Meta::new()
                .snat(addr("[fd7a:115c:a1e0::1]:7"))
                .dnat(addr("100.64.0.9:53")),
        ),
        (Path::Other(7), v4, Meta::new()),
    ];
    let rows = decode(
        &capture_file("nat", Options::new().format(Format::Tailscale), &records),
        &[
            "pcapcast.path",
            "pcapcast.framing",
            "pcapcast.snat_ip",
            "pcapcast.snat_ipv6",
            "pcapcast.dnat_ip",
            "pcapcast.dnat_ipv6",
            "ip.src",
            "udp.dstport",
        ],
    );
    assert_eq!(framing_of(&rows), ["tailscale"; 5]);
    let nat: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| {
            [
                r["pcapcast.snat_ip"].as_str(),
                r["pcapcast.snat_ipv6"].as_str(),
                r["pcapcast.dnat_ip"].as_str(),
                r["pcapcast.dnat_ipv6"].as_str(),
            ]
        })
        .collect();
    assert_eq!(
        nat,
        [
            ["", "", "", ""],
            ["100.64.0.7", "", "", ""],
            ["", "", "", "fd7a:115c:a1e0::9"],
            ["", "fd7a:115c:a1e0::1", "100.64.0.9", ""],
            ["", "", "", ""],
        ]
    );
    for row in &rows[..4] {
        assert_eq!(
            row["_ws.expert.message"], "",
            "nothing odd in a whole record"
        );
    }
    for row in &rows {
        assert_eq!(row["ip.src"], "10.0.0.1");
        assert_eq!(row["udp.dstport"], "41001");
    }
    assert_eq!(rows[4]["pcapcast.path"], "7");
    assert_eq!(rows[4]["_ws.expert.message"], "Unknown path value 7");
}

const DISCO_FIELDS: [&str; 17] = [
    "pcapcast.path",
    "pcapcast.framing",
    "pcapcast.disco.derp",
    "pcapcast.disco.derp_key",
    "pcapcast.disco.src_ip",
    "pcapcast.disco.src_ipv6",
    "pcapcast.disco.src_port",
    "pcapcast.disco.len",
    "pcapcast.disco.type",
    "pcapcast.disco.version",
    "pcapcast.disco.txid",
    "pcapcast.disco.node_key",
    "pcapcast.disco.pong_src",
    "pcapcast.disco.pong_src_port",
    "pcapcast.disco.endpoint",
    "pcapcast.disco.endpoint_port",
    "pcapcast.snat_ip",
];

fn disco_frames_decode_in(format: Format, framing: &str) {
    let ping = ping();
    let pong = pong();
    let cmm = call_me_maybe();
    let derp_src = SocketAddr::new(DERP_MAGIC_IP.into(), 900);
    let frames = [
        DiscoFrame::new(addr("192.0.2.7:41641"), &ping).to_vec(),
        DiscoFrame::new(addr("[2001:db8::5]:41642"), &pong).to_vec(),
        DiscoFrame::new(derp_src, &ping).via_derp(DERP_KEY).to_vec(),
        DiscoFrame::new(derp_src, &pong).via_derp(DERP_KEY).to_vec(),
        DiscoFrame::new(addr("192.0.2.8:1"), &cmm).to_vec(),
    ];
    let mut records: Vec<(Path, Vec<u8>, Meta)> = frames
        .iter()
        .map(|f| (Path::Disco, f.clone(), Meta::new()))
        .collect();
    // A prefix with an address before the frame (the seed framing drops it).
    records.push((
        Path::Disco,
        frames[0].clone(),
        Meta::new().snat(addr("100.64.0.7:1")),
    ));
    let name = format!("disco-{framing}");
    let rows = decode(
        &capture_file(&name, Options::new().format(format), &records),
        &DISCO_FIELDS,
    );
    assert_eq!(rows.len(), 6);
    assert_eq!(framing_of(&rows), [framing; 6]);
    let zeros = hex(&[0; 32]);
    let derp_key = hex(&DERP_KEY);
    let node_key = hex(&NODE_KEY);
    let mapped = "::ffff:198.51.100.7";
    let ping_len = ping.len().to_string();
    let pong_len = pong.len().to_string();
    let expect: [[&str; 13]; 5] = [
        // derp, key, src_ip, src_ipv6, port, len, type, version, txid, node key,
        // pong src, pong port, Info
        [
            "0",
            &zeros,
            "192.0.2.7",
            "",
            "41641",
            &ping_len,
            "1",
            "0",
            TXID_HEX,
            &node_key,
            "",
            "",
            "Disco: ping from 192.0.2.7:41641",
        ],
        [
            "0",
            &zeros,
            "",
            "2001:db8::5",
            "41642",
            &pong_len,
            "2",
            "0",
            TXID_HEX,
            "",
            mapped,
            "41641",
            "Disco: pong from [2001:db8::5]:41642",
        ],
        [
            "1",
            &derp_key,
            "127.3.3.40",
            "",
            "900",
            &ping_len,
            "1",
            "0",
            TXID_HEX,
            &node_key,
            "",
            "",
            "Disco: ping via DERP from 127.3.3.40:900",
        ],
        [
            "1",
            &derp_key,
            "127.3.3.40",
            "",
            "900",
            &pong_len,
            "2",
            "0",
            TXID_HEX,
            "",
            mapped,
            "41641",
            "Disco: pong via DERP from 127.3.3.40:900",
        ],
        [
            "0",
            &zeros,
            "192.0.2.8",
            "",
            "1",
            "38",
            "3",
            "0",
            "",
            "",
            "",
            "",
            "Disco: call-me-maybe from 192.0.2.8:1",
        ],
    ];
    for (i, (row, want)) in rows.iter().zip(&expect).enumerate() {
        let got: Vec<&str> = [
            "pcapcast.disco.derp",
            "pcapcast.disco.derp_key",
            "pcapcast.disco.src_ip",
            "pcapcast.disco.src_ipv6",
            "pcapcast.disco.src_port",
            "pcapcast.disco.len",
            "pcapcast.disco.type",
            "pcapcast.disco.version",
            "pcapcast.disco.txid",
            "pcapcast.disco.node_key",
            "pcapcast.disco.pong_src",
            "pcapcast.disco.pong_src_port",
            "_ws.col.Info",
        ]
        .iter()
        .map(|f| row[*f].as_str())
        .collect();
        assert_eq!(got, want, "{framing}: disco record {}", i + 1);
        assert_eq!(row["pcapcast.path"], "254");
        assert_eq!(row["_ws.expert.message"], "", "{framing}: record {}", i + 1);
    }
    assert_eq!(
        rows[4]["pcapcast.disco.endpoint"],
        "::ffff:203.0.113.1,2001:db8::9"
    );
    assert_eq!(rows[4]["pcapcast.disco.endpoint_port"], "1234,5678");
    let with_nat = &rows[5];
    assert_eq!(with_nat["pcapcast.disco.src_ip"], "192.0.2.7");
    assert_eq!(with_nat["pcapcast.disco.txid"], TXID_HEX);
    let snat = if framing == "tailscale" {
        "100.64.0.7"
    } else {
        ""
    };
    assert_eq!(with_nat["pcapcast.snat_ip"], snat);
}

#[test]
fn disco_frames_decode_in_the_seed_framing() {
    disco_frames_decode_in(Format::Pcap, "seed");
}

#[test]
fn disco_frames_decode_in_tailscale_framing() {
    disco_frames_decode_in(Format::Tailscale, "tailscale");
}

/// Rows of `file` with the fields the odd-record tests look at.
fn decode_odd(file: &FsPath) -> Vec<Row> {
    decode(
        file,
        &[
            "pcapcast.path",
            "pcapcast.framing",
            "pcapcast.snat_ip",
            "pcapcast.snat_ipv6",
            "pcapcast.dnat_ip",
            "pcapcast.disco.src_ip",
            "pcapcast.disco.type",
            "pcapcast.disco.txid",
            "pcapcast.disco.derp",
        ],
    )
}

fn expert(row: &Row) -> &str {
    &row["_ws.expert.message"]
}

#[test]
fn odd_seed_records_raise_no_lua_error() {
    let ping = ping();
    let frame = DiscoFrame::new(addr("192.0.2.7:41641"), &ping).to_vec();
    let tagged = |path: u16, body: &[u8]| -> Vec<u8> {
        let mut v = path.to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let mut bad_addr_len = frame.clone();
    bad_addr_len[35] = 5;
    // Flag bits other than bit 0 say nothing about DERP.
    let mut flag_2 = frame.clone();
    flag_2[0] = 2;
    let mut flag_3 = frame.clone();
    flag_3[0] = 3;
    let records = [
        (vec![], 0),                                                // 1: empty record
        (vec![1], 1),                                               // 2: one byte
        (tagged(1, &[]), 2),                                        // 3: path only
        (tagged(1, &[]), 30),                                       // 4: path only, cut
        (tagged(254, &[]), 2),                                      // 5: disco, path only
        (tagged(254, &frame[..20]), 2 + frame.len()),               // 6: disco cut in key
        (tagged(254, &frame[..50]), 2 + frame.len()),               // 7: disco cut in txid
        (tagged(254, &bad_addr_len), 2 + frame.len()),              // 8: bad addr_len
        (tagged(254, &[1]), 3),                                     // 9: disco, flag only
        (tagged(0, &[0x45, 0, 0]), 3 + 2),                          // 10: short IPv4
        (tagged(0, &[0x45]), 2 + 60),                               // 11: IPv4 cut at 1 byte
        (tagged(3, &[0xff; 10]), 12),                               // 12: not IP
        (tagged(254, &frame[..frame.len() - 10]), frame.len() - 8), // 13: message too short
        (tagged(254, &flag_2), 2 + frame.len()),                    // 14: flag 0x02
        (tagged(254, &flag_3), 2 + frame.len()),                    // 15: flag 0x03
    ];
    let rows = decode_odd(&raw_file("odd-seed", &records));
    assert_eq!(rows.len(), records.len());
    assert!(rows[0]["_ws.col.Info"].contains("Short record (0 bytes)"));
    assert!(rows[1]["_ws.col.Info"].contains("Short record (1 byte)"));
    assert_eq!(rows[2]["pcapcast.framing"], "seed");
    assert!(expert(&rows[2]).contains("no payload"));
    assert_eq!(
        rows[3]["pcapcast.framing"], "",
        "a cut bare path is undetermined"
    );
    assert!(expert(&rows[3]).contains("seed or Tailscale"));
    assert_eq!(rows[4]["pcapcast.framing"], "seed");
    // Cut before the lengths could be read: seed disco starts 00 00, both undecided.
    assert_eq!(rows[5]["pcapcast.framing"], "tailscale");
    assert!(expert(&rows[5]).contains("cut"), "{}", expert(&rows[5]));
    // The lengths were captured and fit the seed reading.
    assert_eq!(rows[6]["pcapcast.framing"], "seed");
    assert_eq!(rows[6]["pcapcast.disco.src_ip"], "192.0.2.7");
    assert_eq!(rows[6]["pcapcast.disco.type"], "1");
    assert!(
        expert(&rows[6]).contains("cut short in the txid"),
        "{}",
        expert(&rows[6])
    );
    // A frame broken in both readings: the framing is a guess (Tailscale on a tie, as
    // the README says), and either way the bad length is reported.
    assert!(
        expert(&rows[7]).contains("is not 4 or 16"),
        "{}",
        expert(&rows[7])
    );
    assert!(rows[8]["_ws.col.Info"].starts_with("Disco: "));
    assert!(expert(&rows[9]).contains("shorter than a 20-byte header"));
    assert_eq!(rows[10]["pcapcast.framing"], "seed");
    assert!(expert(&rows[11]).contains("not 4 or 6"));
    assert!(
        expert(&rows[12]).contains("Message length"),
        "{}",
        expert(&rows[12])
    );
    for (row, derp) in [(&rows[13], "0"), (&rows[14], "1")] {
        assert_eq!(row["pcapcast.framing"], "seed");
        assert_eq!(row["pcapcast.disco.derp"], derp, "DERP is flag bit 0");
        assert_eq!(row["pcapcast.disco.src_ip"], "192.0.2.7");
        assert_eq!(row["pcapcast.disco.txid"], TXID_HEX);
    }
}

#[test]
fn odd_tailscale_records_raise_no_lua_error() {
    let v4 = udp_v4();
    let ping = ping();
    let frame = DiscoFrame::new(addr("192.0.2.7:41641"), &ping).to_vec();
    let mut bad_addr_len = frame.clone();
    bad_addr_len[35] = 5;
    let dnat = Meta::new().dnat(addr("100.64.0.9:53"));
    let snat6 = Meta::new().snat(addr("[fd7a:115c:a1e0::1]:7"));

    // Whole records: empty packets after a prefix, a bad addr_len, a one-byte frame.
    let rows = decode_odd(&capture_file(
        "odd-tailscale",
        Options::new().format(Format::Tailscale),
        &[
            (Path::FromPeer, vec![], Meta::new()),
            (Path::FromPeer, vec![], dnat),
            (Path::Disco, vec![], Meta::new()),
            (Path::Disco, bad_addr_len, Meta::new()),
            (Path::Disco, vec![1], Meta::new()),
            (Path::Disco, frame[..frame.len() - 3].to_vec(), Meta::new()),
        ],
    ));
    assert_eq!(rows.len(), 6);
    assert_eq!(framing_of(&rows), ["tailscale"; 6]);
    assert!(expert(&rows[0]).contains("no packet after the Tailscale prefix"));
    assert_eq!(rows[1]["pcapcast.dnat_ip"], "100.64.0.9");
    assert!(expert(&rows[1]).contains("no packet after the Tailscale prefix"));
    assert!(expert(&rows[2]).contains("no packet after the Tailscale prefix"));
    assert!(
        expert(&rows[3]).contains("Address length 5 is not 4 or 16"),
        "{}",
        expert(&rows[3])
    );
    assert!(
        expert(&rows[5]).contains("Message length"),
        "{}",
        expert(&rows[5])
    );

    // snaplen 5: the prefix is cut inside an address.
    let rows = decode_odd(&capture_file(
        "odd-tailscale-5",
        Options::new()
            .format(Format::Tailscale)
            .snaplen(5)
            .expect("snaplen"),
        &[
            (Path::FromPeer, v4.clone(), snat6),
            (Path::FromPeer, v4.clone(), dnat),
            (
                Path::FromPeer,
                v4.clone(),
                Meta::new().snat(addr("100.64.0.7:1")),
            ),
            (Path::Disco, frame.clone(), snat6),
            (Path::FromPeer, v4.clone(), Meta::new()),
        ],
    ));
    assert_eq!(rows.len(), 5);
    assert_eq!(framing_of(&rows), ["tailscale"; 5]);
    assert!(
        expert(&rows[0]).contains("cut inside the SNAT address"),
        "{}",
        expert(&rows[0])
    );
    assert!(
        expert(&rows[1]).contains("cut inside the DNAT address"),
        "{}",
        expert(&rows[1])
    );
    assert!(
        expert(&rows[2]).contains("cut inside the SNAT address"),
        "{}",
        expert(&rows[2])
    );
    assert!(rows[4]["_ws.col.Info"].starts_with("FromPeer: "));

    // snaplen 3, 4 and 50: cut in the prefix, right after it, and in the disco message.
    for snaplen in [3, 4, 50] {
        let rows = decode_odd(&capture_file(
            &format!("odd-tailscale-{snaplen}"),
            Options::new()
                .format(Format::Tailscale)
                .snaplen(snaplen)
                .expect("snaplen"),
            &[
                (Path::FromPeer, v4.clone(), dnat),
                (Path::Disco, frame.clone(), Meta::new()),
                (Path::SynthesizedToLocal, v4.clone(), Meta::new()),
            ],
        ));
        assert_eq!(rows.len(), 3);
        assert_eq!(framing_of(&rows), ["tailscale"; 3], "snaplen {snaplen}");
        if snaplen < 8 {
            assert!(
                expert(&rows[0]).contains("cut"),
                "snaplen {snaplen}: {}",
                expert(&rows[0])
            );
        }
        assert!(
            expert(&rows[1]).contains("cut"),
            "snaplen {snaplen}: {}",
            expert(&rows[1])
        );
        if snaplen == 50 {
            assert_eq!(rows[1]["pcapcast.disco.src_ip"], "192.0.2.7");
            assert_eq!(rows[1]["pcapcast.disco.type"], "1");
            assert!(expert(&rows[1]).contains("cut short in the txid"));
        }
    }
}

#[test]
fn dissector_lists_the_new_fields() {
    let output = Command::new("tshark")
        .args(["-G", "fields", "-X"])
        .arg(format!("lua_script:{}", dissector().display()))
        .output()
        .expect("tshark must be installed to test the dissector");
    assert!(output.status.success());
    let listed = String::from_utf8_lossy(&output.stdout);
    let types: BTreeMap<&str, &str> = listed
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.len() > 3 && cols[0] == "F").then(|| (cols[2], cols[3]))
        })
        .collect();
    for (field, kind) in [
        ("pcapcast.path", "FT_UINT16"),
        ("pcapcast.framing", "FT_STRING"),
        ("pcapcast.snat_ip", "FT_IPv4"),
        ("pcapcast.snat_ipv6", "FT_IPv6"),
        ("pcapcast.dnat_ip", "FT_IPv4"),
        ("pcapcast.dnat_ipv6", "FT_IPv6"),
        ("pcapcast.disco.derp", "FT_BOOLEAN"),
        ("pcapcast.disco.derp_key", "FT_BYTES"),
        ("pcapcast.disco.src_ip", "FT_IPv4"),
        ("pcapcast.disco.src_ipv6", "FT_IPv6"),
        ("pcapcast.disco.src_port", "FT_UINT16"),
        ("pcapcast.disco.len", "FT_UINT16"),
        ("pcapcast.disco.type", "FT_UINT8"),
        ("pcapcast.disco.version", "FT_UINT8"),
        ("pcapcast.disco.txid", "FT_BYTES"),
        ("pcapcast.disco.node_key", "FT_BYTES"),
        ("pcapcast.disco.pong_src", "FT_IPv6"),
        ("pcapcast.disco.pong_src_port", "FT_UINT16"),
    ] {
        assert_eq!(types.get(field).copied(), Some(kind), "{field}");
    }
}
