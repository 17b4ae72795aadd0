//! What an output actually delivered: the bytes a writer took and the whole records
//! among them, counted as they are written. A writer that stalls or fails part-way has
//! taken less than the subscription handed out; the detach log must say what reached
//! the reader's side, not what was queued for it.

use crate::pcap::{FILE_HEADER_LEN, RECORD_HEADER_LEN};
use crate::pcapng::ENHANCED_PACKET;
use crate::Format;

/// The fixed start of a pcapng block: type and total length.
const BLOCK_HEADER_LEN: usize = 8;

/// Counts the bytes and whole packet records of one output's stream as a writer takes
/// them, reading only the units' headers (the payloads are skipped, not copied).
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::delivered::Delivered;
/// use pcapcast_core::{Encoder, Format, Options, Path};
///
/// let encoder = Encoder::new(Options::default());
/// let mut file = BytesMut::new();
/// encoder.put_header(&mut file);
/// encoder.put_record(&mut file, Path::FromLocal, std::time::UNIX_EPOCH, &[0x45; 20]);
/// encoder.put_record(&mut file, Path::FromPeer, std::time::UNIX_EPOCH, &[0x45; 20]);
///
/// let mut delivered = Delivered::new(Format::Pcap);
/// delivered.written(&file[..70]); // the header, one record and part of the next
/// assert_eq!((delivered.bytes(), delivered.records()), (70, 1));
/// ```
#[derive(Clone, Debug)]
pub struct Delivered {
    classic: bool,
    /// Whether the classic file header has gone by.
    past_file_header: bool,
    /// The header of the unit being written, as far as it was.
    head: [u8; FILE_HEADER_LEN],
    head_len: usize,
    /// Bytes of the current unit after its header still to come.
    body_left: u64,
    /// Whether the current unit is a packet record.
    is_record: bool,
    bytes: u64,
    records: u64,
}

impl Delivered {
    /// A count for an output in `format`, from the stream's first byte on.
    pub fn new(format: Format) -> Delivered {
        Delivered {
            classic: format != Format::Pcapng,
            past_file_header: false,
            head: [0; FILE_HEADER_LEN],
            head_len: 0,
            body_left: 0,
            is_record: false,
            bytes: 0,
            records: 0,
        }
    }

    /// Bytes written, the file header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Packet records written whole.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Counts `data`, the next bytes of the stream that the writer took.
    pub fn written(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            if self.body_left > 0 {
                let take =
                    usize::try_from(self.body_left).map_or(data.len(), |b| b.min(data.len()));
                data = &data[take..];
                self.body_left -= take as u64;
                if self.body_left == 0 {
                    self.unit_done();
                }
                continue;
            }
            let need = self.head_needed();
            let take = (need - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
            self.head_len += take;
            data = &data[take..];
            if self.head_len == need {
                self.head_done(need);
            }
        }
    }

    fn head_needed(&self) -> usize {
        match (self.classic, self.past_file_header) {
            (true, false) => FILE_HEADER_LEN,
            (true, true) => RECORD_HEADER_LEN,
            (false, _) => BLOCK_HEADER_LEN,
        }
    }

    fn head_done(&mut self, head_len: usize) {
        let word = |at: usize| {
            u32::from_le_bytes([
                self.head[at],
                self.head[at + 1],
                self.head[at + 2],
                self.head[at + 3],
            ])
        };
        self.head_len = 0;
        if self.classic && !self.past_file_header {
            self.past_file_header = true;
            return;
        }
        if self.classic {
            self.is_record = true;
            self.body_left = u64::from(word(8));
        } else {
            self.is_record = word(0) == ENHANCED_PACKET;
            // A block is at least its type and two lengths (12 bytes); the encoder never
            // writes less, and a shorter claim must not stall the count.
            let total = u64::from(word(4)).max(BLOCK_HEADER_LEN as u64 + 4);
            self.body_left = total - head_len as u64;
        }
        if self.body_left == 0 {
            self.unit_done();
        }
    }

    fn unit_done(&mut self) {
        if self.is_record {
            self.records += 1;
        }
        self.is_record = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::{Encoder, Options, Path};

    fn file(format: Format, records: usize) -> BytesMut {
        let encoder = Encoder::new(Options::new().format(format));
        let mut file = BytesMut::new();
        encoder.put_header(&mut file);
        for i in 0..records {
            let packet = vec![0x45; 20 + i];
            encoder.put_record(&mut file, Path::FromPeer, std::time::UNIX_EPOCH, &packet);
        }
        file
    }

    #[test]
    fn counts_only_whole_records_at_every_cut() {
        for format in [
            Format::Pcap,
            Format::RawIp,
            Format::Tailscale,
            Format::Pcapng,
        ] {
            let file = file(format, 5);
            let mut framer = crate::framer::Framer::new();
            framer.push(&file);
            let mut ends = Vec::new();
            let mut at = 0;
            while let Some(unit) = framer.next_unit().unwrap() {
                let (len, packet) = match unit {
                    crate::framer::Unit::Packet { bytes, .. } => (bytes.len(), true),
                    crate::framer::Unit::Header(b) | crate::framer::Unit::Other(b) => {
                        (b.len(), false)
                    }
                };
                at += len;
                if packet {
                    ends.push(at);
                }
            }
            assert_eq!(ends.len(), 5, "{format:?}");
            for cut in 0..=file.len() {
                // Bytes arrive in pieces of 7, as a writer taking little at a time.
                let mut delivered = Delivered::new(format);
                for piece in file[..cut].chunks(7) {
                    delivered.written(piece);
                }
                let whole = ends.iter().filter(|end| **end <= cut).count() as u64;
                assert_eq!(delivered.records(), whole, "{format:?} cut at {cut}");
                assert_eq!(delivered.bytes(), cut as u64);
            }
        }
    }
}
