//! FastCGI, the one encoder and decoder of the tree.
//!
//! What fleet says itself (the waker's `503`, the status request to
//! php-fpm), and what the tests, the bench and the soak send, are built
//! here; the relay reads record headers through [`Header`]. The peer of a
//! decoder may be hostile (a tenant's php-fpm): a length read from the wire
//! is only ever compared, never used to size an allocation, and everything
//! kept is bounded by the caller's limit.

use std::io;

/// Protocol version of every record.
pub const VERSION: u8 = 1;
/// Bytes of a record header.
pub const HEADER_LEN: usize = 8;
/// Most content bytes one record carries.
const MAX_CONTENT: usize = u16::MAX as usize;
/// The request id of [`encode_request`] (one request per connection).
pub const REQUEST_ID: u16 = 1;

/// Record types.
pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
const STDERR: u8 = 7;

/// `BEGIN_REQUEST` role of an ordinary request.
pub const RESPONDER: u16 = 1;
/// `BEGIN_REQUEST` flag: the connection stays open after the request.
pub const KEEP_CONN: u8 = 1;

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub id: u16,
    pub content_len: u16,
    pub padding: u8,
}

impl Header {
    /// The header of a record of `content_len` bytes, padded to a multiple
    /// of 8 (as php-fpm pads).
    pub fn new(kind: u8, id: u16, content_len: u16) -> Header {
        Header {
            version: VERSION,
            kind,
            id,
            content_len,
            padding: ((8 - content_len % 8) % 8) as u8,
        }
    }

    /// The header at the start of `bytes`; `None` when fewer than
    /// [`HEADER_LEN`] bytes are there.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let b = bytes.get(..HEADER_LEN)?;
        Some(Header {
            version: b[0],
            kind: b[1],
            id: u16::from_be_bytes([b[2], b[3]]),
            content_len: u16::from_be_bytes([b[4], b[5]]),
            padding: b[6],
        })
    }

    /// The header as sent (the reserved byte zero).
    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [i0, i1] = self.id.to_be_bytes();
        let [l0, l1] = self.content_len.to_be_bytes();
        [self.version, self.kind, i0, i1, l0, l1, self.padding, 0]
    }

    /// Content and padding bytes that follow the header.
    pub fn body_len(self) -> usize {
        usize::from(self.content_len) + usize::from(self.padding)
    }
}

/// Appends `content` as records of `kind` for request `id`: one record,
/// or one per [`MAX_CONTENT`] bytes when longer, each padded to 8 bytes.
/// Empty content is one empty record (the end of a stream).
fn push_record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    let mut chunks = content.chunks(MAX_CONTENT).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&Header::new(kind, id, 0).to_bytes());
        return;
    }
    for chunk in chunks {
        // A chunk is at most MAX_CONTENT long: the length fits.
        let header = Header::new(kind, id, chunk.len() as u16);
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(chunk);
        out.extend(std::iter::repeat_n(0u8, usize::from(header.padding)));
    }
}

/// `push_record` into a new buffer.
pub fn record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + content.len() + 8);
    push_record(&mut out, kind, id, content);
    out
}

/// The content of a `BEGIN_REQUEST` record: role responder, `keep_conn`.
pub fn begin_body(keep_conn: bool) -> [u8; 8] {
    let [r0, r1] = RESPONDER.to_be_bytes();
    [r0, r1, if keep_conn { KEEP_CONN } else { 0 }, 0, 0, 0, 0, 0]
}

/// Why a request could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A name or value longer than FastCGI's 31-bit length.
    #[error("a FastCGI parameter of {len} bytes is longer than 2^31 - 1 bytes")]
    ParamTooLong { len: usize },
}

/// Appends one name-value pair (FastCGI's 1- or 4-byte lengths).
fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), EncodeError> {
    for len in [name.len(), value.len()] {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let n = u32::try_from(len)
                .ok()
                .filter(|&n| n <= 0x7fff_ffff)
                .ok_or(EncodeError::ParamTooLong { len })?;
            out.extend_from_slice(&(n | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Ok(())
}

/// A whole request [`REQUEST_ID`]: `BEGIN_REQUEST` (responder,
/// `keep_conn`), the params, an empty `PARAMS`, `stdin` and an empty
/// `STDIN`. Params and stdin longer than a record are split over several.
pub fn encode_request<N, V>(
    params: &[(N, V)],
    stdin: &[u8],
    keep_conn: bool,
) -> Result<Vec<u8>, EncodeError>
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let mut pairs = Vec::new();
    for (name, value) in params {
        push_pair(&mut pairs, name.as_ref(), value.as_ref())?;
    }
    let mut out = Vec::with_capacity(pairs.len() + stdin.len() + 64);
    push_record(&mut out, BEGIN_REQUEST, REQUEST_ID, &begin_body(keep_conn));
    if !pairs.is_empty() {
        push_record(&mut out, PARAMS, REQUEST_ID, &pairs);
    }
    push_record(&mut out, PARAMS, REQUEST_ID, &[]);
    if !stdin.is_empty() {
        push_record(&mut out, STDIN, REQUEST_ID, stdin);
    }
    push_record(&mut out, STDIN, REQUEST_ID, &[]);
    Ok(out)
}

/// Why a response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a FastCGI record of version {found} (only 1 exists)")]
    Version { found: u8 },
    #[error("an FCGI_END_REQUEST record of {len} bytes (8 expected)")]
    ShortEnd { len: u16 },
    #[error("the response is longer than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the connection closed before FCGI_END_REQUEST")]
    Unfinished,
    #[error("a CGI Status header {value:?} without a status code")]
    BadStatus { value: String },
}

/// A whole response of request [`REQUEST_ID`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Everything sent on `FCGI_STDOUT`: CGI headers and body.
    pub stdout: Vec<u8>,
    /// Everything sent on `FCGI_STDERR`.
    pub stderr: Vec<u8>,
    /// appStatus of `FCGI_END_REQUEST`.
    pub app_status: u32,
    /// protocolStatus of `FCGI_END_REQUEST` (0: request complete).
    pub protocol_status: u8,
}

impl Response {
    /// [`split_cgi`] of the stdout.
    pub fn cgi(&self) -> Result<Cgi<'_>, DecodeError> {
        split_cgi(&self.stdout)
    }
}

/// Decodes a response fed in pieces of any size, up to its
/// `FCGI_END_REQUEST`. Records of other requests and of other types are
/// skipped; stdout and stderr together may hold at most `limit` bytes.
#[derive(Debug, Clone)]
pub struct Decoder {
    limit: usize,
    header: [u8; HEADER_LEN],
    have: usize,
    /// The record being read (after its whole header came).
    current: Option<Header>,
    /// Of the current record: content bytes still to come, then padding.
    content_left: usize,
    padding_left: usize,
    end: [u8; 8],
    end_have: usize,
    done: bool,
    response: Response,
}

impl Decoder {
    /// A decoder keeping at most `limit` bytes of stdout and stderr.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            limit,
            header: [0; HEADER_LEN],
            have: 0,
            current: None,
            content_left: 0,
            padding_left: 0,
            end: [0; 8],
            end_have: 0,
            done: false,
            response: Response::default(),
        }
    }

    /// True once the `FCGI_END_REQUEST` record passed whole.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes; returns how many it used (all of them, or
    /// those up to and including the end of the response).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut i = 0;
        while i < data.len() && !self.done {
            let Some(h) = self.current else {
                let k = (HEADER_LEN - self.have).min(data.len() - i);
                self.header[self.have..self.have + k].copy_from_slice(&data[i..i + k]);
                self.have += k;
                i += k;
                if let Some(h) = Header::parse(&self.header[..self.have]) {
                    self.start(h)?;
                }
                continue;
            };
            if self.content_left > 0 {
                let k = self.content_left.min(data.len() - i);
                self.take(h, &data[i..i + k]);
                self.content_left -= k;
                i += k;
            } else if self.padding_left > 0 {
                let k = self.padding_left.min(data.len() - i);
                self.padding_left -= k;
                i += k;
            }
            if self.content_left == 0 && self.padding_left == 0 {
                self.finish_record(h);
            }
        }
        Ok(i)
    }

    /// The response, once [`Decoder::is_done`].
    pub fn finish(self) -> Result<Response, DecodeError> {
        if self.done {
            Ok(self.response)
        } else {
            Err(DecodeError::Unfinished)
        }
    }

    /// A whole header came: checks it before any of its content is read.
    fn start(&mut self, h: Header) -> Result<(), DecodeError> {
        self.have = 0;
        if h.version != VERSION {
            return Err(DecodeError::Version { found: h.version });
        }
        let ours = h.id == REQUEST_ID;
        if ours && matches!(h.kind, STDOUT | STDERR) {
            let kept = self.response.stdout.len() + self.response.stderr.len();
            if usize::from(h.content_len) > self.limit.saturating_sub(kept) {
                return Err(DecodeError::TooLarge { limit: self.limit });
            }
        }
        if ours && h.kind == END_REQUEST && usize::from(h.content_len) < self.end.len() {
            return Err(DecodeError::ShortEnd { len: h.content_len });
        }
        self.current = Some(h);
        self.content_left = usize::from(h.content_len);
        self.padding_left = usize::from(h.padding);
        if self.content_left == 0 && self.padding_left == 0 {
            self.finish_record(h);
        }
        Ok(())
    }

    /// Keeps the content bytes of our request that matter.
    fn take(&mut self, h: Header, bytes: &[u8]) {
        if h.id != REQUEST_ID {
            return;
        }
        match h.kind {
            // Within the limit: checked against the header's length.
            STDOUT => self.response.stdout.extend_from_slice(bytes),
            STDERR => self.response.stderr.extend_from_slice(bytes),
            END_REQUEST => {
                let k = (self.end.len() - self.end_have).min(bytes.len());
                self.end[self.end_have..self.end_have + k].copy_from_slice(&bytes[..k]);
                self.end_have += k;
            }
            _ => {}
        }
    }

    fn finish_record(&mut self, h: Header) {
        self.current = None;
        if h.id == REQUEST_ID && h.kind == END_REQUEST {
            let e = self.end;
            self.response.app_status = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            self.response.protocol_status = e[4];
            self.done = true;
        }
    }
}

/// Reads one response (up to its `FCGI_END_REQUEST`) from `stream`,
/// keeping at most `limit` bytes of stdout and stderr. A decoding error
/// is an `InvalidData` error with the [`DecodeError`] as its source.
pub fn read_response<R: io::Read + ?Sized>(stream: &mut R, limit: usize) -> io::Result<Response> {
    let mut decoder = Decoder::new(limit);
    let mut buf = [0u8; 8192];
    while !decoder.is_done() {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    DecodeError::Unfinished,
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        decoder
            .feed(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    decoder
        .finish()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// CGI output split: the `Status:` code, the headers and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgi<'a> {
    /// From the `Status:` header, 200 when absent.
    pub status: u16,
    /// Every header (name, value) in order, `Status` included.
    pub headers: Vec<(String, String)>,
    /// What follows the blank line (nothing when there is none).
    pub body: &'a [u8],
}

impl Cgi<'_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits CGI output at its first blank line (`\r\n\r\n`, or `\n\n`)
/// into headers and body.
pub fn split_cgi(raw: &[u8]) -> Result<Cgi<'_>, DecodeError> {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, &[][..]),
        },
    };
    let mut cgi = Cgi {
        status: 200,
        headers: Vec::new(),
        body,
    };
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("Status") {
            cgi.status = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| DecodeError::BadStatus { value: v.clone() })?;
        }
        cgi.headers.push((k, v));
    }
    Ok(cgi)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an encoded stream into (type, id, content), checking framing.
    fn records(mut data: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let h = Header::parse(data).expect("a whole header");
            assert_eq!(h.version, VERSION);
            assert_eq!(h.body_len() % 8, 0, "records are padded to 8 bytes");
            let len = usize::from(h.content_len);
            out.push((h.kind, h.id, data[8..8 + len].to_vec()));
            data = &data[8 + h.body_len()..];
        }
        out
    }

    fn decode_pairs(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fn len(data: &mut &[u8]) -> usize {
            if data[0] & 0x80 == 0 {
                let l = usize::from(data[0]);
                *data = &data[1..];
                l
            } else {
                let l = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff;
                *data = &data[4..];
                l as usize
            }
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let (k, v) = (len(&mut data), len(&mut data));
            out.push((data[..k].to_vec(), data[k..k + v].to_vec()));
            data = &data[k + v..];
        }
        out
    }

    /// A php-fpm style response of request `id`.
    fn response(id: u16, stdout: &[u8], stderr: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if !stderr.is_empty() {
            push_record(&mut out, STDERR, id, stderr);
        }
        push_record(&mut out, STDOUT, id, stdout);
        push_record(&mut out, STDOUT, id, &[]);
        push_record(&mut out, END_REQUEST, id, &[0, 0, 1, 2, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn records_are_padded_to_eight_bytes() {
        assert_eq!(
            record(STDOUT, 1, b"abc"),
            [1, 6, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0]
        );
        assert_eq!(record(STDIN, 2, &[]), [1, 5, 0, 2, 0, 0, 0, 0]);
        assert_eq!(record(STDOUT, 1, &[9; 16]).len(), 8 + 16);
        // Longer than a record: split, nothing cut.
        let long = vec![7u8; MAX_CONTENT + 10];
        let recs = records(&record(STDIN, 1, &long));
        let lens: Vec<usize> = recs.iter().map(|r| r.2.len()).collect();
        assert_eq!(lens, [MAX_CONTENT, 10]);
        for len in 0..=17u16 {
            let h = Header::new(STDOUT, 1, len);
            assert_eq!(Header::parse(&h.to_bytes()), Some(h));
            assert_eq!(h.body_len() % 8, 0);
            assert!(h.padding < 8);
        }
        assert_eq!(Header::parse(&[1, 6, 0, 1, 0, 3, 5]), None);
    }

    #[test]
    fn request_is_framed_per_spec() {
        let long = "v".repeat(300);
        let params = [
            ("SCRIPT_FILENAME", "/srv/www/echo.php"),
            ("HTTP_X_LONG", &long),
        ];
        let body = vec![7u8; 70_000];
        let recs = records(&encode_request(&params, &body, false).expect("encode"));
        assert_eq!(recs[0], (BEGIN_REQUEST, 1, vec![0, 1, 0, 0, 0, 0, 0, 0]));
        let pairs: Vec<u8> = recs
            .iter()
            .filter(|r| r.0 == PARAMS)
            .flat_map(|r| r.2.clone())
            .collect();
        assert_eq!(
            decode_pairs(&pairs),
            params
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        );
        let tail: Vec<(u8, usize)> = recs[recs.len() - 4..]
            .iter()
            .map(|r| (r.0, r.2.len()))
            .collect();
        assert_eq!(
            tail,
            [
                (PARAMS, 0),
                (STDIN, MAX_CONTENT),
                (STDIN, 70_000 - MAX_CONTENT),
                (STDIN, 0)
            ]
        );
        let kept = encode_request::<&str, &str>(&[], &[], true).expect("encode");
        assert_eq!(
            records(&kept),
            [
                (BEGIN_REQUEST, 1, vec![0, 1, KEEP_CONN, 0, 0, 0, 0, 0]),
                (PARAMS, 1, vec![]),
                (STDIN, 1, vec![])
            ]
        );
    }

    #[test]
    fn round_trip_in_pieces_of_every_size() {
        let stdout = b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n";
        let mut wire = record(STDOUT, 0, b"another request's");
        wire.extend(response(1, stdout, b"Primary script unknown"));
        let after = wire.len();
        wire.extend_from_slice(b"trailing bytes are not read");
        for piece in 1..=wire.len() {
            let mut d = Decoder::new(1024);
            let mut used = 0;
            for chunk in wire.chunks(piece) {
                used += d.feed(chunk).expect("decodes");
                if d.is_done() {
                    break;
                }
            }
            assert_eq!(used, after, "piece {piece}");
            let r = d.finish().expect("done");
            assert_eq!(r.stdout, stdout);
            assert_eq!(r.stderr, b"Primary script unknown");
            assert_eq!((r.app_status, r.protocol_status), (0x0102, 0));
            let cgi = r.cgi().expect("cgi");
            assert_eq!(cgi.status, 404);
            assert_eq!(cgi.header("content-type"), Some("text/html"));
            assert_eq!(cgi.body, b"File not found.\n");
        }
        let mut cursor = io::Cursor::new(&wire);
        let r = read_response(&mut cursor, 1024).expect("read");
        assert_eq!(r.stdout, stdout);
    }

    #[test]
    fn oversize_and_broken_responses_are_refused() {
        // The limit holds before the content is read: one header claiming
        // more than is left is enough.
        let big = response(1, &[b'x'; 100], &[]);
        let mut d = Decoder::new(99);
        assert_eq!(d.feed(&big[..8]), Err(DecodeError::TooLarge { limit: 99 }));
        let split = {
            let mut w = record(STDOUT, 1, &[b'x'; 60]);
            w.extend(record(STDERR, 1, &[b'y'; 40]));
            w
        };
        assert_eq!(
            Decoder::new(99).feed(&split),
            Err(DecodeError::TooLarge { limit: 99 })
        );
        assert_eq!(Decoder::new(100).feed(&split), Ok(split.len()));
        // Another request's records do not count.
        assert!(Decoder::new(0).feed(&record(STDOUT, 2, &[1; 100])).is_ok());

        let mut bad = big.clone();
        bad[0] = 2;
        assert_eq!(
            Decoder::new(1000).feed(&bad),
            Err(DecodeError::Version { found: 2 })
        );
        assert_eq!(
            Decoder::new(1000).feed(&record(END_REQUEST, 1, &[0; 4])),
            Err(DecodeError::ShortEnd { len: 4 })
        );
        let mut d = Decoder::new(1000);
        d.feed(&big[..big.len() - 1]).expect("partial");
        assert!(!d.is_done());
        assert_eq!(d.finish(), Err(DecodeError::Unfinished));
        let mut cursor = io::Cursor::new(&big[..big.len() - 1]);
        let e = read_response(&mut cursor, 1000).expect_err("closed early");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn cgi_output_is_split() {
        let c = split_cgi(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nnope")
            .expect("parse");
        assert_eq!((c.status, c.body), (404, &b"nope"[..]));
        let c = split_cgi(b"X-A: 1\n\nbody").expect("parse");
        assert_eq!(
            (c.status, c.header("x-a"), c.body),
            (200, Some("1"), &b"body"[..])
        );
        let c = split_cgi(b"X-A: 1\r\n\r\n").expect("parse");
        assert!(c.body.is_empty());
        assert_eq!(
            split_cgi(b"Status: abc\r\n\r\n"),
            Err(DecodeError::BadStatus {
                value: "abc".into()
            })
        );
    }

    #[test]
    fn long_params_take_four_byte_lengths() {
        let mut out = Vec::new();
        push_pair(&mut out, b"K", &[b'v'; 200]).expect("pair");
        assert_eq!(&out[..5], &[1, 0x80, 0, 0, 200]);
        assert_eq!(decode_pairs(&out), [(b"K".to_vec(), vec![b'v'; 200])]);
    }
}
