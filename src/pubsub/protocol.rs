//! The pub/sub wire protocol, version 1 (`docs/PROTOCOL.md`): client requests parsed from the
//! JSON of a text frame, and the server's messages encoded as JSON. Pure functions: no sockets,
//! no state.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 64;
/// Longest string request id, in bytes (as decoded).
pub const MAX_ID_LEN: usize = 64;
/// Messages a `history` request returns unless it gives `limit`, and a `joined` reply carries.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// The error codes of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not an object, a missing or mistyped field, an unknown `type`.
    BadRequest,
    /// A channel name that breaks the name rule.
    BadChannel,
    /// A user name that breaks the name rule.
    BadUser,
    /// The request needs the channel to have been joined.
    NotJoined,
    /// The text is over `--max-publish-size`.
    TooLarge,
    /// The connection has joined `--max-channels-per-connection` channels.
    TooManyChannels,
    /// The connection publishes faster than its rate limit.
    RateLimited,
    /// Not allowed (authentication).
    Forbidden,
    /// The appliance cannot serve the request now (a worker's mailbox is full, a limit on
    /// channels is reached); trying again later may work.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order of the protocol document.
    pub const ALL: [ErrorCode; 9] = [
        Self::BadRequest,
        Self::BadChannel,
        Self::BadUser,
        Self::NotJoined,
        Self::TooLarge,
        Self::TooManyChannels,
        Self::RateLimited,
        Self::Forbidden,
        Self::Unavailable,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::BadChannel => "bad_channel",
            Self::BadUser => "bad_user",
            Self::NotJoined => "not_joined",
            Self::TooLarge => "too_large",
            Self::TooManyChannels => "too_many_channels",
            Self::RateLimited => "rate_limited",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
        }
    }

    /// Its position in [`ErrorCode::ALL`] (for counting).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A request refused: the code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: Cow<'static, str>,
}

impl Refusal {
    /// A refusal with a fixed message.
    pub const fn new(code: ErrorCode, message: &'static str) -> Self {
        Self {
            code,
            message: Cow::Borrowed(message),
        }
    }
}

/// A request id, echoed in the direct reply: the JSON text of a number, or of a string of at
/// most [`MAX_ID_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Box<str>);

impl RequestId {
    /// The id as JSON (a number or a quoted string).
    pub fn as_json(&self) -> &str {
        &self.0
    }

    fn from_raw(raw: &RawValue) -> Result<Self, Refusal> {
        let json = raw.get();
        match json.as_bytes().first() {
            Some(b'"') => {
                let s: Cow<'_, str> = serde_json::from_str(json).map_err(|_| {
                    Refusal::new(ErrorCode::BadRequest, "`id` is not a valid string")
                })?;
                if s.len() > MAX_ID_LEN {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        "`id` is longer than 64 bytes",
                    ));
                }
                Ok(Self(json.into()))
            }
            Some(b'-' | b'0'..=b'9') => Ok(Self(json.into())),
            _ => Err(Refusal::new(
                ErrorCode::BadRequest,
                "`id` must be a number or a string",
            )),
        }
    }
}

/// A client request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Join a channel (as `user`, which is absent only where authentication names the user).
    Join {
        /// The channel.
        channel: Cow<'a, str>,
        /// The user name given.
        user: Option<Cow<'a, str>>,
        /// Recover from this seq: every retained message after it.
        since: Option<u64>,
        /// The epoch `since` belongs to (from an earlier `joined`; scale-out only): another
        /// epoch means the history it counted in is gone.
        epoch: Option<Cow<'a, str>>,
    },
    /// Leave a channel.
    Leave {
        /// The channel.
        channel: Cow<'a, str>,
    },
    /// Publish a text to a channel.
    Message {
        /// The channel.
        channel: Cow<'a, str>,
        /// The text.
        text: Cow<'a, str>,
    },
    /// Read a channel's retained messages.
    History {
        /// The channel.
        channel: Cow<'a, str>,
        /// How many, newest first counted, returned oldest first.
        limit: usize,
        /// Only messages with a seq below this.
        before: Option<u64>,
    },
    /// Who is in a channel.
    Presence {
        /// The channel.
        channel: Cow<'a, str>,
    },
}

impl Request<'_> {
    /// The channel the request is about.
    pub fn channel(&self) -> &str {
        match self {
            Self::Join { channel, .. }
            | Self::Leave { channel }
            | Self::Message { channel, .. }
            | Self::History { channel, .. }
            | Self::Presence { channel } => channel,
        }
    }
}

/// A parsed text frame: the id if one could be read, and the request or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The request's id, for the reply.
    pub id: Option<RequestId>,
    /// The request, or why it is refused.
    pub request: Result<Request<'a>, Refusal>,
}

/// The fields of any request, as they arrive.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    since: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Cow<'a, str>>,
    limit: Option<u64>,
    before: Option<u64>,
}

/// Only the id, to answer a request whose other fields are broken with its id.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// Parse one text frame from a client.
pub fn parse(text: &str) -> Parsed<'_> {
    let fields: Fields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let id = serde_json::from_str::<IdOnly<'_>>(text)
                .ok()
                .and_then(|i| i.id)
                .and_then(|raw| RequestId::from_raw(raw).ok());
            return Parsed {
                id,
                request: Err(Refusal {
                    code: ErrorCode::BadRequest,
                    message: Cow::Owned(format!("not a valid request: {e}")),
                }),
            };
        }
    };
    let id = match fields.id.map(RequestId::from_raw).transpose() {
        Ok(id) => id,
        Err(refusal) => {
            return Parsed {
                id: None,
                request: Err(refusal),
            }
        }
    };
    Parsed {
        id,
        request: check(fields),
    }
}

fn check(f: Fields<'_>) -> Result<Request<'_>, Refusal> {
    let kind = f
        .kind
        .ok_or(Refusal::new(ErrorCode::BadRequest, "missing `type`"))?;
    let channel = f.channel.ok_or_else(|| Refusal {
        code: ErrorCode::BadRequest,
        message: Cow::Owned(format!("`{kind}` needs `channel`")),
    });
    let request = match &*kind {
        "join" => Request::Join {
            channel: channel?,
            user: f.user,
            since: f.since,
            epoch: f.epoch,
        },
        "leave" => Request::Leave { channel: channel? },
        "message" => Request::Message {
            channel: channel?,
            text: f.text.ok_or(Refusal::new(
                ErrorCode::BadRequest,
                "`message` needs `text` (a string)",
            ))?,
        },
        "history" => Request::History {
            channel: channel?,
            limit: f.limit.map_or(DEFAULT_HISTORY_LIMIT, |l| {
                usize::try_from(l).unwrap_or(usize::MAX)
            }),
            before: f.before,
        },
        "presence" => Request::Presence { channel: channel? },
        other => {
            return Err(Refusal {
                code: ErrorCode::BadRequest,
                message: Cow::Owned(format!("unknown type `{}`", truncate(other, 32))),
            })
        }
    };
    check_channel(request.channel())?;
    if let Request::Join {
        user: Some(user), ..
    } = &request
    {
        check_user(user)?;
    }
    Ok(request)
}

/// The channel name rule: 1 to 128 bytes of `[A-Za-z0-9_.:@-]`.
pub fn check_channel(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::BadChannel,
            "a channel name is 1 to 128 bytes of A-Z a-z 0-9 _ . : @ -",
        ))
    }
}

/// The user name rule: 1 to 64 bytes of Unicode without control characters.
pub fn check_user(name: &str) -> Result<(), Refusal> {
    if !name.is_empty() && name.len() <= MAX_USER_LEN && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::BadUser,
            "a user name is 1 to 64 bytes without control characters",
        ))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (for echoing input in messages).
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Append `s` to `out` as a JSON string (quoted and escaped).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            // Other control characters: \u00XX. Cannot fail: writing to a String.
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A server message under construction: `{"type":T` then fields, then [`Out::finish`].
pub struct Out(String);

impl Out {
    /// Start a message of type `kind`, with the request's id when it answers one.
    pub fn new(kind: &str, id: Option<&RequestId>) -> Self {
        let mut s = String::with_capacity(96);
        s.push_str("{\"type\":\"");
        s.push_str(kind);
        s.push('"');
        if let Some(id) = id {
            s.push_str(",\"id\":");
            s.push_str(id.as_json());
        }
        Self(s)
    }

    fn key(&mut self, key: &str) {
        self.0.push_str(",\"");
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    /// A string field.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(&mut self.0, value);
        self
    }

    /// A number field.
    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.0, "{value}");
        self
    }

    /// A boolean field.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.0.push_str(if value { "true" } else { "false" });
        self
    }

    /// An array of strings.
    pub fn strs<'s>(mut self, key: &str, values: impl IntoIterator<Item = &'s str>) -> Self {
        self.key(key);
        self.0.push('[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            push_str(&mut self.0, v);
        }
        self.0.push(']');
        self
    }

    /// An array of JSON values already encoded (retained messages).
    pub fn raw_array<'s>(mut self, key: &str, values: impl IntoIterator<Item = &'s str>) -> Self {
        self.key(key);
        self.0.push('[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.0.push_str(v);
        }
        self.0.push(']');
        self
    }

    /// The finished JSON object.
    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A `message`: what every member of `channel` receives, and what its history keeps.
pub fn message(channel: &str, user: &str, text: &str, seq: u64, ts_ms: u64) -> String {
    Out::new("message", None)
        .str("channel", channel)
        .str("user", user)
        .str("text", text)
        .num("seq", seq)
        .num("ts", ts_ms)
        .finish()
}

/// An `error` reply.
pub fn error(id: Option<&RequestId>, refusal: &Refusal) -> String {
    Out::new("error", id)
        .str("code", refusal.code.as_str())
        .str("message", &refusal.message)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Request<'_>, ErrorCode> {
        parse(text).request.map_err(|r| r.code)
    }

    #[test]
    fn requests_parse_with_their_fields() {
        assert_eq!(
            req(r#"{"type":"join","channel":"a:b","user":"ann","since":3}"#),
            Ok(Request::Join {
                channel: "a:b".into(),
                user: Some("ann".into()),
                since: Some(3),
                epoch: None,
            })
        );
        assert_eq!(
            req(r#"{"type":"message","channel":"c","text":"hi \"you\"","extra":[1]}"#),
            Ok(Request::Message {
                channel: "c".into(),
                text: "hi \"you\"".into()
            })
        );
        assert_eq!(
            req(r#"{"type":"history","channel":"c"}"#),
            Ok(Request::History {
                channel: "c".into(),
                limit: 50,
                before: None
            })
        );
        assert_eq!(
            req(r#"{"type":"leave","channel":"c"}"#),
            Ok(Request::Leave {
                channel: "c".into()
            })
        );
        assert_eq!(
            req(r#"{"type":"presence","channel":"c"}"#),
            Ok(Request::Presence {
                channel: "c".into()
            })
        );
    }

    #[test]
    fn faults_have_their_codes() {
        for (text, code) in [
            ("not json", ErrorCode::BadRequest),
            ("[1,2]", ErrorCode::BadRequest),
            (r#"{"channel":"c"}"#, ErrorCode::BadRequest),
            (r#"{"type":"dance","channel":"c"}"#, ErrorCode::BadRequest),
            (r#"{"type":"join","user":"u"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"join","channel":5,"user":"u"}"#,
                ErrorCode::BadRequest,
            ),
            (r#"{"type":"message","channel":"c"}"#, ErrorCode::BadRequest),
            (
                r#"{"type":"message","channel":"c","text":7}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"history","channel":"c","limit":-1}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"type":"join","channel":"","user":"u"}"#,
                ErrorCode::BadChannel,
            ),
            (
                r#"{"type":"join","channel":"a b","user":"u"}"#,
                ErrorCode::BadChannel,
            ),
            (r#"{"type":"leave","channel":"é"}"#, ErrorCode::BadChannel),
            (
                r#"{"type":"join","channel":"c","user":""}"#,
                ErrorCode::BadUser,
            ),
            (
                r#"{"type":"join","channel":"c","user":"a\u0007b"}"#,
                ErrorCode::BadUser,
            ),
            (
                r#"{"type":"join","channel":"c","id":[1]}"#,
                ErrorCode::BadRequest,
            ),
        ] {
            assert_eq!(req(text), Err(code), "{text}");
        }
        let long = "c".repeat(129);
        assert_eq!(
            req(&format!(r#"{{"type":"leave","channel":"{long}"}}"#)),
            Err(ErrorCode::BadChannel)
        );
        assert!(req(&format!(
            r#"{{"type":"leave","channel":"{}"}}"#,
            &long[..128]
        ))
        .is_ok());
        let user = "ü".repeat(33); // 66 bytes
        assert_eq!(
            req(&format!(
                r#"{{"type":"join","channel":"c","user":"{user}"}}"#
            )),
            Err(ErrorCode::BadUser)
        );
    }

    #[test]
    fn ids_are_echoed_even_when_the_rest_is_broken() {
        let p = parse(r#"{"type":"join","id":17,"channel":3}"#);
        assert_eq!(p.id.as_ref().map(RequestId::as_json), Some("17"));
        assert!(p.request.is_err());
        let p = parse(r#"{"type":"nope","id":"abc"}"#);
        assert_eq!(p.id.as_ref().map(RequestId::as_json), Some("\"abc\""));
        let long = "x".repeat(65);
        let text = format!(r#"{{"type":"leave","channel":"c","id":"{long}"}}"#);
        let p = parse(&text);
        assert_eq!(p.id, None);
        assert_eq!(p.request.map_err(|r| r.code), Err(ErrorCode::BadRequest));
    }

    #[test]
    fn encoded_messages_are_json_with_every_character_escaped() {
        let text: String = (0u8..0x80).map(char::from).chain("é☃𝄞".chars()).collect();
        let json = message("room", "ann \"the\" \\ one", &text, 7, 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["type"], "message");
        assert_eq!(v["channel"], "room");
        assert_eq!(v["user"], "ann \"the\" \\ one");
        assert_eq!(v["text"], text.as_str());
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ts"], 1_700_000_000_000u64);

        let id = parse(r#"{"type":"x","id":"q\"1"}"#).id;
        let json = Out::new("joined", id.as_ref())
            .strs("users", ["a", "b"])
            .raw_array("history", [r#"{"n":1}"#, r#"{"n":2}"#])
            .bool("recovered", true)
            .finish();
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["id"], "q\"1");
        assert_eq!(v["users"], serde_json::json!(["a", "b"]));
        assert_eq!(v["history"][1]["n"], 2);
        assert_eq!(v["recovered"], true);
    }
}
