//! Records per second from `log_packet` through subscriptions and `stream_to` into
//! writers: one that discards, and a Unix socket read by another task.
//!
//! `cargo bench -p pcapcast-tokio --bench throughput`

use std::thread::JoinHandle;

use divan::counter::ItemsCount;
use divan::Bencher;
use pcapcast_tokio::{stream_to, Capture, Options, Path};
use tokio::io::{AsyncReadExt, AsyncWrite};

fn main() {
    divan::main();
}

const PACKETS: usize = 20_000;
const CASES: [(usize, usize); 4] = [(1, 64), (1, 1500), (16, 64), (16, 1500)];

/// A capture whose outputs run on a tokio runtime thread until the capture closes.
struct Running {
    capture: Capture,
    runtime: JoinHandle<u64>,
}

impl Running {
    fn start<W, F>(outputs: usize, make_writer: F) -> Running
    where
        F: Fn() -> W + Send + 'static,
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
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tasks: Vec<_> = subscriptions
                    .into_iter()
                    .map(|s| tokio::spawn(stream_to(s, make_writer())))
                    .collect();
                let mut dropped = 0;
                for task in tasks {
                    dropped += task.await.unwrap().expect("writer").dropped;
                }
                dropped
            })
        });
        Running { capture, runtime }
    }

    fn run(self, size: usize) {
        let packet = vec![0x45u8; size];
        let now = std::time::SystemTime::now();
        for _ in 0..PACKETS {
            self.capture.log_packet(Path::FromPeer, now, &packet);
        }
        self.capture.close();
        assert_eq!(self.runtime.join().unwrap(), 0, "no output lost records");
    }
}

#[divan::bench(args = CASES, sample_count = 20, sample_size = 1)]
fn into_discard(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| Running::start(outputs, tokio::io::sink))
        .bench_local_values(|running| running.run(size));
}

#[divan::bench(args = CASES, sample_count = 20, sample_size = 1)]
fn into_unix_socket(bencher: Bencher, (outputs, size): (usize, usize)) {
    bencher
        .counter(ItemsCount::new(PACKETS))
        .with_inputs(|| {
            Running::start(outputs, || {
                let (writer, mut reader) = tokio::net::UnixStream::pair().expect("socket pair");
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 1 << 16];
                    while reader.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                });
                writer
            })
        })
        .bench_local_values(|running| running.run(size));
}
