//! Relaying one connection between a FastCGI front end and php-fpm:
//! byte-exact both ways, and as transparent as talking to php-fpm directly.
//!
//! **Streams.** The first bytes a client sends decide: a FastCGI
//! `BEGIN_REQUEST` record ([`opening`]) makes it a FastCGI stream, whose
//! record boundaries the relay follows in both directions (a few integer
//! operations per record header, nothing per byte); anything else is a
//! plain stream, copied byte for byte with half-closes passed on as
//! `shutdown(Write)`.
//!
//! **Each direction ends on its own.** An error writing to one side never
//! discards bytes already read from the other: when php-fpm answers and
//! closes while the client is still sending, the client's further bytes
//! are read and dropped while the answer is relayed to its end, then the
//! end-of-file is passed on.
//!
//! **One-shot requests end with the response.** A request whose
//! `BEGIN_REQUEST` leaves `FCGI_KEEP_CONN` clear (nginx's default, Apache
//! without `enablereuse`, `cgi-fcgi`) ends once its `END_REQUEST` record is
//! written to the client: php-fpm's side is closed at once (php-fpm would
//! otherwise wait in its drain loop for a close that has to travel through
//! the relay from the client), the client's write side is shut (it reads the
//! whole response and then end-of-file, as from php-fpm), and the client's
//! input is then read and dropped until it closes or [`LINGER`] passes.
//! That last part is what php-fpm's own drain loop does: some clients
//! (Apache, `cgi-fcgi`) send the closing empty `FCGI_STDIN` record in a
//! write of its own that may come after the answer, and it must not meet a
//! closed socket (`EPIPE`, a 503 for a request that ran). A client whose
//! closing `FCGI_STDIN` has already passed (nginx sends the whole request
//! in one write) has nothing more to send: its connection is simply closed
//! after the response, which costs no more than a plain proxy.
//!
//! **Kept connections are not tied to one php-fpm connection.** php-fpm's
//! connection is closed once a request's `END_REQUEST` is written and no
//! other request is in flight: kept open, it would pin a php-fpm worker for
//! as long as the front end pools the connection. On a
//! `FCGI_KEEP_CONN` stream (nginx `fastcgi_keep_conn on` + `keepalive`,
//! Apache `enablereuse=on`), the relay looks at each record that starts
//! while no request is in flight: before a `BEGIN_REQUEST` goes out it
//! checks that php-fpm's connection is still there and its process not
//! frozen (`docker pause`), and otherwise gets a fresh one from
//! [`Upstreams::connect`], which wakes the container. php-fpm closing the
//! connection between requests (the reaper stopped the container, a worker
//! recycled) does not close the client's: the next request reconnects.
//! So a pooled connection never hangs on a paused site, and an idle pooled
//! connection does not have to keep a site awake: activity is counted in
//! requests ([`Upstreams::began`], [`Upstreams::ended`]: from the
//! `BEGIN_REQUEST` to its `END_REQUEST`), not in connections. Stray
//! records of a finished request (a late empty `FCGI_STDIN`) are passed on
//! (php-fpm skips them) or, with no php-fpm connection, dropped; they never
//! wake a site.
//!
//! A plain stream counts as one unit of activity for its whole life, and
//! a client byte that arrives after its php-fpm was frozen thaws it first
//! ([`Upstreams::thaw`]).
//!
//! Data path: a buffered copy with `BUF_SIZE` per direction, chosen by
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

use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::fastcgi::{self, BEGIN_REQUEST, END_REQUEST, Header, KEEP_CONN, STDIN};

/// Buffer per direction per connection.
const BUF_SIZE: usize = 8 * 1024;

/// How long, after a one-shot request's response (or after php-fpm's end
/// while the client still sends), the client's input is still read and
/// dropped before its connection is closed anyway.
pub const LINGER: Duration = Duration::from_secs(2);

const HEADER: usize = fastcgi::HEADER_LEN;

/// What the relay needs from its owner: php-fpm connections and a place
/// to report activity.
pub trait Upstreams {
    /// A connection to php-fpm.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;

    /// A fresh connection to a php-fpm that accepts and is not frozen,
    /// waking the container when needed; `None` when that failed (the
    /// implementation logs why; the client's connection is then closed).
    fn connect(&mut self) -> impl Future<Output = Option<Self::Stream>> + Send;

    /// Makes a frozen php-fpm run again; false when that failed.
    fn thaw(&mut self) -> impl Future<Output = bool> + Send;

    /// True when the process behind `s` is frozen (`docker pause`).
    fn is_frozen(&mut self, s: &Self::Stream) -> bool;

    /// A FastCGI request began on this connection after its first (the
    /// first, and a plain stream, are counted by the owner when it accepts
    /// the connection).
    fn began(&mut self);

    /// A FastCGI request ended (its `END_REQUEST` passed).
    fn ended(&mut self);

    /// False when a request that starts while none is in flight must wait
    /// for [`Upstreams::admit`] first (the site lock, [`crate::drain`]).
    fn admitted(&self) -> bool {
        true
    }

    /// Waits until the next request may go to php-fpm.
    fn admit(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// See [`LINGER`].
    fn linger(&self) -> Duration {
        LINGER
    }

    /// See [`ABANDONED_AFTER`].
    fn abandoned_after(&self) -> Duration {
        ABANDONED_AFTER
    }
}

/// A request that waited this long (a wake, the site lock) before it could
/// go to php-fpm is not sent if its client closed meanwhile: the front end
/// gave up (nginx's read timeout, a user's 499) and its user may resubmit.
/// One that did not wait runs even so, as php-fpm itself runs a buffered
/// request whose client left (WordPress's cron spawn sends and hangs up).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(1);

/// True when the client closed ([`hung_up`]) after a wait of at least
/// `limit` ([`ABANDONED_AFTER`]) that began at `since`.
pub fn abandoned(client: BorrowedFd<'_>, since: std::time::Instant, limit: Duration) -> bool {
    since.elapsed() >= limit && hung_up(client)
}

/// What one relayed connection did.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Bytes written to php-fpm.
    pub up: u64,
    /// Bytes written to the client.
    pub down: u64,
    /// FastCGI requests begun (0 for a plain stream).
    pub requests: u64,
    /// php-fpm connections used (1 + reconnects).
    pub upstreams: u32,
    /// The first I/O error, for the log. It ended its own direction only.
    pub error: Option<io::Error>,
}

/// What the first bytes of a client's stream say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// So far they could open a FastCGI `BEGIN_REQUEST` record: wait.
    More,
    /// Not FastCGI.
    Plain,
    /// A `BEGIN_REQUEST` record (version 1, type 1, 8 bytes of content, a
    /// known role, reserved bytes zero) for request `id`.
    FastCgi { id: u16, keep_conn: bool },
}

/// Classifies a stream by its first bytes (at most 16 are looked at).
pub fn opening(first: &[u8]) -> Opening {
    // version, type, (id), content length (2), (padding), (reserved),
    // role (2), flags, reserved (5)
    let fixed = [(0, 1), (1, BEGIN_REQUEST), (4, 0), (5, 8), (8, 0)];
    for (i, want) in fixed {
        if first.get(i).is_some_and(|&b| b != want) {
            return Opening::Plain;
        }
    }
    if first.get(9).is_some_and(|r| !(1..=3).contains(r)) {
        return Opening::Plain;
    }
    if first.iter().take(16).skip(11).any(|&b| b != 0) {
        return Opening::Plain;
    }
    if first.len() < 16 {
        return Opening::More;
    }
    Opening::FastCgi {
        id: u16::from_be_bytes([first[2], first[3]]),
        keep_conn: first[10] & KEEP_CONN != 0,
    }
}

/// Follows FastCGI record boundaries through a response stream fed in
/// pieces of any size.
#[derive(Debug, Clone, Default)]
struct Records {
    header: [u8; HEADER],
    have: usize,
    /// Content and padding of the current record still to pass.
    skip: usize,
}

/// What one piece of a response stream held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Fed {
    /// `END_REQUEST` records that passed whole.
    ends: u32,
    /// The piece's length up to and including the `END_REQUEST` record of
    /// the watched request, when it passed whole in this piece.
    last: Option<usize>,
}

impl Records {
    /// Takes the next piece; `last_of` is the request whose end ends the
    /// stream (a one-shot request).
    fn feed(&mut self, data: &[u8], last_of: Option<u16>) -> Fed {
        let mut fed = Fed::default();
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let k = self.skip.min(data.len() - i);
                self.skip -= k;
                i += k;
            } else {
                let k = (HEADER - self.have).min(data.len() - i);
                self.header[self.have..self.have + k].copy_from_slice(&data[i..i + k]);
                self.have += k;
                i += k;
                if self.have < HEADER {
                    break;
                }
                self.have = 0;
                self.skip = Header::parse(&self.header).map_or(0, Header::body_len);
            }
            if self.skip == 0 && self.have == 0 && self.header[1] == END_REQUEST {
                fed.ends += 1;
                // Marked so that a later piece does not count it again.
                self.header[1] = 0;
                let id = u16::from_be_bytes([self.header[2], self.header[3]]);
                if last_of == Some(id) {
                    fed.last = Some(i);
                    break;
                }
            }
        }
        fed
    }
}

/// What the stream turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unknown,
    Plain,
    FastCgi,
}

/// What the relay's owner must do before the relay can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Done,
    /// A request needs a (new) php-fpm connection.
    Reconnect,
    /// A plain stream's php-fpm is frozen.
    Thaw,
    /// Only the client's input is left to drop: bound the rest.
    Linger,
    /// A request starts while none is in flight: the owner admits it
    /// before it is checked and sent.
    Admit,
}

/// Client to php-fpm.
#[derive(Debug)]
struct Up {
    buf: Box<[u8]>,
    /// Written up to here.
    pos: usize,
    /// Released (framing checked) up to here.
    safe: usize,
    /// Filled up to here.
    end: usize,
    /// Content and padding of the current record still to release.
    skip: usize,
    eof: bool,
    /// Reads are dropped: php-fpm's side cannot take them any more.
    discard: bool,
    done: bool,
    reads: u64,
    moved: u64,
}

/// php-fpm to client.
#[derive(Debug)]
struct Down {
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    records: Records,
    eof: bool,
    /// The last response is in the buffer: end after writing it.
    last: bool,
    done: bool,
    moved: u64,
}

struct Relay<S> {
    upstream: Option<S>,
    kind: Kind,
    /// FastCGI requests between `BEGIN_REQUEST` and `END_REQUEST`.
    in_flight: u32,
    /// A request without `FCGI_KEEP_CONN`: its end ends the connection.
    last_of: Option<u16>,
    /// That request's closing empty `FCGI_STDIN` came: the client has
    /// nothing more to send.
    sent_all: bool,
    requests: u64,
    /// The php-fpm connection was just made (and checked) for the next
    /// request.
    fresh: bool,
    upstreams: u32,
    up: Up,
    down: Down,
    lingering: bool,
    error: Option<io::Error>,
}

/// Keeps the first error.
fn note(slot: &mut Option<io::Error>, e: io::Error) {
    if slot.is_none() {
        *slot = Some(e);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Relay<S> {
    fn new(upstream: S) -> Self {
        Relay {
            upstream: Some(upstream),
            kind: Kind::Unknown,
            in_flight: 0,
            last_of: None,
            sent_all: false,
            requests: 0,
            fresh: true,
            upstreams: 1,
            up: Up {
                buf: vec![0; BUF_SIZE].into_boxed_slice(),
                pos: 0,
                safe: 0,
                end: 0,
                skip: 0,
                eof: false,
                discard: false,
                done: false,
                reads: 0,
                moved: 0,
            },
            down: Down {
                buf: vec![0; BUF_SIZE].into_boxed_slice(),
                pos: 0,
                end: 0,
                records: Records::default(),
                eof: false,
                last: false,
                done: false,
                moved: 0,
            },
            lingering: false,
            error: None,
        }
    }

    /// A new php-fpm connection for the next request.
    fn attach(&mut self, upstream: S) {
        self.upstream = Some(upstream);
        self.upstreams += 1;
        self.fresh = true;
    }

    /// Lets go of php-fpm's connection between requests. What it still had
    /// to say belongs to no request, and what was released for it belongs
    /// to finished ones (php-fpm would have dropped it too).
    fn release_upstream(&mut self) {
        self.upstream = None;
        let d = &mut self.down;
        d.pos = 0;
        d.end = 0;
        d.eof = false;
        d.records = Records::default();
        self.up.pos = self.up.safe;
    }

    /// Between two requests of a kept connection.
    fn between_requests(&self) -> bool {
        self.kind == Kind::FastCgi && self.in_flight == 0 && self.last_of.is_none()
    }

    fn poll<C, H>(&mut self, cx: &mut Context<'_>, client: &mut C, hooks: &mut H) -> Poll<Step>
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        H: Upstreams<Stream = S>,
    {
        // php-fpm's side first: its end (or answer) is known before the
        // client's next bytes are looked at.
        if !self.down.done {
            self.poll_down(cx, client, hooks);
        }
        if !self.up.done {
            if let Some(step) = self.poll_up(cx, client, hooks) {
                return Poll::Ready(step);
            }
        }
        if self.up.done && (self.down.done || self.upstream.is_none()) {
            return Poll::Ready(Step::Done);
        }
        if self.down.done && self.up.discard && !self.lingering {
            self.lingering = true;
            return Poll::Ready(Step::Linger);
        }
        Poll::Pending
    }

    fn poll_down<C, H>(&mut self, cx: &mut Context<'_>, client: &mut C, hooks: &mut H)
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        H: Upstreams<Stream = S>,
    {
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return;
            };
            let d = &mut self.down;
            if d.pos == d.end && !d.eof && !d.last {
                let mut rb = ReadBuf::new(&mut d.buf);
                let r = match Pin::new(upstream).poll_read(cx, &mut rb) {
                    Poll::Pending => return,
                    Poll::Ready(r) => r.map(|()| rb.filled().len()),
                };
                match r {
                    Ok(0) => d.eof = true,
                    Ok(n) => {
                        d.pos = 0;
                        d.end = n;
                        if self.kind == Kind::FastCgi {
                            let fed = d.records.feed(&d.buf[..n], self.last_of);
                            if let Some(k) = fed.last {
                                // Nothing may follow the last response.
                                d.end = k;
                                d.last = true;
                            }
                            for _ in 0..fed.ends {
                                if self.in_flight > 0 {
                                    self.in_flight -= 1;
                                    hooks.ended();
                                }
                            }
                        }
                    }
                    Err(e) => {
                        // ECONNRESET after php-fpm's last bytes: its end.
                        d.eof = true;
                        note(&mut self.error, e);
                    }
                }
                continue;
            }
            while d.pos < d.end {
                match Pin::new(&mut *client).poll_write(cx, &d.buf[d.pos..d.end]) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        d.pos += n;
                        d.moved += n as u64;
                    }
                    Poll::Ready(r) => {
                        // The client cannot take the answer: this direction
                        // is over; the other ends on its own (its input is
                        // dropped from now on, within the linger bound).
                        note(
                            &mut self.error,
                            r.err().unwrap_or_else(|| io::ErrorKind::WriteZero.into()),
                        );
                        d.done = true;
                        self.up.discard = true;
                        return;
                    }
                }
            }
            if d.last {
                // The one-shot request is answered: php-fpm's side is
                // closed now, the client reads end-of-file next, and its
                // input is dropped from here on.
                d.done = true;
                self.upstream = None;
                self.up.discard = true;
                if self.sent_all {
                    // The client sent its whole request (nginx does, in one
                    // write): closing is all that is left, as before there
                    // was a linger; no shutdown, no wait for its close.
                    self.up.done = true;
                } else if let Poll::Ready(Err(e)) = Pin::new(&mut *client).poll_shutdown(cx) {
                    note(&mut self.error, e);
                }
                return;
            }
            let at_boundary = d.records.have == 0 && d.records.skip == 0;
            let between =
                self.kind == Kind::FastCgi && self.in_flight == 0 && self.last_of.is_none();
            if between && self.requests > 0 && at_boundary && !self.up.eof {
                // The kept connection's request is answered: let go of
                // php-fpm's connection now. Held between requests it would
                // pin a php-fpm worker for as long as the front end pools
                // its connection, and that worker would count as busy on
                // the status page the reaper reads. The next request
                // reconnects.
                self.release_upstream();
                return;
            }
            if d.eof {
                if self.between_requests() && !self.up.eof {
                    // php-fpm let go of a kept connection between requests:
                    // keep the client's; its next request reconnects.
                    self.release_upstream();
                    return;
                }
                match Pin::new(&mut *client).poll_shutdown(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Err(e)) => note(&mut self.error, e),
                    Poll::Ready(Ok(())) => {}
                }
                self.down.done = true;
                return;
            }
        }
    }

    /// `Some` when the owner must act before the relay goes on.
    fn poll_up<C, H>(&mut self, cx: &mut Context<'_>, client: &mut C, hooks: &mut H) -> Option<Step>
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
        H: Upstreams<Stream = S>,
    {
        loop {
            if let Some(step) = self.release(hooks) {
                return Some(step);
            }
            let u = &mut self.up;
            if u.pos < u.safe {
                let target = if u.discard {
                    None
                } else {
                    self.upstream.as_mut()
                };
                let Some(upstream) = target else {
                    // Nowhere to go: dropped (see `release_upstream`).
                    u.pos = u.safe;
                    continue;
                };
                match Pin::new(upstream).poll_write(cx, &u.buf[u.pos..u.safe]) {
                    Poll::Pending => return None,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        u.pos += n;
                        u.moved += n as u64;
                    }
                    Poll::Ready(r) => {
                        note(
                            &mut self.error,
                            r.err().unwrap_or_else(|| io::ErrorKind::WriteZero.into()),
                        );
                        if self.between_requests() {
                            self.release_upstream();
                        } else {
                            // php-fpm's side is gone mid-request: what it
                            // already answered still goes to the client.
                            self.up.discard = true;
                            self.up.pos = self.up.safe;
                        }
                    }
                }
                continue;
            }
            if u.eof {
                if !u.discard {
                    if let Some(upstream) = self.upstream.as_mut() {
                        match Pin::new(upstream).poll_shutdown(cx) {
                            Poll::Pending => return None,
                            Poll::Ready(Err(e)) => note(&mut self.error, e),
                            Poll::Ready(Ok(())) => {}
                        }
                    }
                }
                self.up.done = true;
                return None;
            }
            // Everything released is written: keep the held-back bytes (at
            // most a record header and a few content bytes) and read after
            // them.
            if u.discard {
                u.pos = 0;
                u.safe = 0;
                u.end = 0;
            } else if u.pos > 0 {
                u.buf.copy_within(u.pos..u.end, 0);
                u.safe -= u.pos;
                u.end -= u.pos;
                u.pos = 0;
            }
            let mut rb = ReadBuf::new(&mut u.buf[u.end..]);
            let r = match Pin::new(&mut *client).poll_read(cx, &mut rb) {
                Poll::Pending => return None,
                Poll::Ready(r) => r.map(|()| rb.filled().len()),
            };
            match r {
                Ok(0) => u.eof = true,
                Ok(n) => {
                    u.end += n;
                    u.reads += 1;
                    if self.kind == Kind::Plain && u.reads > 1 && !u.discard {
                        // A plain stream cannot be moved to a new php-fpm
                        // connection: a frozen one is thawed first.
                        if let Some(upstream) = self.upstream.as_ref() {
                            if hooks.is_frozen(upstream) {
                                return Some(Step::Thaw);
                            }
                        }
                    }
                }
                Err(e) => {
                    u.eof = true;
                    note(&mut self.error, e);
                }
            }
        }
    }

    /// Releases what the framing allows of the client's bytes read so far;
    /// at a request boundary, `Some` when php-fpm's connection must be
    /// replaced first.
    fn release<H>(&mut self, hooks: &mut H) -> Option<Step>
    where
        H: Upstreams<Stream = S>,
    {
        let u = &mut self.up;
        if u.discard || self.kind == Kind::Plain {
            u.safe = u.end;
            return None;
        }
        if self.kind == Kind::Unknown {
            match opening(&u.buf[u.safe..u.end]) {
                Opening::More if !u.eof && u.end < u.buf.len() => return None,
                Opening::More | Opening::Plain => {
                    self.kind = Kind::Plain;
                    u.safe = u.end;
                    return None;
                }
                Opening::FastCgi { id, keep_conn } => {
                    // The first request was counted at accept.
                    self.kind = Kind::FastCgi;
                    self.in_flight = 1;
                    self.requests = 1;
                    self.fresh = false;
                    if !keep_conn {
                        self.last_of = Some(id);
                    }
                    u.skip = 8 + usize::from(u.buf[u.safe + 6]);
                    u.safe += HEADER;
                }
            }
        }
        loop {
            let u = &mut self.up;
            if u.skip > 0 {
                let k = u.skip.min(u.end - u.safe);
                if k == 0 {
                    return None;
                }
                u.safe += k;
                u.skip -= k;
                continue;
            }
            let avail = u.end - u.safe;
            let h = &u.buf[u.safe..u.end];
            let Some(header) = Header::parse(h) else {
                if u.eof {
                    u.safe = u.end;
                }
                return None;
            };
            let (kind, id) = (header.kind, header.id);
            let len = usize::from(header.content_len);
            let skip = header.body_len();
            if kind == BEGIN_REQUEST {
                // Its flags (content byte 2) say how it ends.
                if len > 2 && avail < HEADER + 3 {
                    if u.eof {
                        u.safe = u.end;
                    }
                    return None;
                }
                let flags = if len > 2 { h[HEADER + 2] } else { 0 };
                if self.in_flight == 0 && !hooks.admitted() {
                    // Admitted first, then checked: the site may have been
                    // put to sleep while this request waited.
                    return Some(Step::Admit);
                }
                if self.in_flight == 0 {
                    let stale = match self.upstream.as_ref() {
                        None => true,
                        Some(s) => !self.fresh && hooks.is_frozen(s),
                    };
                    if stale {
                        self.release_upstream();
                        return Some(Step::Reconnect);
                    }
                }
                self.fresh = false;
                self.in_flight += 1;
                self.requests += 1;
                hooks.began();
                if flags & KEEP_CONN == 0 {
                    self.last_of = Some(id);
                }
            } else if kind == STDIN && len == 0 && self.last_of == Some(id) {
                self.sent_all = true;
            } else if id == 0 && self.upstream.is_none() {
                // A management record (FCGI_GET_VALUES) needs php-fpm: like
                // a request, admitted first (a wake under the reaper's lock
                // would undo its drain).
                if !hooks.admitted() {
                    return Some(Step::Admit);
                }
                self.release_upstream();
                return Some(Step::Reconnect);
            }
            let u = &mut self.up;
            u.safe += HEADER;
            u.skip = skip;
        }
    }
}

/// True when the client has closed its connection, without reading from
/// it: `POLLHUP`, which a unix socket reports once the peer closed it (or
/// shut both directions; call it before this side shuts its own). A client
/// that only half-closed after sending its request (`POLLRDHUP`) still
/// reads the answer, so it is not hung up.
pub fn hung_up(client: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(client, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// Relays `client` ↔ php-fpm (`upstream`, already connected and ready)
/// until the client's connection is over, as the module notes say. Never
/// fails as a whole: I/O errors end their own direction and the first is
/// returned for the log; the caller then drops (closes) the client.
pub async fn relay<C, H>(client: &mut C, upstream: H::Stream, hooks: &mut H) -> Relayed
where
    C: AsyncRead + AsyncWrite + AsFd + Unpin + ?Sized,
    H: Upstreams,
{
    let mut r = Relay::new(upstream);
    let linger = hooks.linger();
    loop {
        let lingering = r.lingering;
        let next = poll_fn(|cx| r.poll(cx, client, hooks));
        let step = if lingering {
            match tokio::time::timeout(linger, next).await {
                Ok(step) => step,
                Err(_) => break,
            }
        } else {
            next.await
        };
        match step {
            Step::Done => break,
            Step::Linger => {}
            // A kept connection's next request may have waited (a wake, the
            // site lock) longer than the client did: a client that closed
            // meanwhile gets nothing sent on its behalf.
            Step::Reconnect => match (std::time::Instant::now(), hooks.connect().await) {
                (t, Some(_)) if abandoned(client.as_fd(), t, hooks.abandoned_after()) => break,
                (_, Some(s)) => r.attach(s),
                (_, None) => break,
            },
            Step::Thaw => {
                if !hooks.thaw().await {
                    break;
                }
            }
            Step::Admit => {
                let t = std::time::Instant::now();
                hooks.admit().await;
                if abandoned(client.as_fd(), t, hooks.abandoned_after()) {
                    break;
                }
            }
        }
    }
    Relayed {
        up: r.up.moved,
        down: r.down.moved,
        requests: r.requests,
        upstreams: r.upstreams,
        error: r.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi::record;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
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

    /// The relay's owner, played by the test: spare php-fpm connections
    /// handed out in order, a freezer switch, and counters.
    #[derive(Debug)]
    struct Mock {
        spares: Vec<UnixStream>,
        frozen: Arc<AtomicBool>,
        connects: u32,
        thaws: u32,
        began: u64,
        ended: u64,
        linger: Duration,
        /// Zero here: every reconnect counts as a wait.
        abandoned_after: Duration,
    }

    impl Mock {
        fn new(spares: Vec<UnixStream>) -> Self {
            Mock {
                spares,
                frozen: Arc::new(AtomicBool::new(false)),
                connects: 0,
                thaws: 0,
                began: 0,
                ended: 0,
                linger: LINGER,
                abandoned_after: Duration::ZERO,
            }
        }
    }

    impl Upstreams for Mock {
        type Stream = UnixStream;

        fn connect(&mut self) -> impl Future<Output = Option<UnixStream>> + Send {
            self.connects += 1;
            self.frozen.store(false, Ordering::SeqCst);
            let s = (!self.spares.is_empty()).then(|| self.spares.remove(0));
            async move { s }
        }

        fn thaw(&mut self) -> impl Future<Output = bool> + Send {
            self.thaws += 1;
            self.frozen.store(false, Ordering::SeqCst);
            async { true }
        }

        fn is_frozen(&mut self, _: &UnixStream) -> bool {
            self.frozen.load(Ordering::SeqCst)
        }

        fn began(&mut self) {
            self.began += 1;
        }

        fn ended(&mut self) {
            self.ended += 1;
        }

        fn linger(&self) -> Duration {
            self.linger
        }

        fn abandoned_after(&self) -> Duration {
            self.abandoned_after
        }
    }

    type RelayTask = tokio::task::JoinHandle<(Relayed, Mock)>;

    /// client_app <-> (client side | relay | php-fpm side) <-> server_app;
    /// `spares` more php-fpm connections for reconnects (their far ends
    /// returned).
    fn through_relay(
        spares: usize,
        linger: Duration,
    ) -> (
        UnixStream,
        UnixStream,
        Vec<UnixStream>,
        Arc<AtomicBool>,
        RelayTask,
    ) {
        let (client_app, mut client_side) = UnixStream::pair().expect("pair");
        let (upstream_side, server_app) = UnixStream::pair().expect("pair");
        let (near, far): (Vec<_>, Vec<_>) = (0..spares)
            .map(|_| UnixStream::pair().expect("pair"))
            .unzip();
        let mut mock = Mock::new(near);
        mock.linger = linger;
        let frozen = mock.frozen.clone();
        let task = tokio::spawn(async move {
            let r = relay(&mut client_side, upstream_side, &mut mock).await;
            (r, mock)
        });
        (client_app, server_app, far, frozen, task)
    }

    /// Request 1 through the relay and php-fpm's answer back, both checked.
    async fn first_exchange(client_app: &mut UnixStream, server_app: &mut UnixStream) {
        client_app
            .write_all(&request(1, 1))
            .await
            .expect("request 1");
        assert_eq!(read_n(server_app, request(1, 1).len()).await, request(1, 1));
        let answer = response(1, b"one");
        server_app.write_all(&answer).await.expect("answer 1");
        assert_eq!(read_response(client_app, 1).await, answer);
    }

    fn plain_relay() -> (UnixStream, UnixStream, RelayTask) {
        let (c, s, _, _, t) = through_relay(0, LINGER);
        (c, s, t)
    }

    /// BEGIN_REQUEST, role responder, `flags`.
    fn begin(id: u16, flags: u8) -> Vec<u8> {
        record(1, id, &[0, 1, flags, 0, 0, 0, 0, 0])
    }

    /// BEGIN_REQUEST, PARAMS, empty PARAMS: a request whose body follows.
    fn head(id: u16, flags: u8) -> Vec<u8> {
        let mut out = begin(id, flags);
        out.extend(record(4, id, b"\x0e\x03REQUEST_METHODGET"));
        out.extend(record(4, id, &[]));
        out
    }

    /// A whole request without a body.
    fn request(id: u16, flags: u8) -> Vec<u8> {
        let mut out = head(id, flags);
        out.extend(record(5, id, &[]));
        out
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

    /// Reads one whole response (up to its END_REQUEST) of request `id`.
    async fn read_response(s: &mut UnixStream, id: u16) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut h = [0u8; HEADER];
            s.read_exact(&mut h).await.expect("record header");
            let header = Header::parse(&h).expect("whole header");
            let mut body = vec![0u8; header.body_len()];
            s.read_exact(&mut body).await.expect("record content");
            out.extend_from_slice(&h);
            out.extend(body);
            if header.kind == END_REQUEST && header.id == id {
                return out;
            }
        }
    }

    /// Reads `n` bytes.
    async fn read_n(s: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await.expect("read");
        buf
    }

    /// True once the peer closed (end-of-file, or a reset).
    async fn closed(s: &mut UnixStream, within: Duration) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    #[test]
    fn opening_tells_fastcgi_from_other_streams() {
        assert_eq!(
            opening(&begin(1, 0)),
            Opening::FastCgi {
                id: 1,
                keep_conn: false
            }
        );
        assert_eq!(
            opening(&begin(513, 1)),
            Opening::FastCgi {
                id: 513,
                keep_conn: true
            }
        );
        assert_eq!(
            opening(&request(7, 0)),
            Opening::FastCgi {
                id: 7,
                keep_conn: false
            }
        );
        // Every prefix of a BEGIN_REQUEST: wait for more.
        for n in 0..16 {
            assert_eq!(opening(&begin(1, 1)[..n]), Opening::More, "{n} bytes");
        }
        // Another record type, another version, a bad role, a length other
        // than 8, reserved bytes set, text.
        assert_eq!(opening(&record(4, 1, &[0; 8])), Opening::Plain);
        let mut v2 = begin(1, 0);
        v2[0] = 2;
        assert_eq!(opening(&v2), Opening::Plain);
        assert_eq!(opening(&v2[..1]), Opening::Plain);
        assert_eq!(
            opening(&record(1, 1, &[0, 9, 0, 0, 0, 0, 0, 0])),
            Opening::Plain
        );
        assert_eq!(opening(&record(1, 1, &[0, 1, 0, 0])), Opening::Plain);
        assert_eq!(
            opening(&record(1, 1, &[0, 1, 0, 0, 0, 0, 0, 7])),
            Opening::Plain
        );
        assert_eq!(
            opening(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Opening::Plain
        );
        assert_eq!(opening(&pattern(4096, 3)), Opening::Plain);
    }

    #[test]
    fn records_find_the_end_exactly_after_the_end_request_however_split() {
        let mut stream = record(3, 2, &[0; 8]);
        stream.extend(response(1, &pattern(70_000, 5)));
        let total = stream.len();
        for cut in 0..=total {
            if cut % 97 != 0 && cut + 20 < total {
                continue; // every 97th, and all near the end
            }
            let mut r = Records::default();
            let a = r.feed(&stream[..cut], Some(1));
            let b = r.feed(&stream[cut..], Some(1));
            assert_eq!(a.ends + b.ends, 2, "cut {cut}");
            if cut == total {
                assert_eq!(a.last, Some(total), "cut {cut}");
            } else {
                assert_eq!((a.last, b.last), (None, Some(total - cut)), "cut {cut}");
            }
        }
        // Byte by byte: the last byte, never before.
        let mut r = Records::default();
        for (i, b) in stream.iter().enumerate() {
            let fed = r.feed(std::slice::from_ref(b), Some(1));
            assert_eq!(fed.last.is_some(), i + 1 == total, "byte {i}");
        }
        // Trailing bytes after the watched end are not part of the piece.
        let mut more = stream.clone();
        more.extend(record(6, 1, b"late"));
        assert_eq!(Records::default().feed(&more, Some(1)).last, Some(total));
        // Kept connections: every END_REQUEST counts, none ends the stream.
        let mut two = response(1, b"a");
        two.extend(response(2, b"b"));
        let fed = Records::default().feed(&two, None);
        assert_eq!((fed.ends, fed.last), (2, None));
    }

    /// php-fpm's way of ending a one-shot connection: answer, shut the write
    /// side, then wait for the peer to close. Through the relay that close
    /// comes at once, without the client doing anything; the client reads
    /// the whole answer and then end-of-file, and its own late write (the
    /// empty FCGI_STDIN some clients send in a write of its own) still
    /// succeeds.
    #[tokio::test(flavor = "current_thread")]
    async fn one_shot_connection_ends_with_the_response() {
        let (mut client_app, mut server_app, task) = plain_relay();
        let req = head(1, 0);
        let body = pattern(200_000, 4);
        let resp = response(1, &body);
        let resp2 = resp.clone();
        let req_len = req.len();
        let server = tokio::spawn(async move {
            let got = read_n(&mut server_app, req_len).await;
            // Answers before the request's empty FCGI_STDIN came.
            server_app.write_all(&resp2).await.expect("response");
            server_app.shutdown().await.expect("shutdown");
            let closed = closed(&mut server_app, Duration::from_secs(5)).await;
            (got, closed)
        });
        client_app.write_all(&req).await.expect("client write");
        let got = read_response(&mut client_app, 1).await;
        assert!(
            got == resp,
            "response corrupted ({} of {} bytes)",
            got.len(),
            resp.len()
        );
        let (seen, php_closed) = server.await.expect("server task");
        assert_eq!(seen, req);
        assert!(
            php_closed,
            "php-fpm's side is closed without waiting for the client"
        );
        // The client's late empty FCGI_STDIN: accepted, no EPIPE.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client_app
            .write_all(&record(5, 1, &[]))
            .await
            .expect("a late write of the client is taken, not refused");
        let mut rest = Vec::new();
        client_app
            .read_to_end(&mut rest)
            .await
            .expect("end-of-file, no reset");
        assert!(rest.is_empty());
        drop(client_app);
        let (r, mock) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay ends when the client closes")
            .expect("relay task");
        assert_eq!(
            (r.up, r.down, r.requests),
            (req.len() as u64, resp.len() as u64, 1)
        );
        assert_eq!((mock.began, mock.ended, mock.connects), (0, 1, 0));
    }

    /// A one-shot request sent whole (closing empty FCGI_STDIN included, as
    /// nginx sends it): both sides are closed right after the response,
    /// without waiting for the client.
    #[tokio::test(flavor = "current_thread")]
    async fn a_whole_one_shot_request_ends_at_once() {
        let (mut client_app, mut server_app, task) = plain_relay();
        let req = request(1, 0);
        client_app.write_all(&req).await.expect("request");
        assert_eq!(read_n(&mut server_app, req.len()).await, req);
        server_app
            .write_all(&response(1, b"hi"))
            .await
            .expect("answer");
        let (r, mock) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay ends without the client doing anything")
            .expect("relay");
        assert_eq!((r.requests, mock.ended), (1, 1));
        let mut got = Vec::new();
        client_app
            .read_to_end(&mut got)
            .await
            .expect("response, then end-of-file");
        assert_eq!(got, response(1, b"hi"));
        assert!(closed(&mut server_app, Duration::from_secs(1)).await);
    }

    /// A client that never closes after its one-shot answer is let go
    /// after the linger bound.
    #[tokio::test(flavor = "current_thread")]
    async fn lingering_is_bounded() {
        let (mut client_app, mut server_app, _, _, task) =
            through_relay(0, Duration::from_millis(200));
        // Its closing FCGI_STDIN never comes.
        client_app.write_all(&head(1, 0)).await.expect("write");
        let _ = read_n(&mut server_app, head(1, 0).len()).await;
        server_app
            .write_all(&response(1, b"x"))
            .await
            .expect("answer");
        read_response(&mut client_app, 1).await;
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("relay ends after its linger bound")
            .expect("task");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        drop(client_app);
    }

    /// php-fpm (or anything upstream) answers 100 KiB and closes while the
    /// client is still sending: the client gets all 100 KiB and then
    /// end-of-file, never a reset in their place; 50 of 50, for a plain
    /// stream and a one-shot FastCGI request.
    #[tokio::test(flavor = "current_thread")]
    async fn answer_then_close_while_the_client_sends_delivers_the_answer() {
        for fastcgi in [false, true] {
            for round in 0..50u64 {
                let (mut client_app, mut server_app, task) = plain_relay();
                let answer = if fastcgi {
                    response(1, &pattern(100 * 1024, round))
                } else {
                    pattern(100 * 1024, round)
                };
                let answer2 = answer.clone();
                let server = tokio::spawn(async move {
                    let mut first = [0u8; 16];
                    server_app
                        .read_exact(&mut first)
                        .await
                        .expect("first bytes");
                    server_app.write_all(&answer2).await.expect("answer");
                    // Closed with the client's bytes unread.
                });
                let (mut rd, mut wr) = client_app.split();
                let opening = if fastcgi {
                    head(1, 0)
                } else {
                    b"0123456789abcdef".to_vec()
                };
                let send = async {
                    let _ = wr.write_all(&opening).await;
                    let chunk = if fastcgi {
                        record(5, 1, &[7; 4000])
                    } else {
                        vec![7; 4096]
                    };
                    for _ in 0..256 {
                        if wr.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = wr.shutdown().await;
                };
                let recv = async {
                    let mut got = Vec::new();
                    let r = rd.read_to_end(&mut got).await;
                    (got, r)
                };
                let (_, (got, r)) = tokio::join!(send, recv);
                assert!(r.is_ok(), "round {round}: {r:?} after {} bytes", got.len());
                assert_eq!(got.len(), answer.len(), "fastcgi {fastcgi} round {round}");
                assert!(got == answer, "round {round}: answer corrupted");
                server.await.expect("server");
                drop(client_app);
                task.await.expect("relay");
            }
        }
    }

    /// A kept connection (FCGI_KEEP_CONN): php-fpm closing it between
    /// requests (the container stopped) does not close the client's; the
    /// next request goes to a new php-fpm connection; requests are counted
    /// from BEGIN_REQUEST to END_REQUEST.
    #[tokio::test(flavor = "current_thread")]
    async fn kept_connection_survives_php_fpm_closing_between_requests() {
        let (mut client_app, mut server_app, mut spares, _, task) = through_relay(1, LINGER);
        first_exchange(&mut client_app, &mut server_app).await;
        // php-fpm goes away while nothing is in flight.
        drop(server_app);
        // The client notices nothing: no end-of-file.
        let mut b = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), client_app.read(&mut b))
                .await
                .is_err(),
            "the client's kept connection must stay open"
        );
        // Its next request reaches a new php-fpm connection.
        client_app
            .write_all(&request(2, 1))
            .await
            .expect("request 2");
        let mut fresh = spares.remove(0);
        assert_eq!(read_n(&mut fresh, request(2, 1).len()).await, request(2, 1));
        fresh
            .write_all(&response(2, b"two"))
            .await
            .expect("answer 2");
        assert_eq!(read_response(&mut client_app, 2).await, response(2, b"two"));
        // The client closes: passed on, php-fpm closes, the relay ends.
        client_app.shutdown().await.expect("client half-close");
        let mut rest = Vec::new();
        fresh
            .read_to_end(&mut rest)
            .await
            .expect("php-fpm sees end-of-file");
        assert!(rest.is_empty());
        drop(fresh);
        let (r, mock) = task.await.expect("relay");
        assert_eq!((r.requests, r.upstreams), (2, 2));
        assert_eq!((mock.connects, mock.began, mock.ended), (1, 1, 2));
    }

    /// A kept connection's next request that needs a new php-fpm
    /// connection (a wake) while its client closes (nginx's read timeout):
    /// nothing is sent on the dead client's behalf, the relay ends.
    #[tokio::test(flavor = "current_thread")]
    async fn kept_connection_closed_during_its_reconnect_sends_nothing() {
        let (mut client_app, mut server_app, mut spares, _, task) = through_relay(1, LINGER);
        first_exchange(&mut client_app, &mut server_app).await;
        drop(server_app);
        // Sent and closed before the relay runs again.
        client_app
            .write_all(&request(2, 1))
            .await
            .expect("request 2");
        drop(client_app);
        let mut fresh = spares.remove(0);
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), fresh.read_to_end(&mut got)).await;
        assert!(
            got.is_empty(),
            "{} bytes sent for a closed client",
            got.len()
        );
        let (r, mock) = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the relay ends")
            .expect("relay");
        assert_eq!((mock.connects, r.requests), (1, 1));
    }

    /// A kept connection whose php-fpm was frozen (`docker pause`) while
    /// idle: the next BEGIN_REQUEST is not sent into the frozen socket but
    /// to a fresh connection (the owner's connect wakes the container); a
    /// stray empty FCGI_STDIN with no php-fpm connection is dropped and
    /// wakes nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn kept_connection_reconnects_when_php_fpm_is_frozen() {
        let (mut client_app, mut server_app, mut spares, frozen, task) = through_relay(1, LINGER);
        first_exchange(&mut client_app, &mut server_app).await;
        frozen.store(true, Ordering::SeqCst);
        // Split at every awkward place: the header in two writes.
        let req = request(2, 1);
        client_app.write_all(&req[..5]).await.expect("part");
        tokio::time::sleep(Duration::from_millis(20)).await;
        client_app.write_all(&req[5..]).await.expect("rest");
        let mut fresh = spares.remove(0);
        assert_eq!(read_n(&mut fresh, req.len()).await, req);
        // The frozen connection got nothing and was closed.
        let mut old = Vec::new();
        server_app
            .read_to_end(&mut old)
            .await
            .expect("old connection closed");
        assert!(
            old.is_empty(),
            "{} bytes went into the frozen php-fpm",
            old.len()
        );
        fresh
            .write_all(&response(2, b"two"))
            .await
            .expect("answer 2");
        assert_eq!(read_response(&mut client_app, 2).await, response(2, b"two"));
        // php-fpm goes; a late empty STDIN of request 2 is dropped, no reconnect.
        drop(fresh);
        tokio::time::sleep(Duration::from_millis(50)).await;
        client_app
            .write_all(&record(5, 2, &[]))
            .await
            .expect("stray");
        client_app.shutdown().await.expect("close");
        let (r, mock) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("relay ends")
            .expect("relay");
        assert_eq!((r.requests, r.upstreams, mock.connects), (2, 2, 1));
    }

    /// A request without FCGI_KEEP_CONN on a kept connection ends it like a
    /// one-shot one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_last_request_without_keep_conn_ends_the_connection() {
        let (mut client_app, first, mut spares, _, task) = through_relay(1, LINGER);
        let mut server_app = first;
        let mut both = request(1, 1);
        client_app.write_all(&both).await.expect("request 1");
        let _ = read_n(&mut server_app, both.len()).await;
        server_app
            .write_all(&response(1, b"one"))
            .await
            .expect("answer 1");
        read_response(&mut client_app, 1).await;
        // A kept request answered: php-fpm's connection is let go (it would
        // pin a worker), the client's stays; the next request reconnects.
        assert!(
            closed(&mut server_app, Duration::from_secs(5)).await,
            "php-fpm's connection closed after the kept request"
        );
        server_app = spares.remove(0);
        both = request(2, 0);
        client_app.write_all(&both).await.expect("request 2");
        let _ = read_n(&mut server_app, both.len()).await;
        server_app
            .write_all(&response(2, b"two"))
            .await
            .expect("answer 2");
        read_response(&mut client_app, 2).await;
        assert!(
            closed(&mut client_app, Duration::from_secs(5)).await,
            "end-of-file after the last response"
        );
        assert!(closed(&mut server_app, Duration::from_secs(5)).await);
        drop(client_app);
        let (r, _) = task.await.expect("relay");
        assert_eq!(r.requests, 2);
    }

    /// Any other stream: an upstream's half-close is passed on and the
    /// client can still send; a client byte after php-fpm froze thaws it
    /// first.
    #[tokio::test(flavor = "current_thread")]
    async fn plain_stream_half_close_and_thaw() {
        let (mut client_app, mut server_app, _, frozen, task) = through_relay(0, LINGER);
        let first = b"plain bytes, not FastCGI".to_vec();
        client_app.write_all(&first).await.expect("client write");
        assert_eq!(read_n(&mut server_app, first.len()).await, first);
        frozen.store(true, Ordering::SeqCst);
        client_app
            .write_all(b"after the freeze")
            .await
            .expect("write");
        assert_eq!(read_n(&mut server_app, 16).await, b"after the freeze");
        assert!(
            !frozen.load(Ordering::SeqCst),
            "thawed before the bytes went on"
        );
        // An answer with an END_REQUEST in it means nothing here.
        let answer = response(1, b"partial");
        server_app.write_all(&answer).await.expect("server write");
        server_app.shutdown().await.expect("server half-close");
        let mut got = Vec::new();
        client_app.read_to_end(&mut got).await.expect("client read");
        assert_eq!(got, answer);
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
        let (r, mock) = task.await.expect("relay");
        assert_eq!(r.up, first.len() as u64 + 16 + 4);
        assert_eq!((mock.thaws, r.requests), (1, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn byte_exact_both_ways_with_half_close() {
        let (mut client_app, mut server_app, task) = plain_relay();
        let req = pattern(3 * 1024 * 1024 + 17, 1);
        let resp = pattern(5 * 1024 * 1024 + 3, 2);
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
        let (r, _) = task.await.expect("relay");
        assert_eq!((r.up, r.down), (req.len() as u64, resp.len() as u64));
    }

    /// FastCGI framing does not change a byte: a large keep-conn exchange
    /// with records split everywhere arrives intact both ways.
    #[tokio::test(flavor = "current_thread")]
    async fn fastcgi_bytes_are_relayed_exactly() {
        let (mut client_app, mut server_app, task) = plain_relay();
        let mut req = head(1, 1);
        for chunk in pattern(300_000, 6).chunks(65535) {
            req.extend(record(5, 1, chunk));
        }
        req.extend(record(5, 1, &[]));
        let resp = response(1, &pattern(500_000, 7));
        let (req2, resp2) = (req.clone(), resp.clone());
        let server = tokio::spawn(async move {
            let got = read_n(&mut server_app, req2.len()).await;
            assert!(got == req2, "request corrupted");
            for piece in resp2.chunks(1000 + 3) {
                server_app.write_all(piece).await.expect("server write");
            }
            server_app
        });
        for piece in req.chunks(777) {
            client_app.write_all(piece).await.expect("client write");
        }
        let got = read_response(&mut client_app, 1).await;
        assert!(got == resp, "response corrupted");
        let server_app = server.await.expect("server");
        drop(client_app);
        drop(server_app);
        let (r, mock) = task.await.expect("relay");
        assert_eq!((r.up, r.down), (req.len() as u64, resp.len() as u64));
        assert_eq!(mock.ended, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_failing_does_not_touch_another() {
        let (mut a_app, a_srv, ta) = plain_relay();
        let (mut b_app, mut b_srv, tb) = plain_relay();
        // A's upstream vanishes mid-request, A's client goes away.
        drop(a_srv);
        a_app.write_all(b"hello").await.ok();
        drop(a_app);
        let _ = ta.await.expect("task a");
        // B still works.
        b_app.write_all(b"ping").await.expect("write b");
        assert_eq!(read_n(&mut b_srv, 4).await, b"ping");
        b_srv.write_all(b"pong").await.expect("write b srv");
        assert_eq!(read_n(&mut b_app, 4).await, b"pong");
        drop(b_app);
        drop(b_srv);
        tb.await.expect("task b");
    }
}
