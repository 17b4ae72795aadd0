//! A push at work: connecting, streaming one connection, waiting to reconnect.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::rt::{Timer, Write};

use super::losses::{LossWarnings, LOOK_EVERY};
use super::{Push, CONNECT_TIMEOUT, FIRST_RETRY, LAST_CONNECT_TIMEOUT};
use crate::hang_up::HangUp;
use crate::net::duplicate;
use crate::outbox::Outbox;
use crate::stall::{evicted, OnStall, Stalling};
use crate::wait::{sleep_until, Deadline};
use crate::write::due_or_hang_up;
use crate::{Runtime, StdStream, Timed};

/// A push at work: the output, and what waits for the next connection.
pub(super) struct Session<'a, R: Runtime> {
    pub(super) push: &'a Push<R>,
    pub(super) timed: Timed<R>,
    pub(super) outbox: Outbox,
    pub(super) header: Bytes,
    /// Bytes of the subscription's own file header still to skip.
    pub(super) skip: usize,
    pub(super) sent: u64,
    pub(super) losses: LossWarnings,
}

/// TCP keepalive on a pushed connection: a collector whose host vanished without a
/// word is noticed after about a minute of silence, not the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

impl<R: Runtime> Session<'_, R> {
    pub(super) async fn run(&mut self) -> io::Result<()> {
        let push = self.push;
        let collector = push.collector;
        let counters = &push.stats.0;
        let mut wait = push.first_retry;
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    let began = Instant::now();
                    failures = 0;
                    let lost_before = push.stats.lost();
                    let reconnect = counters.connections.fetch_add(1, Ordering::Relaxed) > 0;
                    counters.connected.store(true, Ordering::Relaxed);
                    let ended = self.stream(stream, reconnect.then_some(lost_before)).await;
                    counters.connected.store(false, Ordering::Relaxed);
                    let cut = self.outbox.cut(&mut self.sent);
                    counters.cut.fetch_add(cut, Ordering::Relaxed);
                    counters.sent.store(self.sent, Ordering::Relaxed);
                    if self.timed.subscription().is_evicted() {
                        tracing::warn!(%collector, "the push's output lagged most and gave way to a new output at the capture's limit; the push ends");
                        return Err(evicted());
                    }
                    match ended {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            tracing::warn!(%collector, error = %e, cut, "PCAP-over-IP collector went away; reconnecting")
                        }
                    }
                    if began.elapsed() >= self.push.max_retry {
                        wait = self.push.first_retry;
                    }
                }
                Err(e) if failures == 0 => {
                    failures += 1;
                    tracing::warn!(%collector, error = %e, "cannot reach the PCAP-over-IP collector; retrying");
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(%collector, error = %e, failures, "PCAP-over-IP collector still unreachable");
                }
            }
            if self.push.capture.is_closed() {
                return self.give_up().await;
            }
            let until = Instant::now() + wait;
            // In steps, so that a capture closed meanwhile ends the push soon.
            while Instant::now() < until && !self.push.capture.is_closed() {
                sleep_until::<R>(until.min(Instant::now() + FIRST_RETRY)).await;
            }
            wait = (wait * 2).min(self.push.max_retry);
        }
    }

    async fn connect(&self) -> io::Result<StdStream> {
        let mut connect = pin!(self.push.runtime.connect_tcp(self.push.collector));
        // Once the capture is closed, one last short try for what the backlog holds.
        let limit = match self.push.capture.is_closed() {
            true => LAST_CONNECT_TIMEOUT,
            false => CONNECT_TIMEOUT,
        };
        let mut timeout = R::Timer::default().sleep(limit);
        poll_fn(|cx| match connect.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => timeout.as_mut().poll(cx).map(|()| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                ))
            }),
        })
        .await
    }

    /// One connection: the header, what the last one left, then the output as it
    /// comes. `Ok` once the capture closed and everything went out.
    async fn stream(&mut self, stream: StdStream, lost_before: Option<u64>) -> io::Result<()> {
        let collector = self.push.collector;
        // A collector that closes its end is taken to have gone, as a PCAP-over-IP
        // client is: then a restarted collector is found at once, even when nothing
        // is logged. One that only shuts down its sending side (`nc -l < /dev/null`)
        // is taken so too, and reconnected to: the price of that.
        keep_alive(&stream)?;
        let hang_up = HangUp::watch(&self.push.runtime, duplicate(&stream));
        let mut hang_up = pin!(hang_up);
        let watch = Arc::new(Mutex::new(Some(self.timed.subscription().watch())));
        let mut io = Stalling::<R, _>::new(
            self.push.runtime.stream(stream)?,
            watch,
            self.push.stall_limit,
            OnStall::EndConnection,
        );
        // A first look before anything else: what the backlog lost while the collector
        // was away is counted then, for the reconnect's message.
        let mut ended = match poll_fn(|cx| Poll::Ready(self.timed.poll_due(cx))).await {
            Poll::Ready(Some(bytes)) => {
                self.take(bytes);
                false
            }
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        self.note_drops();
        match lost_before {
            Some(before) => {
                let lost = self.push.stats.lost();
                tracing::warn!(%collector, lost_while_away = lost.saturating_sub(before), lost_in_all = lost, "PCAP-over-IP collector reconnected");
            }
            None => tracing::info!(%collector, "PCAP-over-IP collector connected"),
        }
        self.losses.told(self.push.stats.lost());
        write_all(&mut io, &self.header).await?;
        loop {
            self.write_out(&mut io).await?;
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx)).await?;
            self.push.stats.0.sent.store(self.sent, Ordering::Relaxed);
            if ended {
                return poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
            }
            // The watch is polled only while nothing is due, as `stream_to` does.
            let next = due_or_hang_up(&mut self.timed, hang_up.as_mut()).await?;
            match next {
                Some(bytes) => self.take(bytes),
                None => ended = true,
            }
            self.note_drops();
            let lost = self.push.stats.lost();
            self.losses.warn_if_due(collector, lost, Instant::now());
        }
    }

    /// Writes what the outbox holds. While a write waits, looks at what the output
    /// loses meanwhile and warns about it: a collector that stopped reading is seen
    /// while it is still connected.
    async fn write_out<W: Write + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        let Session {
            push,
            timed,
            outbox,
            sent,
            losses,
            ..
        } = self;
        let counters = &push.stats.0;
        let mut write = pin!(outbox.write_to(io, sent));
        let mut look = Deadline::<R::Timer>::new();
        let mut next = Instant::now() + LOOK_EVERY;
        poll_fn(|cx| {
            if let Poll::Ready(written) = write.as_mut().poll(cx) {
                return Poll::Ready(written);
            }
            while look.poll_at(next, cx).is_ready() {
                let dropped = timed.subscription().count_lost();
                counters.dropped.store(dropped, Ordering::Relaxed);
                losses.warn_if_due(push.collector, push.stats.lost(), Instant::now());
                next = Instant::now() + LOOK_EVERY;
            }
            Poll::Pending
        })
        .await
    }

    /// Queues what the output handed out, and what it has ready besides, without the
    /// subscription's own file header.
    fn take(&mut self, mut bytes: Bytes) {
        loop {
            let skipped = self.skip.min(bytes.len());
            bytes.advance(skipped);
            self.skip -= skipped;
            self.outbox.push(bytes);
            match self.timed.subscription().next_ready() {
                Some(more) => bytes = more,
                None => return,
            }
        }
    }

    fn note_drops(&mut self) {
        let dropped = self.timed.subscription().dropped();
        self.push.stats.0.dropped.store(dropped, Ordering::Relaxed);
    }

    /// The capture closed while the collector was away: what is left is counted as
    /// lost.
    async fn give_up(&mut self) -> io::Result<()> {
        let mut left = self.outbox.records();
        self.outbox = Outbox::default();
        while let Some(bytes) = poll_fn(|cx| self.timed.poll_due(cx)).await {
            self.take(bytes);
            left += self.outbox.records();
            self.outbox = Outbox::default();
        }
        self.note_drops();
        self.push.stats.0.cut.fetch_add(left, Ordering::Relaxed);
        tracing::warn!(collector = %self.push.collector, unsent = left, lost_in_all = self.push.stats.lost(), "the capture closed while the PCAP-over-IP collector was away");
        Ok(())
    }
}

/// Turns TCP keepalive on, with [`KEEPALIVE_IDLE`] of silence before the first probe.
fn keep_alive(stream: &StdStream) -> io::Result<()> {
    use rustix::net::sockopt;
    let StdStream::Tcp(tcp) = stream else {
        return Ok(());
    };
    sockopt::set_socket_keepalive(tcp, true)?;
    sockopt::set_tcp_keepidle(tcp, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(tcp, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(tcp, KEEPALIVE_PROBES)?;
    Ok(())
}

/// Writes all of `bytes`.
async fn write_all<W: Write + Unpin>(writer: &mut W, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *writer).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use rustix::net::sockopt;

    use super::*;

    #[test]
    fn a_pushed_connection_has_keepalive_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!sockopt::socket_keepalive(&tcp).unwrap(), "off by default");
        let stream = StdStream::Tcp(tcp);
        keep_alive(&stream).unwrap();
        let StdStream::Tcp(tcp) = &stream else {
            unreachable!()
        };
        assert!(sockopt::socket_keepalive(tcp).unwrap());
        assert_eq!(sockopt::tcp_keepidle(tcp).unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sockopt::tcp_keepcnt(tcp).unwrap(), KEEPALIVE_PROBES);
    }
}
