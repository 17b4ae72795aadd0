//! Records per second from `log_packet` through subscriptions and each adapter's
//! `stream_to` into writers, on smol and on tokio in the same run: a writer that
//! discards, and a Unix socket read by another task on the same executor thread.
//!
//! `cargo bench -p pcapcast-tests --bench throughput` (`-- tokio` or `-- smol` for one)

use std::thread::JoinHandle;

use divan::counter::ItemsCount;
use divan::Bencher;
use pcapcast_core::{Capture, Options, Path, Subscription};

fn main() {
    divan::main();
}

const PACKETS: usize = 20_000;
const CASES: [(usize, usize); 4] = [(1, 64), (1, 1500), (16, 64), (16, 1500)];

/// Where the outputs are written.
#[derive(Clone, Copy)]
enum Sink {
    Discard,
    UnixSocket,
}

/// An adapter: drives `outputs` into sinks on one executor thread until the capture
/// closes and every reader has read to the end; the thread returns the records lost.
/// The clock stops when the last byte has been read, not when the last write returned:
/// that is what the reader got.
trait Adapter {
    fn drive(outputs: Vec<Subscription>, sink: Sink) -> JoinHandle<u64>;
}

struct Smol;
struct Tokio;

impl Adapter for Smol {
    fn drive(outputs: Vec<Subscription>, sink: Sink) -> JoinHandle<u64> {
        use futures_lite::AsyncReadExt;
        std::thread::spawn(move || {
            let ex = smol::Executor::new();
            let mut readers = Vec::new();
            let writers: Vec<_> = outputs
                .into_iter()
                .map(|output| match sink {
                    Sink::Discard => {
                        ex.spawn(pcapcast_smol::stream_to(output, futures_lite::io::sink()))
                    }
                    Sink::UnixSocket => {
                        let (writer, mut reader) =
                            smol::net::unix::UnixStream::pair().expect("socket pair");
                        readers.push(ex.spawn(async move {
                            let mut buffer = vec![0u8; 1 << 16];
                            while reader.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                        }));
                        ex.spawn(pcapcast_smol::stream_to(output, writer))
                    }
                })
                .collect();
            smol::block_on(ex.run(async {
                let mut dropped = 0;
                for writer in writers {
                    dropped += writer.await.expect("writer").dropped;
                }
                for reader in readers {
                    reader.await;
                }
                dropped
            }))
        })
    }
}

impl Adapter for Tokio {
    fn drive(outputs: Vec<Subscription>, sink: Sink) -> JoinHandle<u64> {
        use tokio::io::AsyncReadExt;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut readers = Vec::new();
                let writers: Vec<_> = outputs
                    .into_iter()
                    .map(|output| match sink {
                        Sink::Discard => {
                            tokio::spawn(pcapcast_tokio::stream_to(output, tokio::io::sink()))
                        }
                        Sink::UnixSocket => {
                            let (writer, mut reader) =
                                tokio::net::UnixStream::pair().expect("socket pair");
                            readers.push(tokio::spawn(async move {
                                let mut buffer = vec![0u8; 1 << 16];
                                while reader.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                            }));
                            tokio::spawn(pcapcast_tokio::stream_to(output, writer))
                        }
                    })
                    .collect();
                let mut dropped = 0;
                for writer in writers {
                    dropped += writer.await.unwrap().expect("writer").dropped;
                }
                for reader in readers {
                    reader.await.unwrap();
                }
                dropped
            })
        })
    }
}

/// A capture whose outputs an adapter drives until the capture closes.
struct Running {
    capture: Capture,
    driver: JoinHandle<u64>,
}

impl Running {
    fn start<A: Adapter>(outputs: usize, sink: Sink) -> Running {
        // Big enough that no output lags out of it: this measures throughput, not loss.
        // The burst is kept whole only where the datapath thread's ring holds it too.
        let capture = Capture::builder()
            .backlog_bytes(64 << 20)
            .ring_bytes(64 << 20)
            .build();
        let subscriptions = (0..outputs)
            .map(|_| capture.subscribe(Options::default()))
            .collect();
        let driver = A::drive(subscriptions, sink);
        Running { capture, driver }
    }

    fn run(self, size: usize) {
        let packet = vec![0x45u8; size];
        let now = std::time::SystemTime::now();
        for _ in 0..PACKETS {
            self.capture.log_packet(Path::FromPeer, now, &packet);
        }
        self.capture.close();
        assert_eq!(self.driver.join().unwrap(), 0, "no output lost records");
    }
}

#[divan::bench(types = [Smol, Tokio], args = CASES, sample_count = 20, sample_size = 1)]
fn into_discard<A: Adapter>(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| Running::start::<A>(outputs, Sink::Discard))
        .bench_local_values(|running| running.run(size));
}

#[divan::bench(types = [Smol, Tokio], args = CASES, sample_count = 20, sample_size = 1)]
fn into_unix_socket<A: Adapter>(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| Running::start::<A>(outputs, Sink::UnixSocket))
        .bench_local_values(|running| running.run(size));
}
