//! What an HTTP capture delivered: the connection's writes read back as HTTP, so that the
//! bytes and whole records of a capture's body that the socket took are counted, not
//! what the body handed to hyper (which hyper may still hold when the reader stops).

use std::io::IoSlice;
use std::sync::{Arc, Mutex};

use pcapcast_core::delivered::Delivered;
use pcapcast_core::Format;

/// The longest response head read; a capture's is far shorter.
const MAX_HEAD: usize = 8 << 10;

/// Where the service tells the connection's writes which format its capture streams.
pub(crate) type DeliveryCell = Arc<Mutex<ResponseTap>>;

/// Reads the responses a connection writes: heads, then bodies framed by
/// `Content-Length` or chunked. The body of a `200` chunked response, once the service
/// has named its format, is counted with [`Delivered`].
#[derive(Debug, Default)]
pub(crate) struct ResponseTap {
    format: Option<Format>,
    state: State,
    head: Vec<u8>,
    capture: Option<Delivered>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a response head, up to its blank line.
    #[default]
    Head,
    /// This many body bytes of a `Content-Length` response are left.
    Fixed(u64),
    /// Reading a chunk's size line.
    ChunkSize,
    /// This many bytes of a chunk are left, then its CRLF.
    Chunk(u64),
    /// The CRLF after a chunk's data; `true` once its CR went by.
    ChunkEnd(bool),
    /// After the last chunk: what follows (trailers, their blank line) is not counted.
    Trailer,
}

impl ResponseTap {
    /// The capture this connection streams is in `format`.
    pub(crate) fn attached(&mut self, format: Format) {
        self.format = Some(format);
    }

    /// What the socket took of the capture's body, if a capture was answered.
    pub(crate) fn delivered(&self) -> Option<&Delivered> {
        self.capture.as_ref()
    }

    /// Reads `data`, the next bytes the socket took.
    pub(crate) fn written(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Head => {
                    let Some(&byte) = data.first() else { return };
                    data = &data[1..];
                    if self.head.len() < MAX_HEAD {
                        self.head.push(byte);
                    }
                    if self.head.ends_with(b"\r\n\r\n") {
                        self.head_done();
                    }
                }
                State::Fixed(left) => {
                    let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Fixed(left)
                    };
                }
                State::ChunkSize => {
                    let Some(&byte) = data.first() else { return };
                    data = &data[1..];
                    self.head.push(byte);
                    if self.head.ends_with(b"\r\n") {
                        let line = String::from_utf8_lossy(&self.head);
                        let size = line.split([';', '\r']).next().unwrap_or("").trim();
                        let size = u64::from_str_radix(size, 16).unwrap_or(0);
                        self.head.clear();
                        self.state = if size == 0 {
                            State::Trailer
                        } else {
                            State::Chunk(size)
                        };
                    } else if self.head.len() > MAX_HEAD {
                        // Not HTTP as hyper writes it: stop counting rather than guess.
                        self.state = State::Trailer;
                    }
                }
                State::Chunk(left) => {
                    let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
                    if let Some(capture) = self.capture.as_mut() {
                        capture.written(&data[..take]);
                    }
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd(false)
                    } else {
                        State::Chunk(left)
                    };
                }
                State::ChunkEnd(cr) => {
                    data = &data[1..];
                    self.state = if cr {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(true)
                    };
                }
                State::Trailer => return,
            }
        }
    }

    fn head_done(&mut self) {
        let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
        self.head.clear();
        let status = head.split(' ').nth(1).unwrap_or("");
        let header = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        self.state = match header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            _ if chunked => State::ChunkSize,
            Some(0) | None => State::Head,
            Some(length) => State::Fixed(length),
        };
        if chunked && status == "200" {
            self.capture = self.format.map(Delivered::new);
        }
    }
}

/// Reads back what the socket took of a write of `bufs`: its first `n` bytes.
pub(crate) fn took(tap: &DeliveryCell, bufs: &[IoSlice<'_>], mut n: usize) {
    let mut tap = crate::lock(tap);
    for buf in bufs {
        let take = buf.len().min(n);
        tap.written(&buf[..take]);
        n -= take;
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use pcapcast_core::{Encoder, Options, Path};

    use super::*;

    /// A 400 with a body, then a capture of `records` seed records, as hyper writes
    /// them: the head, chunks of a record and a half each, the last chunk.
    /// Also where the capture's head ends, and its body's length.
    fn responses(records: usize) -> (Vec<u8>, usize, usize) {
        let mut out = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nnope\n".to_vec();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.tcpdump.pcap\r\ntransfer-encoding: chunked\r\n\r\n");
        let head_end = out.len();
        let encoder = Encoder::new(Options::default());
        let mut body = BytesMut::new();
        encoder.put_header(&mut body);
        for i in 0..records {
            encoder.put_record(
                &mut body,
                Path::FromPeer,
                std::time::UNIX_EPOCH,
                &[i as u8; 40],
            );
        }
        for chunk in body.chunks(87) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        (out, head_end, body.len())
    }

    #[test]
    fn the_capture_body_is_counted_at_every_cut() {
        let (written, head_end, body_len) = responses(10);
        let record = 16 + 2 + 40;
        for cut in 0..=written.len() {
            let mut tap = ResponseTap::default();
            tap.attached(Format::Pcap);
            // In pieces of 3, as partial writes would give them.
            for piece in written[..cut].chunks(3) {
                tap.written(piece);
            }
            let Some(delivered) = tap.delivered() else {
                assert!(cut < head_end, "no capture seen at {cut}");
                continue;
            };
            let bytes = delivered.bytes() as usize;
            assert!(bytes <= body_len);
            assert_eq!(
                delivered.records() as usize,
                bytes.saturating_sub(24) / record,
                "cut {cut}"
            );
        }
        let mut tap = ResponseTap::default();
        tap.attached(Format::Pcap);
        tap.written(&written);
        let delivered = tap.delivered().unwrap();
        assert_eq!(
            (delivered.bytes() as usize, delivered.records()),
            (body_len, 10)
        );
    }

    #[test]
    fn a_refusal_is_not_a_capture() {
        let mut tap = ResponseTap::default();
        tap.attached(Format::Pcap);
        tap.written(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfull\n\r\n0\r\n\r\n");
        assert!(tap.delivered().is_none());
    }
}
