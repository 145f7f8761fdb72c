//! Proxying one connection: bytes both ways, byte-exact, half-close
//! propagated.
//!
//! When one side shuts its write half (or closes), the proxy finishes sending
//! what it read and then calls `shutdown(Write)` on the other side, not a full
//! close, so a client that half-closes still receives the whole response.
//! The copy ends when both directions have seen end-of-file (or one failed).
//!
//! **One-shot FastCGI connections end with the response.** When the
//! client's first record is a FastCGI `BEGIN_REQUEST` with `FCGI_KEEP_CONN`
//! clear (what nginx sends unless `fastcgi_keep_conn on`), the protocol
//! says the application closes the connection after its response, and
//! nothing more may flow. php-fpm ends such a connection with
//! `shutdown(Write)` and then waits in a drain loop until its peer closes;
//! a plain proxy would pass that end-of-file to nginx and hold the php-fpm
//! worker until nginx's close has travelled back through the proxy (two
//! more wake-ups of the proxy, one more of nginx and of php-fpm per
//! request). So for such a connection, once php-fpm's side has ended and
//! every byte of the response is written to the client, the proxy closes
//! both sides at once: the client reads the whole response and then
//! end-of-file, exactly as when talking to php-fpm directly, and the
//! php-fpm worker is free one round trip earlier. Any other stream is
//! proxied as above, byte for byte.
//!
//! Data path: a buffered copy with [`BUF_SIZE`] per direction, chosen by
//! measurement (2-core machine, unix socketpairs through one current-thread
//! runtime, release build):
//! | data path                   | bulk, one way | 1 KiB req / 8 KiB resp round trips |
//! |-----------------------------|---------------|------------------------------------|
//! | buffered, 8 KiB             | 1.5–1.7 GB/s  | 54–60 k/s                          |
//! | buffered, 16 KiB            | 2.2–2.3 GB/s  | 54–56 k/s                          |
//! | splice via a 64 KiB pipe    | 3.5–4.2 GB/s  | 52–59 k/s                          |
//!
//! FastCGI through the waker is small request/response pairs, where all
//! three are equal within noise, and php-fpm produces far less than
//! 1.5 GB/s. Splice would cost two pipes per connection (counted against
//! `pipe-user-pages-soft`, 16384 pages here: ~500 connections of 64 KiB
//! pipes per user before the kernel shrinks them to one page) and unsafe
//! code; 8 KiB buffers cost 16 KiB of memory per open connection.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffer per direction per connection.
pub const BUF_SIZE: usize = 8 * 1024;

/// Bytes moved by one proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transferred {
    /// Client to upstream.
    pub up: u64,
    /// Upstream to client.
    pub down: u64,
}

/// The FastCGI request id when `first` (the first bytes a client sent) opens
/// with a `BEGIN_REQUEST` record (version 1, type 1, 8 bytes of content, a
/// known role, reserved bytes zero) whose flags leave `FCGI_KEEP_CONN`
/// clear: the application closes the connection after that one request.
pub fn fastcgi_one_shot(first: &[u8]) -> Option<u16> {
    let h = first.get(..16)?;
    let role = u16::from_be_bytes([h[8], h[9]]);
    let one_shot = h[0] == 1
        && h[1] == 1
        && h[4] == 0
        && h[5] == 8
        && (1..=3).contains(&role)
        && h[10] & 1 == 0
        && h[11..16].iter().all(|&b| b == 0);
    one_shot.then(|| u16::from_be_bytes([h[2], h[3]]))
}

/// Follows FastCGI record boundaries through a response stream, fed in
/// pieces of any size, to tell when the `END_REQUEST` record of one request
/// has passed whole.
#[derive(Debug, Clone)]
pub struct EndWatch {
    id: u16,
    header: [u8; 8],
    have: usize,
    /// Bytes of content and padding of the current record still to pass.
    skip: usize,
    in_end_record: bool,
    ended: bool,
}

impl EndWatch {
    /// Watches for the end of request `id`.
    pub fn new(id: u16) -> Self {
        EndWatch {
            id,
            header: [0; 8],
            have: 0,
            skip: 0,
            in_end_record: false,
            ended: false,
        }
    }

    /// Takes the next bytes of the stream; true once the `END_REQUEST`
    /// record of the request has passed completely (in this piece or
    /// before).
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() && !self.ended {
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skip -= k;
                data = &data[k..];
                self.ended = self.skip == 0 && self.in_end_record;
                continue;
            }
            let k = (8 - self.have).min(data.len());
            self.header[self.have..self.have + k].copy_from_slice(&data[..k]);
            self.have += k;
            data = &data[k..];
            if self.have == 8 {
                self.have = 0;
                let h = &self.header;
                self.skip = usize::from(u16::from_be_bytes([h[4], h[5]])) + usize::from(h[6]);
                self.in_end_record = h[1] == 3 && u16::from_be_bytes([h[2], h[3]]) == self.id;
                self.ended = self.skip == 0 && self.in_end_record;
            }
        }
        self.ended
    }
}

/// Why one direction of the copy stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The reader ended and every byte was written (and the end passed on,
    /// if asked).
    Eof,
    /// The watched FastCGI request's `END_REQUEST` record was written.
    Ended,
}

/// One direction of the copy.
struct Half {
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// The reader said end-of-file.
    eof: bool,
    /// This direction is finished.
    done: bool,
    moved: u64,
    /// Client to upstream: the first read is looked at once.
    sniffed: Option<Option<u16>>,
    /// Upstream to client, one-shot connections: the end of the response.
    watch: Option<EndWatch>,
    ended: bool,
}

impl Half {
    fn new() -> Self {
        Half {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            done: false,
            moved: 0,
            sniffed: None,
            watch: None,
            ended: false,
        }
    }

    /// Moves bytes from `r` to `w` until `r` would block, ends, or (when
    /// watched) the response is through. At the reader's end, every byte
    /// is written and then, when `pass_eof`, `w` is shut for writing.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
        pass_eof: bool,
    ) -> Poll<io::Result<Stop>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                ready!(r.as_mut().poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if self.sniffed.is_none() {
                    self.sniffed = Some(fastcgi_one_shot(&self.buf[..n]));
                }
                if n == 0 {
                    self.eof = true;
                } else {
                    self.pos = 0;
                    self.end = n;
                    if let Some(watch) = &mut self.watch {
                        self.ended = watch.feed(&self.buf[..n]);
                    }
                }
            }
            while self.pos < self.end {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.moved += n as u64;
            }
            if self.ended {
                self.done = true;
                return Poll::Ready(Ok(Stop::Ended));
            }
            if self.eof {
                if pass_eof {
                    ready!(w.as_mut().poll_shutdown(cx))?;
                }
                self.done = true;
                return Poll::Ready(Ok(Stop::Eof));
            }
        }
    }
}

/// Copies `client` ↔ `upstream` until both directions are done, or, for a
/// one-shot FastCGI connection, until the response is through (see the
/// module notes). An error concerns this connection only; the caller logs
/// it and drops both streams, which closes them.
pub async fn proxy<C, U>(client: &mut C, upstream: &mut U) -> io::Result<Transferred>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Half::new();
    let mut down = Half::new();
    down.sniffed = Some(None);
    let mut one_shot = false;
    poll_fn(|cx| -> Poll<io::Result<()>> {
        if !up.done {
            let r = up.poll_copy(cx, Pin::new(&mut *client), Pin::new(&mut *upstream), true);
            if !one_shot && let Some(Some(id)) = up.sniffed {
                one_shot = true;
                down.watch = Some(EndWatch::new(id));
            }
            if let Poll::Ready(r) = r {
                r?;
            }
        }
        if !down.done {
            // One-shot: the upstream's end (or its END_REQUEST) is the end
            // of the connection; both are closed by the caller's drop.
            let r = down.poll_copy(
                cx,
                Pin::new(&mut *upstream),
                Pin::new(&mut *client),
                !one_shot,
            );
            if let Poll::Ready(r) = r {
                if r? == Stop::Ended || one_shot {
                    return Poll::Ready(Ok(()));
                }
            }
        }
        if up.done && down.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(Transferred {
        up: up.moved,
        down: down.moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// Deterministic pseudo-random bytes (xorshift), so corruption, loss or
    /// reordering shows.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    type ProxyTask = tokio::task::JoinHandle<io::Result<Transferred>>;

    /// client_app <-> (client side | proxy | upstream side) <-> server_app
    fn through_proxy() -> (UnixStream, UnixStream, ProxyTask) {
        let (client_app, mut client_side) = UnixStream::pair().expect("pair");
        let (mut upstream_side, server_app) = UnixStream::pair().expect("pair");
        let task = tokio::spawn(async move { proxy(&mut client_side, &mut upstream_side).await });
        (client_app, server_app, task)
    }

    /// One FastCGI record (content padded to 8 bytes).
    fn record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
        let pad = (8 - content.len() % 8) % 8;
        let mut out = vec![1, kind];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        out.extend_from_slice(&[pad as u8, 0]);
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(0u8, pad));
        out
    }

    /// What nginx sends first: BEGIN_REQUEST, role responder, `flags`.
    fn begin(id: u16, flags: u8) -> Vec<u8> {
        record(1, id, &[0, 1, flags, 0, 0, 0, 0, 0])
    }

    /// A php-fpm style response: stdout, empty stdout, END_REQUEST.
    fn response(id: u16, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in body.chunks(65535) {
            out.extend(record(6, id, chunk));
        }
        out.extend(record(6, id, &[]));
        out.extend(record(3, id, &[0, 0, 0, 0, 0, 0, 0, 0]));
        out
    }

    #[test]
    fn one_shot_is_a_begin_request_without_keep_conn() {
        assert_eq!(fastcgi_one_shot(&begin(1, 0)), Some(1));
        assert_eq!(fastcgi_one_shot(&begin(513, 0)), Some(513));
        let mut with_params = begin(7, 0);
        with_params.extend(record(4, 7, b"\x04\x03HOSTabc"));
        assert_eq!(fastcgi_one_shot(&with_params), Some(7));
        // Keep-conn: the client may send another request; not one-shot.
        assert_eq!(fastcgi_one_shot(&begin(1, 1)), None);
        // Too short, another record type, another version, a bad role.
        assert_eq!(fastcgi_one_shot(&begin(1, 0)[..15]), None);
        assert_eq!(fastcgi_one_shot(&record(4, 1, &[0; 8])), None);
        let mut v2 = begin(1, 0);
        v2[0] = 2;
        assert_eq!(fastcgi_one_shot(&v2), None);
        assert_eq!(
            fastcgi_one_shot(&record(1, 1, &[0, 9, 0, 0, 0, 0, 0, 0])),
            None
        );
        assert_eq!(fastcgi_one_shot(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(fastcgi_one_shot(&pattern(4096, 3)), None);
    }

    #[test]
    fn end_watch_ends_exactly_after_the_end_request_however_split() {
        let mut stream = response(1, &pattern(70_000, 5));
        // Another request's END_REQUEST earlier in the stream does not count.
        let mut other = record(3, 2, &[0; 8]);
        other.extend(stream);
        stream = other;
        // Every split into two pieces.
        for cut in 0..=stream.len() {
            if cut % 97 != 0 && cut + 20 < stream.len() {
                continue; // every 97th, and all near the end
            }
            let mut w = EndWatch::new(1);
            let first = w.feed(&stream[..cut]);
            assert_eq!(first, cut == stream.len(), "cut {cut}");
            assert!(w.feed(&stream[cut..]) || cut == stream.len(), "cut {cut}");
        }
        // Byte by byte: true from the last byte on, never before.
        let mut w = EndWatch::new(1);
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(
                w.feed(std::slice::from_ref(b)),
                i + 1 == stream.len(),
                "byte {i}"
            );
        }
        // Without the END_REQUEST, never.
        let mut w = EndWatch::new(1);
        assert!(!w.feed(&stream[..stream.len() - 16]));
        assert!(!EndWatch::new(9).feed(&stream));
    }

    /// php-fpm's way of ending a one-shot connection: answer, shut the write
    /// side, then wait for the peer to close. Through the proxy that close
    /// must come at once, without the client doing anything, and the client
    /// must read the whole answer and then end-of-file.
    #[tokio::test(flavor = "current_thread")]
    async fn one_shot_connection_ends_with_the_response() {
        let (mut client_app, mut server_app, proxy_task) = through_proxy();
        let mut req = begin(1, 0);
        req.extend(record(4, 1, &[]));
        req.extend(record(5, 1, &[]));
        let body = pattern(200_000, 4);
        let resp = response(1, &body);
        let resp2 = resp.clone();
        let req_len = req.len();
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; req_len];
            server_app.read_exact(&mut got).await.expect("request");
            server_app.write_all(&resp2).await.expect("response");
            server_app.shutdown().await.expect("shutdown");
            // php-fpm's drain loop.
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), server_app.read_to_end(&mut rest))
                .await
                .expect("the proxy closes php-fpm's side without waiting for the client");
            (got, n.map(|_| rest.len()))
        });
        client_app.write_all(&req).await.expect("client write");
        // The client neither closes nor half-closes before reading.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client_app.read_to_end(&mut got))
            .await
            .expect("the client gets end-of-file after the response")
            .expect("client read");
        assert!(
            got == resp,
            "response corrupted ({} of {} bytes)",
            got.len(),
            resp.len()
        );
        let (seen, drained) = server.await.expect("server task");
        assert_eq!(seen, req);
        assert!(
            matches!(drained, Ok(0)),
            "php-fpm read nothing more: {drained:?}"
        );
        let t = proxy_task.await.expect("proxy task").expect("proxy ok");
        assert_eq!((t.up, t.down), (req.len() as u64, resp.len() as u64));
    }

    /// With `FCGI_KEEP_CONN` set, or any stream that is not a one-shot
    /// FastCGI request, an upstream's half-close is passed on and the client
    /// can still send: nothing is cut short.
    #[tokio::test(flavor = "current_thread")]
    async fn upstream_half_close_is_passed_on_when_not_one_shot() {
        for first in [begin(1, 1), b"plain bytes, not FastCGI".to_vec()] {
            let (mut client_app, mut server_app, proxy_task) = through_proxy();
            client_app.write_all(&first).await.expect("client write");
            let mut buf = vec![0u8; first.len()];
            server_app.read_exact(&mut buf).await.expect("server read");
            // The upstream answers (with an END_REQUEST, even) and shuts its
            // write side, but keeps reading.
            let answer = response(1, b"partial");
            server_app.write_all(&answer).await.expect("server write");
            server_app.shutdown().await.expect("server half-close");
            let mut got = Vec::new();
            client_app.read_to_end(&mut got).await.expect("client read");
            assert_eq!(got, answer);
            // The client still sends, and that arrives.
            client_app
                .write_all(b"more")
                .await
                .expect("client writes after");
            client_app.shutdown().await.expect("client half-close");
            let mut rest = Vec::new();
            server_app
                .read_to_end(&mut rest)
                .await
                .expect("server read rest");
            assert_eq!(rest, b"more");
            let t = proxy_task.await.expect("proxy task").expect("proxy ok");
            assert_eq!(t.up, first.len() as u64 + 4);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn byte_exact_both_ways_with_half_close() {
        let (mut client_app, mut server_app, proxy_task) = through_proxy();
        let req = pattern(3 * 1024 * 1024 + 17, 1);
        let resp = pattern(5 * 1024 * 1024 + 3, 2);

        // Server: read the whole request until EOF (the client's half-close
        // must arrive as EOF), then answer.
        let req2 = req.clone();
        let resp2 = resp.clone();
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            server_app.read_to_end(&mut got).await.expect("server read");
            assert_eq!(got.len(), req2.len());
            assert!(got == req2, "request corrupted");
            server_app.write_all(&resp2).await.expect("server write");
            server_app.shutdown().await.expect("server shutdown");
        });

        client_app.write_all(&req).await.expect("client write");
        client_app.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.expect("client read");
        assert_eq!(got.len(), resp.len());
        assert!(got == resp, "response corrupted");
        server.await.expect("server task");
        let t = proxy_task.await.expect("proxy task").expect("proxy ok");
        assert_eq!(t.up, req.len() as u64);
        assert_eq!(t.down, resp.len() as u64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_failing_does_not_touch_another() {
        let (mut a_app, mut a_side) = UnixStream::pair().expect("pair");
        let (mut a_up, a_srv) = UnixStream::pair().expect("pair");
        let (mut b_app, mut b_side) = UnixStream::pair().expect("pair");
        let (mut b_up, mut b_srv) = UnixStream::pair().expect("pair");
        let ta = tokio::spawn(async move { proxy(&mut a_side, &mut a_up).await });
        let tb = tokio::spawn(async move { proxy(&mut b_side, &mut b_up).await });
        // A's upstream vanishes mid-request, A's client goes away.
        drop(a_srv);
        a_app.write_all(b"hello").await.ok();
        drop(a_app);
        let _ = ta.await.expect("task a");
        // B still works.
        b_app.write_all(b"ping").await.expect("write b");
        let mut buf = [0u8; 4];
        b_srv.read_exact(&mut buf).await.expect("read b");
        assert_eq!(&buf, b"ping");
        b_srv.write_all(b"pong").await.expect("write b srv");
        b_app.read_exact(&mut buf).await.expect("read b app");
        assert_eq!(&buf, b"pong");
        drop(b_app);
        drop(b_srv);
        tb.await.expect("task b").ok();
    }
}
