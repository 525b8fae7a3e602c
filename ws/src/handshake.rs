//! The opening handshake (RFC 6455 §4): the server parses and answers the client's HTTP/1.1
//! upgrade request; the client (used by tests and the load generator) builds the request and
//! checks the answer. Parsing is `httparse`'s; this module adds the WebSocket rules.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID that RFC 6455 §1.3 appends to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Headers parsed at most; more is answered with 431.
const MAX_HEADERS: usize = 64;

/// Default limit of the request head (request line and headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;

/// A valid upgrade request, borrowing from the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request target, e.g. `/chat?room=1`.
    pub path: &'a str,
    /// The Host header.
    pub host: &'a str,
    /// The Origin header, sent by browsers.
    pub origin: Option<&'a str>,
    /// Sec-WebSocket-Key, already checked to be base64 of 16 bytes.
    pub key: &'a str,
    /// Subprotocols the client offers, in its order of preference.
    pub protocols: Vec<&'a str>,
    /// Extensions the client offers, one per entry with its parameters, in its order of
    /// preference (see [`crate::deflate::negotiate()`]).
    pub extensions: Vec<&'a str>,
}

/// Why a handshake failed. Each server-side variant maps to an HTTP status (see [`Self::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request head is larger than the configured limit.
    #[error("request header block exceeds {0} bytes")]
    HeaderTooLarge(usize),
    /// More headers than the parser has room for.
    #[error("more than {MAX_HEADERS} request headers")]
    TooManyHeaders,
    /// Not parseable as HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    /// A method other than GET.
    #[error("method must be GET")]
    NotGet,
    /// HTTP/1.0.
    #[error("HTTP/1.1 is required")]
    NotHttp11,
    /// No Host header.
    #[error("missing Host header")]
    MissingHost,
    /// A plain HTTP request: no `Upgrade: websocket`.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// `Upgrade: websocket` without `Connection: Upgrade`.
    #[error("Connection header lacks the Upgrade token")]
    MissingConnectionUpgrade,
    /// Sec-WebSocket-Key missing, repeated, or not base64 of 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
    /// Sec-WebSocket-Version missing or not 13.
    #[error("unsupported Sec-WebSocket-Version (13 is required)")]
    BadVersion,
    /// The application refused the request (for example its Origin).
    #[error("rejected by policy: {reason}")]
    Rejected {
        /// HTTP status to answer with.
        status: u16,
        /// Short reason for the response body.
        reason: &'static str,
    },
    /// Client side: the server answered with a status other than 101.
    #[error("server answered HTTP {0} instead of 101")]
    UnexpectedStatus(u16),
    /// Client side: the server's Sec-WebSocket-Accept is missing or wrong.
    #[error("server's Sec-WebSocket-Accept does not match the key")]
    BadAccept,
}

impl HandshakeError {
    /// The HTTP status a server answers this failure with.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeaderTooLarge(_) | Self::TooManyHeaders => 431,
            Self::NotUpgrade | Self::BadVersion => 426,
            Self::Rejected { status, .. } => *status,
            _ => 400,
        }
    }

    /// The complete HTTP response a server sends for this failure before closing.
    pub fn response(&self) -> Vec<u8> {
        let extra = match self {
            Self::NotUpgrade => "Upgrade: websocket\r\n",
            Self::BadVersion => "Sec-WebSocket-Version: 13\r\n",
            _ => "",
        };
        error_response(self.status(), &self.to_string(), extra)
    }
}

/// A complete error response with a one-line plain-text body.
pub fn error_response(status: u16, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n{body}\n",
        reason_phrase(status),
        body.len() + 1
    )
    .into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Sec-WebSocket-Accept for a client's key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    BASE64.encode(sha.finalize())
}

/// Whether a comma-separated header value contains `token`, ignoring ASCII case.
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A plain HTTP/1.x request (not a WebSocket upgrade), for a server that answers those too on
/// its WebSocket listener (a page, a health check, an admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target, e.g. `/metrics`.
    pub path: &'a str,
    /// The body's length (`Content-Length`; 0 without one).
    pub content_length: usize,
    /// Every header, in order, values as text.
    pub headers: Vec<(&'a str, &'a str)>,
}

impl HttpRequest<'_> {
    /// The first header named `name` (ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Parse a plain request head from the start of `buf` (`Ok(None)`: incomplete). Requests with a
/// chunked body are refused (400): only `Content-Length` bodies are read.
pub fn parse_http(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<(HttpRequest<'_>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_header_bytes => {
            return Err(HandshakeError::HeaderTooLarge(max_header_bytes))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_header_bytes => {
            return Err(HandshakeError::HeaderTooLarge(max_header_bytes))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(e) => return Err(HandshakeError::Malformed(parse_error_text(e))),
    };
    let mut out = HttpRequest {
        method: req.method.unwrap_or_default(),
        path: req.path.unwrap_or("/"),
        content_length: 0,
        headers: Vec::with_capacity(req.headers.len()),
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HandshakeError::Malformed("non-UTF-8 header value"))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            out.content_length = value
                .trim()
                .parse()
                .map_err(|_| HandshakeError::Malformed("invalid Content-Length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HandshakeError::Malformed("chunked bodies are not accepted"));
        }
        out.headers.push((h.name, value));
    }
    Ok(Some((out, head_len)))
}

/// A complete HTTP/1.1 response with `body`, closing the connection after it.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Parse an upgrade request from the start of `buf`.
///
/// `Ok(None)` means the head is incomplete (read more, unless the buffer has reached
/// `max_header_bytes`, which this function reports as [`HandshakeError::HeaderTooLarge`]).
/// On success returns the request and the length of its head; bytes after it are frames.
pub fn parse_request(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_header_bytes => {
            return Err(HandshakeError::HeaderTooLarge(max_header_bytes))
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_header_bytes => {
            return Err(HandshakeError::HeaderTooLarge(max_header_bytes))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(e) => return Err(HandshakeError::Malformed(parse_error_text(e))),
    };
    if req.method != Some("GET") {
        return Err(HandshakeError::NotGet);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::NotHttp11);
    }
    let path = req.path.unwrap_or("/");

    let (mut host, mut origin, mut key, mut version) = (None, None, None, None);
    let (mut upgrade, mut connection_upgrade, mut key_count) = (false, false, 0);
    let (mut protocols, mut extensions) = (Vec::new(), Vec::new());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HandshakeError::Malformed("non-UTF-8 header value"))?;
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value.trim());
            key_count += 1;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value.trim());
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocols.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            extensions.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
        }
    }
    if !upgrade {
        return Err(HandshakeError::NotUpgrade);
    }
    let host = host
        .filter(|h| !h.is_empty())
        .ok_or(HandshakeError::MissingHost)?;
    if !connection_upgrade {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if version != Some("13") {
        return Err(HandshakeError::BadVersion);
    }
    let key = match key {
        Some(k) if key_count == 1 && BASE64.decode(k).is_ok_and(|d| d.len() == 16) => k,
        _ => return Err(HandshakeError::BadKey),
    };
    Ok(Some((
        Request {
            path,
            host,
            origin,
            key,
            protocols,
            extensions,
        },
        head_len,
    )))
}

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// The 101 response accepting `req`, with the chosen subprotocol and the accepted extensions
/// (a `Sec-WebSocket-Extensions` value), if any.
pub fn accept_response(
    req: &Request<'_>,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(req.key)
    );
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    if let Some(e) = extensions {
        out.push_str("Sec-WebSocket-Extensions: ");
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A Sec-WebSocket-Key from 16 random bytes the caller supplies.
pub fn client_key(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// Append a client upgrade request to `out`, offering `protocols` and `extensions` (a
/// `Sec-WebSocket-Extensions` value such as [`crate::deflate::offer()`]'s).
pub fn write_client_request(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    key: &str,
    protocols: &[&str],
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    if !protocols.is_empty() {
        out.extend_from_slice(
            format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", ")).as_bytes(),
        );
    }
    if let Some(e) = extensions {
        out.extend_from_slice(format!("Sec-WebSocket-Extensions: {e}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A server's 101 answer, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// Length of the response head; bytes after it are frames.
    pub head_len: usize,
    /// The subprotocol the server chose.
    pub protocol: Option<&'a str>,
    /// The extensions the server accepted (`Sec-WebSocket-Extensions`).
    pub extensions: Option<&'a str>,
}

/// Client side: check the server's answer to a request sent with `key`.
///
/// Returns `Ok(None)` while the head is incomplete.
pub fn parse_response<'a>(
    buf: &'a [u8],
    key: &str,
) -> Result<Option<Accepted<'a>>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= DEFAULT_MAX_HEADER_BYTES => {
            return Err(HandshakeError::HeaderTooLarge(DEFAULT_MAX_HEADER_BYTES))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(parse_error_text(e))),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::UnexpectedStatus(code));
    }
    let expected = accept_key(key);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    if header("sec-websocket-accept").map(str::trim) != Some(expected.as_str()) {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(Accepted {
        head_len,
        protocol: header("sec-websocket-protocol").map(str::trim),
        extensions: header("sec-websocket-extensions").map(str::trim),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn parse(s: &str) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
        parse_request(s.as_bytes(), DEFAULT_MAX_HEADER_BYTES)
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn valid_request_parses_with_trailing_frames() {
        let mut s =
            request("Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n");
        let head = s.len();
        s.push('\u{81}');
        let (req, n) = parse(&s).unwrap().unwrap();
        assert_eq!(n, head);
        assert_eq!(req.path, "/chat");
        assert_eq!(req.host, "server.example.com");
        assert_eq!(req.origin, Some("http://example.com"));
        assert_eq!(req.protocols, ["chat", "superchat"]);
        let resp = String::from_utf8(accept_response(&req, Some("chat"), None)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn header_tokens_are_case_insensitive_lists() {
        let s = request("")
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
        assert!(parse(&s).unwrap().is_some());
    }

    #[test]
    fn partial_request_needs_more() {
        let s = request("");
        for cut in 0..s.len() - 1 {
            assert_eq!(parse(&s[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn faults_map_to_statuses() {
        let cases: Vec<(String, HandshakeError, u16)> = vec![
            (
                request("").replace("GET", "POST"),
                HandshakeError::NotGet,
                400,
            ),
            (
                request("").replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::NotHttp11,
                400,
            ),
            (
                request("").replace("Host: server.example.com\r\n", ""),
                HandshakeError::MissingHost,
                400,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
                HandshakeError::NotUpgrade,
                426,
            ),
            (
                request("").replace("Connection: Upgrade", "Connection: close"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                request("").replace(KEY, "c2hvcnQ="),
                HandshakeError::BadKey,
                400,
            ),
            (request("").replace(KEY, "!!!"), HandshakeError::BadKey, 400),
            (
                request(&format!("Sec-WebSocket-Key: {KEY}\r\n")),
                HandshakeError::BadKey,
                400,
            ),
            (
                request("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                HandshakeError::BadVersion,
                426,
            ),
            (
                "GET / HTTP/1.1\r\nHo st: a\r\n\r\n".into(),
                HandshakeError::Malformed("invalid header name"),
                400,
            ),
        ];
        for (req, err, status) in cases {
            assert_eq!(parse(&req), Err(err.clone()), "{req:?}");
            assert_eq!(err.status(), status);
        }
        let resp = String::from_utf8(HandshakeError::BadVersion.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
        let resp = String::from_utf8(HandshakeError::NotUpgrade.response()).unwrap();
        assert!(resp.contains("Upgrade: websocket\r\n"));
    }

    #[test]
    fn oversized_and_crowded_heads_get_431() {
        let big = request(&format!("X-Pad: {}\r\n", "a".repeat(9000)));
        assert_eq!(
            parse(&big),
            Err(HandshakeError::HeaderTooLarge(DEFAULT_MAX_HEADER_BYTES))
        );
        // Incomplete but already past the limit: also 431, without waiting for the rest.
        let partial = format!("GET / HTTP/1.1\r\nX-Pad: {}", "a".repeat(9000));
        assert_eq!(
            parse(&partial),
            Err(HandshakeError::HeaderTooLarge(DEFAULT_MAX_HEADER_BYTES))
        );
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let err = parse(&request(&many)).unwrap_err();
        assert_eq!(
            (err.clone(), err.status()),
            (HandshakeError::TooManyHeaders, 431)
        );
    }

    #[test]
    fn client_roundtrip() {
        let key = client_key([7; 16]);
        let mut req = Vec::new();
        let offer = "permessage-deflate; client_max_window_bits, x-other";
        write_client_request(&mut req, "h:1", "/p", &key, &["a", "b"], Some(offer));
        let (parsed, n) = parse_request(&req, DEFAULT_MAX_HEADER_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!((n, parsed.protocols.clone()), (req.len(), vec!["a", "b"]));
        assert_eq!(
            parsed.extensions,
            ["permessage-deflate; client_max_window_bits", "x-other"]
        );
        let resp = accept_response(&parsed, Some("b"), Some("permessage-deflate"));
        assert_eq!(
            parse_response(&resp, &key),
            Ok(Some(Accepted {
                head_len: resp.len(),
                protocol: Some("b"),
                extensions: Some("permessage-deflate"),
            }))
        );
        let plain = accept_response(&parsed, None, None);
        assert_eq!(
            parse_response(&plain, &key).unwrap().unwrap().extensions,
            None
        );
        assert_eq!(
            parse_response(&resp, &client_key([8; 16])),
            Err(HandshakeError::BadAccept)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", &key),
            Err(HandshakeError::UnexpectedStatus(403))
        );
    }
}
