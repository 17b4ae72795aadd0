//! Every format, for arbitrary packets, times, paths and options, reads back with
//! pcap-parser and pcap-file as what was logged; the classic formats written from pcapng
//! are those the capture writes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::framer::Framer;
use pcapcast_core::transcode::Transcoder;
use pcapcast_core::{Capture, Format, History, Meta, Options, Path, TsResolution};
use proptest::prelude::*;

mod support;

#[derive(Clone, Debug)]
struct Logged {
    path: Path,
    when: SystemTime,
    packet: Vec<u8>,
    meta: Meta,
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![
        4 => prop::sample::select(vec![0u16, 1, 2, 3, 254]),
        1 => any::<u16>(),
    ]
    .prop_map(Path::from)
}

fn when() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        8 => (0u64..=u64::from(u32::MAX), 0u32..1_000_000_000)
            .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
        1 => (1u64..1 << 40).prop_map(|s| UNIX_EPOCH - Duration::from_secs(s)),
        1 => (1u64 << 32..1 << 40).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s)),
    ]
}

fn packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..1600),
        1 => (0usize..=70_000, any::<u8>()).prop_map(|(len, seed)| {
            (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
        }),
    ]
}

fn address() -> impl Strategy<Value = Option<SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| Some((ip, port).into())),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| Some((ip, port).into())),
    ]
}

fn meta() -> impl Strategy<Value = Meta> {
    (address(), address()).prop_map(|(src, dst)| {
        let meta = src.map_or(Meta::new(), |src| Meta::new().snat(src));
        dst.map_or(meta, |dst| meta.dnat(dst))
    })
}

/// An original address as Tailscale's framing writes it: its length, then its bytes.
fn framed(addr: Option<SocketAddr>) -> Vec<u8> {
    match addr.map(|a| a.ip()) {
        None => vec![0],
        Some(IpAddr::V4(ip)) => [&[4][..], &ip.octets()].concat(),
        Some(IpAddr::V6(ip)) => [&[16][..], &ip.octets()].concat(),
    }
}

fn options() -> impl Strategy<Value = Options> {
    let snaplen = prop_oneof![
        prop::sample::select(vec![1u32, 2, 3, 20, 1500, 65_535, 262_144]),
        1u32..=262_144,
    ];
    let format = prop::sample::select(vec![
        Format::Pcap,
        Format::RawIp,
        Format::Pcapng,
        Format::Tailscale,
    ]);
    let resolution = prop::sample::select(vec![TsResolution::Micros, TsResolution::Nanos]);
    let paths = prop::collection::vec(path(), 0..3);
    (format, snaplen, resolution, paths).prop_map(|(f, s, r, p)| {
        Options::new()
            .format(f)
            .snaplen(s)
            .unwrap()
            .resolution(r)
            .paths(p)
    })
}

/// What a reader must see for one logged packet under `options`.
fn expected(options: &Options, logged: &Logged) -> support::Record {
    // Saturation as the design states it, not as the code under test computes it.
    let (secs, sub_nanos) = match logged.when.duration_since(UNIX_EPOCH) {
        Err(_) => (0, 0),
        Ok(since) if since.as_secs() > u64::from(u32::MAX) => (u32::MAX, 999_999_999),
        Ok(since) => (since.as_secs() as u32, since.subsec_nanos()),
    };
    let snaplen = options.get_snaplen() as usize;
    let format = options.get_format();
    let tagged = match format {
        Format::Pcap | Format::Tailscale => true,
        Format::RawIp => false,
        Format::Pcapng => !logged.path.carries_ip(),
    };
    let nanos = match (format, options.get_resolution()) {
        (Format::Pcapng, _) | (_, TsResolution::Nanos) => sub_nanos,
        _ => sub_nanos / 1000 * 1000,
    };
    let len = logged.packet.len();
    // What follows the path: Tailscale's two addresses, then the packet.
    let prefix = if format == Format::Tailscale {
        [
            framed(logged.meta.original_src()),
            framed(logged.meta.original_dst()),
        ]
        .concat()
    } else {
        Vec::new()
    };
    let tail = [&prefix[..], &logged.packet].concat();
    let (incl_len, kept) = if tagged {
        let incl = (tail.len() + 2).min(snaplen);
        (incl, incl.saturating_sub(2))
    } else {
        (len.min(snaplen), len.min(snaplen))
    };
    let whole_prefix = format == Format::Tailscale && kept >= prefix.len();
    let (nat, packet, orig_len) = if whole_prefix {
        let (src, dst) = prefix.split_at(usize::from(prefix[0]) + 1);
        (
            Some((src[1..].to_vec(), dst[1..].to_vec())),
            tail[prefix.len()..kept].to_vec(),
            len,
        )
    } else {
        (None, tail[..kept].to_vec(), len + prefix.len())
    };
    let comment =
        (format == Format::Pcapng && !logged.meta.is_empty()).then(|| logged.meta.to_string());
    support::Record {
        path: (tagged && incl_len >= 2).then(|| u16::from(logged.path)),
        secs,
        nanos,
        packet,
        orig_len,
        incl_len,
        interface: (format == Format::Pcapng).then(|| logged.path.name().to_owned()),
        direction: if format == Format::Pcapng {
            logged.path.direction().map(|d| match d {
                pcapcast_core::Direction::Inbound => 1,
                pcapcast_core::Direction::Outbound => 2,
            })
        } else {
            None
        },
        drops: 0,
        nat,
        comment,
    }
}

fn drain(output: &mut pcapcast_core::Subscription) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some(bytes) = block_on(output.next()) {
        file.extend_from_slice(&bytes);
    }
    file
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_format_reads_back_as_logged(
        outputs in prop::collection::vec(options(), 1..4),
        packets in prop::collection::vec((path(), when(), packet(), meta()), 0..10),
    ) {
        let capture = Capture::new();
        let mut subscriptions: Vec<_> = outputs.iter().map(|o| capture.subscribe(o.clone())).collect();
        let logged: Vec<Logged> = packets
            .into_iter()
            .map(|(path, when, packet, meta)| Logged { path, when, packet, meta })
            .collect();
        for l in &logged {
            capture.log_packet_with(l.path, l.when, &l.packet, &l.meta);
        }
        capture.close();
        for (options, subscription) in outputs.iter().zip(&mut subscriptions) {
            let bytes = drain(subscription);
            let framing = match options.get_format() {
                Format::Tailscale => support::Framing::Tailscale,
                _ => support::Framing::Seed,
            };
            let file = support::parse_as(&bytes, framing);
            let want: Vec<_> = logged
                .iter()
                .filter(|l| options.keeps(l.path))
                .filter(|l| options.get_format() != Format::RawIp || l.path.carries_ip())
                .map(|l| expected(options, l))
                .collect();
            prop_assert_eq!(&file.records, &want);
            if options.get_format() != Format::Pcapng {
                prop_assert_eq!(file.snaplen, Some(options.get_snaplen()));
                prop_assert_eq!(file.nanos, options.get_resolution() == TsResolution::Nanos);
            }
            let other = support::parse_with_pcap_file_as(&bytes, framing);
            prop_assert_eq!(&other.records, &file.records);
        }
    }
}

/// The classic formats written from what the daemon sends in pcapng (what `pcapcast
/// capture` does, to know the losses) are byte for byte what it sends in that format.
fn transcoded(pcapng: &[u8], options: &Options) -> Vec<u8> {
    let mut framer = Framer::new();
    framer.push(pcapng);
    let mut transcoder = Transcoder::new(options.clone());
    let mut file = bytes::BytesMut::new();
    while let Some(unit) = framer.next_unit().expect("the daemon's pcapng frames") {
        transcoder
            .put_unit(&unit, &mut file)
            .expect("the daemon's pcapng reads");
    }
    assert_eq!(framer.buffered(), 0);
    file.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn classic_formats_transcoded_from_pcapng_are_byte_exact(
        wanted in options().prop_filter("a classic format", |o| o.get_format() != Format::Pcapng),
        history in any::<bool>(),
        packets in prop::collection::vec((path(), when(), packet(), meta()), 0..12),
    ) {
        let capture = Capture::builder().retain(4 << 20).build();
        let wanted = if history { wanted.history(History::All) } else { wanted };
        // Half the records are history: the first live record then carries a note.
        let (before, after) = packets.split_at(packets.len() / 2);
        let log = |records: &[(Path, SystemTime, Vec<u8>, Meta)]| {
            for (path, when, packet, meta) in records {
                capture.log_packet_with(*path, *when, packet, meta);
            }
        };
        log(before);
        let mut direct = capture.subscribe(wanted.clone());
        let mut pcapng = capture.subscribe(Transcoder::upstream(&wanted));
        log(after);
        capture.close();
        let (direct, pcapng) = (drain(&mut direct), drain(&mut pcapng));
        prop_assert_eq!(transcoded(&pcapng, &wanted), direct);
    }
}

#[test]
fn hostile_inputs_neither_panic_nor_tear() {
    let capture = Capture::new();
    let mut outputs: Vec<_> = [Format::Pcap, Format::RawIp, Format::Pcapng]
        .into_iter()
        .map(|f| capture.subscribe(Options::new().format(f).snaplen(262_144).unwrap()))
        .collect();
    let huge = vec![0xAB; 1 << 20];
    capture.log_packet(
        Path::Other(0xFFFF),
        UNIX_EPOCH - Duration::from_secs(1),
        &huge,
    );
    capture.log_packet(Path::Disco, UNIX_EPOCH + Duration::from_secs(1 << 33), &[]);
    capture.log_packet(Path::FromPeer, SystemTime::UNIX_EPOCH, &[]);
    capture.log_packet(Path::FromPeer, SystemTime::UNIX_EPOCH, &vec![0x45; 300_000]);
    assert_eq!(capture.stats().clamped_times, 2);
    capture.close();
    for (output, format) in outputs.iter_mut().zip(["pcap", "raw", "pcapng"]) {
        let file = support::parse(&drain(output));
        let (ip, not_ip) = if format == "raw" {
            // Raw IP leaves out the paths that do not carry IP.
            (&file.records[..], &[][..])
        } else {
            (&file.records[2..], &file.records[..2])
        };
        assert_eq!(ip.len(), 2, "{format}");
        assert_eq!(not_ip.len(), if format == "raw" { 0 } else { 2 });
        if let [huge, past_2106] = not_ip {
            assert_eq!(huge.orig_len, 1 << 20);
            assert_eq!((huge.secs, huge.nanos), (0, 0));
            assert_eq!(past_2106.secs, u32::MAX);
            assert!(past_2106.nanos >= 999_999_000);
        }
        assert_eq!(ip[0].orig_len, 0);
        // The backlog keeps 262,142 bytes of a packet: the seed format's largest snaplen
        // less its 2-byte path.
        assert_eq!(
            (ip[1].orig_len, ip[1].packet.len()),
            (300_000, 262_142),
            "{format}"
        );
    }
}
