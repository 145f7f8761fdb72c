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
