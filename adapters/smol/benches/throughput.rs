//! Records per second from `log_packet` through subscriptions and `stream_to` into
//! writers: one that discards, and a Unix socket read by another task.
//!
//! `cargo bench -p pcapcast-smol --bench throughput`

use std::thread::JoinHandle;

use divan::counter::ItemsCount;
use divan::Bencher;
use futures_lite::{AsyncReadExt, AsyncWrite};
use pcapcast_smol::{stream_to, Capture, Options, Path};

fn main() {
    divan::main();
}

const PACKETS: usize = 20_000;
const CASES: [(usize, usize); 4] = [(1, 64), (1, 1500), (16, 64), (16, 1500)];

/// A capture whose outputs run on a smol executor thread until the capture closes.
struct Running {
    capture: Capture,
    executor: JoinHandle<u64>,
}

impl Running {
    fn start<W, F>(outputs: usize, make_writer: F) -> Running
    where
        F: Fn(&smol::Executor<'static>) -> W + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // Big enough that no output lags out of it: this measures throughput, not loss.
        // The burst is kept whole only where the datapath thread's ring holds it too.
        let capture = Capture::builder()
            .backlog_bytes(64 << 20)
            .ring_bytes(64 << 20)
            .build();
        let subscriptions: Vec<_> = (0..outputs)
            .map(|_| capture.subscribe(Options::default()))
            .collect();
        let executor = std::thread::spawn(move || {
            let ex: &'static smol::Executor<'static> = Box::leak(Box::new(smol::Executor::new()));
            let tasks: Vec<_> = subscriptions
                .into_iter()
                .map(|s| {
                    let writer = make_writer(ex);
                    ex.spawn(stream_to(s, writer))
                })
                .collect();
            smol::block_on(ex.run(async {
                let mut dropped = 0;
                for task in tasks {
                    dropped += task.await.expect("writer").dropped;
                }
                dropped
            }))
        });
        Running { capture, executor }
    }

    fn run(self, size: usize) {
        let packet = vec![0x45u8; size];
        let now = std::time::SystemTime::now();
        for _ in 0..PACKETS {
            self.capture.log_packet(Path::FromPeer, now, &packet);
        }
        self.capture.close();
        assert_eq!(self.executor.join().unwrap(), 0, "no output lost records");
    }
}

#[divan::bench(args = CASES, sample_count = 20, sample_size = 1)]
fn into_discard(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| Running::start(outputs, |_| futures_lite::io::sink()))
        .bench_local_values(|running| running.run(size));
}

#[divan::bench(args = CASES, sample_count = 20, sample_size = 1)]
fn into_unix_socket(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| {
            Running::start(outputs, |ex| {
                let (writer, reader) = async_net::unix::UnixStream::pair().expect("socket pair");
                ex.spawn(async move {
                    let mut reader = reader;
                    let mut buffer = vec![0u8; 1 << 16];
                    while reader.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                })
                .detach();
                writer
            })
        })
        .bench_local_values(|running| running.run(size));
}
