//! A minimal, correct FastCGI client (role RESPONDER, one request per connection).

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;
const MAX_CONTENT: usize = 65535;

/// One FastCGI request. `script` is relative to `/srv/www` in the container.
#[derive(Debug, Clone)]
pub struct FcgiRequest {
    /// `REQUEST_METHOD` (default `GET`).
    pub method: String,
    /// Script name, e.g. `hello.php`; `SCRIPT_FILENAME=/srv/www/<script>`.
    pub script: String,
    /// `QUERY_STRING` without `?`.
    pub query: String,
    /// Request body (sent as STDIN records, `CONTENT_LENGTH` set).
    pub body: Vec<u8>,
    /// `CONTENT_TYPE` (default `application/octet-stream` when a body is sent).
    pub content_type: Option<String>,
    /// Additional params (e.g. `HTTP_HOST`).
    pub params: Vec<(String, String)>,
    /// Read/write timeout on the socket (default 30 s).
    pub timeout: Duration,
}

impl Default for FcgiRequest {
    fn default() -> Self {
        FcgiRequest {
            method: "GET".into(),
            script: "hello.php".into(),
            query: String::new(),
            body: Vec::new(),
            content_type: None,
            params: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl FcgiRequest {
    /// `GET /<script>?<query>`.
    pub fn get(script: &str, query: &str) -> Self {
        FcgiRequest {
            script: script.into(),
            query: query.into(),
            ..Default::default()
        }
    }

    /// `POST /<script>` with `body`.
    pub fn post(script: &str, body: &[u8]) -> Self {
        FcgiRequest {
            method: "POST".into(),
            script: script.into(),
            body: body.to_vec(),
            ..Default::default()
        }
    }
}

/// php-fpm's answer.
#[derive(Debug, Clone, Default)]
pub struct FcgiResponse {
    /// From the `Status:` header, 200 when absent.
    pub status: u16,
    /// CGI headers (name, value) in order.
    pub headers: Vec<(String, String)>,
    /// The body after the CGI headers.
    pub body: Vec<u8>,
    /// Everything php-fpm sent on FCGI_STDERR.
    pub stderr: Vec<u8>,
    /// appStatus of FCGI_END_REQUEST.
    pub app_status: u32,
    /// protocolStatus of FCGI_END_REQUEST (0 = request complete).
    pub protocol_status: u8,
}

impl FcgiResponse {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connect to `socket` and send `req`; read until FCGI_END_REQUEST.
pub fn request(socket: &Path, req: &FcgiRequest) -> io::Result<FcgiResponse> {
    let mut stream = UnixStream::connect(socket)?;
    request_on(&mut stream, req)
}

/// Send `req` on an already connected stream.
pub fn request_on(stream: &mut UnixStream, req: &FcgiRequest) -> io::Result<FcgiResponse> {
    stream.set_read_timeout(Some(req.timeout))?;
    stream.set_write_timeout(Some(req.timeout))?;
    stream.write_all(&encode_request(req))?;
    read_response(stream)
}

/// Reads one response (up to its FCGI_END_REQUEST) from `stream`.
pub fn read_response(stream: &mut UnixStream) -> io::Result<FcgiResponse> {
    let mut raw = Vec::new();
    let mut stderr = Vec::new();
    loop {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "connection closed before FCGI_END_REQUEST")
            } else {
                e
            }
        })?;
        let kind = header[1];
        let len = u16::from_be_bytes([header[4], header[5]]) as usize;
        let pad = header[6] as usize;
        let mut content = vec![0u8; len + pad];
        stream.read_exact(&mut content)?;
        content.truncate(len);
        match kind {
            STDOUT => raw.extend_from_slice(&content),
            STDERR => stderr.extend_from_slice(&content),
            END_REQUEST => {
                if content.len() < 8 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "short FCGI_END_REQUEST",
                    ));
                }
                let app_status =
                    u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                let mut resp = parse_cgi(&raw)?;
                resp.stderr = stderr;
                resp.app_status = app_status;
                resp.protocol_status = content[4];
                return Ok(resp);
            }
            _ => {} // ignore unknown records
        }
    }
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    let pad = (8 - content.len() % 8) % 8;
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[pad as u8, 0]);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn encode_len(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// The whole request as bytes (BEGIN_REQUEST, PARAMS…, empty PARAMS, STDIN…, empty STDIN).
pub fn encode_request(req: &FcgiRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let mut begin = RESPONDER.to_be_bytes().to_vec();
    begin.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // flags 0: close after the request
    record(&mut out, BEGIN_REQUEST, &begin);

    let uri = if req.query.is_empty() {
        format!("/{}", req.script)
    } else {
        format!("/{}?{}", req.script, req.query)
    };
    let mut params: Vec<(String, String)> = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_METHOD".into(), req.method.clone()),
        (
            "SCRIPT_FILENAME".into(),
            format!("{}/{}", xtask::image::CONTAINER_DOCROOT, req.script),
        ),
        ("SCRIPT_NAME".into(), format!("/{}", req.script)),
        ("REQUEST_URI".into(), uri),
        (
            "DOCUMENT_ROOT".into(),
            xtask::image::CONTAINER_DOCROOT.into(),
        ),
        ("QUERY_STRING".into(), req.query.clone()),
        ("CONTENT_LENGTH".into(), req.body.len().to_string()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
    ];
    if let Some(ct) = req
        .content_type
        .clone()
        .or_else(|| (!req.body.is_empty()).then(|| "application/octet-stream".into()))
    {
        params.push(("CONTENT_TYPE".into(), ct));
    }
    params.extend(req.params.iter().cloned());
    let mut encoded = Vec::new();
    for (k, v) in &params {
        encode_len(&mut encoded, k.len());
        encode_len(&mut encoded, v.len());
        encoded.extend_from_slice(k.as_bytes());
        encoded.extend_from_slice(v.as_bytes());
    }
    for chunk in encoded.chunks(MAX_CONTENT) {
        record(&mut out, PARAMS, chunk);
    }
    record(&mut out, PARAMS, &[]);
    for chunk in req.body.chunks(MAX_CONTENT) {
        record(&mut out, STDIN, chunk);
    }
    record(&mut out, STDIN, &[]);
    out
}

/// Split CGI output into status, headers and body.
pub fn parse_cgi(raw: &[u8]) -> io::Result<FcgiResponse> {
    let (head, body) = match find(raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, &[][..]),
        },
    };
    let mut resp = FcgiResponse {
        status: 200,
        body: body.to_vec(),
        ..Default::default()
    };
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        if k.eq_ignore_ascii_case("Status") {
            resp.status = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad Status header {v:?}"),
                    )
                })?;
        }
        resp.headers.push((k, v));
    }
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split an encoded stream into (type, content) records, checking framing.
    fn records(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert!(data.len() >= 8, "truncated header");
            assert_eq!(data[0], VERSION);
            assert_eq!(u16::from_be_bytes([data[2], data[3]]), REQUEST_ID);
            let len = u16::from_be_bytes([data[4], data[5]]) as usize;
            let pad = data[6] as usize;
            assert_eq!((len + pad) % 8, 0, "records are padded to 8 bytes");
            out.push((data[1], data[8..8 + len].to_vec()));
            data = &data[8 + len + pad..];
        }
        out
    }

    fn decode_params(mut data: &[u8]) -> Vec<(String, String)> {
        fn len(data: &mut &[u8]) -> usize {
            if data[0] & 0x80 == 0 {
                let l = data[0] as usize;
                *data = &data[1..];
                l
            } else {
                let l = (u32::from_be_bytes([data[0], data[1], data[2], data[3]]) & 0x7fff_ffff)
                    as usize;
                *data = &data[4..];
                l
            }
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let k = len(&mut data);
            let v = len(&mut data);
            out.push((
                String::from_utf8(data[..k].to_vec()).expect("utf8 key"),
                String::from_utf8(data[k..k + v].to_vec()).expect("utf8 value"),
            ));
            data = &data[k + v..];
        }
        out
    }

    #[test]
    fn request_is_framed_per_spec() {
        let body = vec![7u8; 70_000];
        let mut req = FcgiRequest::post("echo.php", &body);
        req.params.push(("HTTP_X_LONG".into(), "v".repeat(300)));
        let recs = records(&encode_request(&req));
        assert_eq!(recs[0].0, BEGIN_REQUEST);
        assert_eq!(recs[0].1, vec![0, 1, 0, 0, 0, 0, 0, 0]);
        let params: Vec<u8> = recs
            .iter()
            .filter(|r| r.0 == PARAMS)
            .flat_map(|r| r.1.clone())
            .collect();
        let params = decode_params(&params);
        let get = |k: &str| params.iter().find(|p| p.0 == k).map(|p| p.1.clone());
        assert_eq!(get("SCRIPT_FILENAME").as_deref(), Some("/srv/www/echo.php"));
        assert_eq!(get("REQUEST_METHOD").as_deref(), Some("POST"));
        assert_eq!(get("CONTENT_LENGTH").as_deref(), Some("70000"));
        assert_eq!(get("HTTP_X_LONG").map(|v| v.len()), Some(300));
        let kinds: Vec<(u8, usize)> = recs.iter().map(|r| (r.0, r.1.len())).collect();
        let tail = &kinds[kinds.len() - 4..];
        assert_eq!(
            tail,
            &[
                (PARAMS, 0),
                (STDIN, 65535),
                (STDIN, 70_000 - 65535),
                (STDIN, 0)
            ]
        );
    }

    #[test]
    fn cgi_output_is_split() {
        let r = parse_cgi(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nnope")
            .expect("parse");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("text/html"));
        assert_eq!(r.body, b"nope");
        let r = parse_cgi(b"X-A: 1\r\n\r\n").expect("parse");
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert!(parse_cgi(b"Status: abc\r\n\r\n").is_err());
    }
}
