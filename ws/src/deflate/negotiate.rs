//! Negotiating permessage-deflate (RFC 7692 §5 and §7.1).
//!
//! The client offers the extension in `Sec-WebSocket-Extensions`, possibly several times with
//! different parameters. The server takes the first offer it can accept and answers it; an offer
//! with an unknown, repeated or malformed parameter is declined (the handshake goes on without
//! it, as §5 asks). The client checks the answer against its offer and fails the handshake when
//! the server answered something it did not allow (§7.1).

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// Smallest LZ77 window, in bits, this implementation compresses with. RFC 7692 allows 8, but
/// zlib (and zlib-rs) cannot produce a raw deflate stream with a 256-byte window.
pub const MIN_WINDOW_BITS: u8 = 9;
/// Largest LZ77 window, in bits (32 KiB).
pub const MAX_WINDOW_BITS: u8 = 15;

/// What an endpoint is willing to do: the operator's policy on a server, the offer on a client.
/// Names follow the RFC's roles, whichever side uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Largest window the server compresses with (9..=15). A client may ask for less.
    pub server_window_bits: u8,
    /// Largest window asked of the client (9..=15), when its offer lets the server limit it.
    pub client_window_bits: u8,
    /// The server keeps its compression context from message to message. Off (the default),
    /// every message is compressed on its own: the server needs no compressor per session and
    /// compresses a broadcast once for all its receivers.
    pub server_takeover: bool,
    /// The client may keep its context from message to message. Off (the default), the server
    /// needs no inflate window per session.
    pub client_takeover: bool,
    /// Compression level, 0 (store) to 9 (smallest).
    pub level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub min_size: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_window_bits: MAX_WINDOW_BITS,
            client_window_bits: MAX_WINDOW_BITS,
            server_takeover: false,
            client_takeover: false,
            level: 1,
            min_size: 64,
        }
    }
}

impl DeflateConfig {
    /// Check the ranges; the error names the first setting out of range.
    pub fn validate(&self) -> Result<(), String> {
        let window = MIN_WINDOW_BITS..=MAX_WINDOW_BITS;
        if !window.contains(&self.server_window_bits) {
            return Err(format!(
                "server window bits must be 9 to 15, not {}",
                self.server_window_bits
            ));
        }
        if !window.contains(&self.client_window_bits) {
            return Err(format!(
                "client window bits must be 9 to 15, not {}",
                self.client_window_bits
            ));
        }
        if self.level > 9 {
            return Err(format!(
                "compression level must be 0 to 9, not {}",
                self.level
            ));
        }
        Ok(())
    }
}

/// What was agreed for one connection, seen from the endpoint that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window this endpoint compresses with. Below [`MIN_WINDOW_BITS`] it sends every message
    /// uncompressed, which the RFC allows.
    pub send_window_bits: u8,
    /// This endpoint keeps its compression context between messages.
    pub send_takeover: bool,
    /// Largest window the peer compresses with.
    pub recv_window_bits: u8,
    /// The peer may keep its context between messages, so this endpoint keeps its inflate
    /// window for the session.
    pub recv_takeover: bool,
    /// Compression level, 0..=9.
    pub level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub min_size: u32,
}

impl DeflateParams {
    /// The window of the compressed frames this session can take from a compressor shared by
    /// many sessions (a broadcast compressed once), or 0 when it cannot take any: this endpoint
    /// keeps a context of its own, or the peer asked for a window too small to compress with.
    pub fn shared_window_bits(&self) -> u8 {
        if self.send_takeover || self.send_window_bits < MIN_WINDOW_BITS {
            0
        } else {
            self.send_window_bits
        }
    }
}

/// Why a client refuses the server's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The answer names an extension that was not offered, or several.
    #[error("server accepted an extension that was not offered: {0}")]
    NotOffered(String),
    /// A parameter is unknown, repeated, or has a bad value.
    #[error("malformed permessage-deflate answer: {0}")]
    Malformed(&'static str),
    /// A parameter the offer did not allow.
    #[error("permessage-deflate answer breaks the offer: {0}")]
    Disallowed(&'static str),
}

/// The parameters of one offer or answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in an offer only).
    client_max_window_bits: Option<Option<u8>>,
}

/// Parse one extension of a `Sec-WebSocket-Extensions` list: `None` when it is another
/// extension, else its parameters or what is wrong with them.
fn parse(extension: &str) -> Option<Result<Params, &'static str>> {
    let mut parts = extension.split(';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut p = Params::default();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (part.trim(), None),
        };
        let result = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => flag(&mut p.server_no_context_takeover, value),
            "client_no_context_takeover" => flag(&mut p.client_no_context_takeover, value),
            "server_max_window_bits" => match (p.server_max_window_bits, value) {
                (Some(_), _) => Err("server_max_window_bits repeated"),
                (None, None) => Err("server_max_window_bits needs a value"),
                (None, Some(v)) => window_bits(v).map(|b| p.server_max_window_bits = Some(b)),
            },
            "client_max_window_bits" => match (p.client_max_window_bits, value) {
                (Some(_), _) => Err("client_max_window_bits repeated"),
                (None, None) => {
                    p.client_max_window_bits = Some(None);
                    Ok(())
                }
                (None, Some(v)) => window_bits(v).map(|b| p.client_max_window_bits = Some(Some(b))),
            },
            "" => Err("empty parameter"),
            _ => Err("unknown parameter"),
        };
        if let Err(e) = result {
            return Some(Err(e));
        }
    }
    Some(Ok(p))
}

/// A parameter without a value, given once.
fn flag(seen: &mut bool, value: Option<&str>) -> Result<(), &'static str> {
    if *seen {
        return Err("context takeover parameter repeated");
    }
    if value.is_some() {
        return Err("context takeover parameter with a value");
    }
    *seen = true;
    Ok(())
}

/// A quoted-string value stands for the same token (RFC 7692 §7.1).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// A window size: a decimal 8..=15 without leading zeros (§7.1.2.1).
fn window_bits(v: &str) -> Result<u8, &'static str> {
    const BAD: &str = "window bits must be a decimal 8 to 15";
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    match v.parse::<u8>() {
        Ok(b @ 8..=15) => Ok(b),
        _ => Err(BAD),
    }
}

/// The server's side: what it agreed to, and the header value that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The parameters, seen from the server.
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub response: String,
}

/// Server side: accept the first offer among `offers` (the client's extensions, one per entry,
/// in its order of preference) that `config` can serve. `None` when there is no acceptable
/// offer; the connection then goes on uncompressed.
pub fn negotiate(offers: &[&str], config: &DeflateConfig) -> Option<Agreement> {
    let offer = offers.iter().find_map(|o| parse(o)?.ok())?;
    let server_no_takeover = offer.server_no_context_takeover || !config.server_takeover;
    // The server may forbid the client's context takeover whether or not it was offered
    // (§7.1.1.2).
    let client_no_takeover = offer.client_no_context_takeover || !config.client_takeover;
    let send_window_bits = offer
        .server_max_window_bits
        .unwrap_or(MAX_WINDOW_BITS)
        .min(config.server_window_bits);
    // Only a client that offered client_max_window_bits may be told a limit (§7.1.2.2).
    let recv_window_bits = match offer.client_max_window_bits {
        Some(v) => v.unwrap_or(MAX_WINDOW_BITS).min(config.client_window_bits),
        None => MAX_WINDOW_BITS,
    };
    let mut response = String::from(NAME);
    if server_no_takeover {
        response.push_str("; server_no_context_takeover");
    }
    if client_no_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if offer.server_max_window_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={send_window_bits}"));
    }
    if offer.client_max_window_bits.is_some() && recv_window_bits < MAX_WINDOW_BITS {
        response.push_str(&format!("; client_max_window_bits={recv_window_bits}"));
    }
    Some(Agreement {
        params: DeflateParams {
            send_window_bits,
            send_takeover: !server_no_takeover,
            recv_window_bits,
            recv_takeover: !client_no_takeover,
            level: config.level,
            min_size: config.min_size,
        },
        response,
    })
}

/// Client side: the `Sec-WebSocket-Extensions` value offering what `config` describes.
pub fn offer(config: &DeflateConfig) -> String {
    let mut s = String::from(NAME);
    if config.client_window_bits < MAX_WINDOW_BITS {
        s.push_str(&format!(
            "; client_max_window_bits={}",
            config.client_window_bits
        ));
    } else {
        s.push_str("; client_max_window_bits");
    }
    if !config.server_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if !config.client_takeover {
        s.push_str("; client_no_context_takeover");
    }
    if config.server_window_bits < MAX_WINDOW_BITS {
        s.push_str(&format!(
            "; server_max_window_bits={}",
            config.server_window_bits
        ));
    }
    s
}

/// Client side: check the server's answer (`Sec-WebSocket-Extensions` of the 101) to the offer
/// made from `config`, and return the parameters, seen from the client.
pub fn accept(response: &str, config: &DeflateConfig) -> Result<DeflateParams, NegotiationError> {
    let mut extensions = response.split(',').map(str::trim).filter(|e| !e.is_empty());
    let (Some(only), None) = (extensions.next(), extensions.next()) else {
        return Err(NegotiationError::NotOffered(response.to_owned()));
    };
    let answer = parse(only)
        .ok_or_else(|| NegotiationError::NotOffered(only.to_owned()))?
        .map_err(NegotiationError::Malformed)?;
    if !config.server_takeover && !answer.server_no_context_takeover {
        return Err(NegotiationError::Disallowed(
            "server_no_context_takeover was asked for and not granted",
        ));
    }
    let recv_window_bits = match answer.server_max_window_bits {
        Some(b) if b > config.server_window_bits => {
            return Err(NegotiationError::Disallowed(
                "server_max_window_bits above the offered limit",
            ))
        }
        Some(b) => b,
        None if config.server_window_bits < MAX_WINDOW_BITS => {
            return Err(NegotiationError::Disallowed(
                "server_max_window_bits was asked for and not granted",
            ))
        }
        None => MAX_WINDOW_BITS,
    };
    let send_window_bits = match answer.client_max_window_bits {
        Some(None) => {
            return Err(NegotiationError::Malformed(
                "client_max_window_bits needs a value in an answer",
            ))
        }
        Some(Some(b)) if b > config.client_window_bits => {
            return Err(NegotiationError::Disallowed(
                "client_max_window_bits above the offered limit",
            ))
        }
        Some(Some(b)) => b,
        None => config.client_window_bits,
    };
    Ok(DeflateParams {
        send_window_bits,
        send_takeover: config.client_takeover && !answer.client_no_context_takeover,
        recv_window_bits,
        recv_takeover: !answer.server_no_context_takeover,
        level: config.level,
        min_size: config.min_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(offers: &[&str]) -> Option<Agreement> {
        negotiate(offers, &DeflateConfig::default())
    }

    #[test]
    fn browser_offer_gets_no_takeover_both_ways() {
        let a = server(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(a.params.send_window_bits, 15);
        assert_eq!(a.params.recv_window_bits, 15);
        assert!(!a.params.send_takeover && !a.params.recv_takeover);
        assert_eq!(a.params.shared_window_bits(), 15);
    }

    #[test]
    fn takeover_is_kept_when_policy_and_offer_allow_it() {
        let config = DeflateConfig {
            server_takeover: true,
            client_takeover: true,
            ..DeflateConfig::default()
        };
        let a = negotiate(&["permessage-deflate"], &config).unwrap();
        assert_eq!(a.response, "permessage-deflate");
        assert!(a.params.send_takeover && a.params.recv_takeover);
        assert_eq!(a.params.shared_window_bits(), 0);
        // The client's no-takeover requests bind the server even so.
        let a = negotiate(
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
            &config,
        )
        .unwrap();
        assert!(!a.params.send_takeover && !a.params.recv_takeover);
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn window_bits_are_the_smaller_of_offer_and_policy() {
        let config = DeflateConfig {
            server_window_bits: 12,
            client_window_bits: 10,
            ..DeflateConfig::default()
        };
        let a = negotiate(
            &["permessage-deflate; server_max_window_bits=14; client_max_window_bits=9"],
            &config,
        )
        .unwrap();
        assert_eq!(a.params.send_window_bits, 12);
        assert_eq!(a.params.recv_window_bits, 9);
        assert!(a.response.contains("; server_max_window_bits=12"));
        assert!(a.response.contains("; client_max_window_bits=9"));
        // client_max_window_bits without a value: the policy's limit is answered.
        let a = negotiate(&["permessage-deflate; client_max_window_bits"], &config).unwrap();
        assert_eq!(a.params.recv_window_bits, 10);
        assert!(a.response.ends_with("; client_max_window_bits=10"));
        // Not offered: never answered, and the client may use 15.
        let a = negotiate(&["permessage-deflate"], &config).unwrap();
        assert_eq!(a.params.recv_window_bits, 15);
        assert!(!a.response.contains("client_max_window_bits"));
        assert!(!a.response.contains("server_max_window_bits"));
        assert_eq!(a.params.send_window_bits, 12);
    }

    #[test]
    fn a_256_byte_server_window_is_accepted_and_never_compressed_into() {
        let a = server(&["permessage-deflate; server_max_window_bits=8"]).unwrap();
        assert!(a.response.contains("server_max_window_bits=8"));
        assert_eq!(a.params.send_window_bits, 8);
        assert_eq!(a.params.shared_window_bits(), 0);
    }

    #[test]
    fn quoted_values_stand_for_tokens() {
        let a = server(&["permessage-deflate; server_max_window_bits=\"10\""]).unwrap();
        assert_eq!(a.params.send_window_bits, 10);
    }

    #[test]
    fn malformed_offers_are_declined_and_the_next_one_is_taken() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1x",
            "permessage-deflate; server_max_window_bits=-9",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate;",
        ] {
            assert_eq!(server(&[bad]), None, "{bad}");
            let a = server(&[bad, "permessage-deflate; server_max_window_bits=11"])
                .unwrap_or_else(|| panic!("second offer after {bad}"));
            assert_eq!(a.params.send_window_bits, 11, "{bad}");
        }
    }

    #[test]
    fn other_extensions_are_skipped() {
        assert_eq!(server(&["x-webkit-deflate-frame"]), None);
        assert_eq!(server(&[]), None);
        let a = server(&["x-webkit-deflate-frame", "PerMessage-Deflate"]).unwrap();
        assert_eq!(a.params.send_window_bits, 15);
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(DeflateConfig::default().validate().is_ok());
        for bad in [
            DeflateConfig {
                server_window_bits: 8,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                client_window_bits: 16,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                level: 10,
                ..DeflateConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_and_server_agree_for_every_policy_pair() {
        let both = [false, true];
        for (server_takeover, client_takeover) in
            both.into_iter().flat_map(|a| both.map(|b| (a, b)))
        {
            for (policy_server, policy_client) in
                both.into_iter().flat_map(|a| both.map(|b| (a, b)))
            {
                for bits in [9, 12, 15] {
                    let client = DeflateConfig {
                        server_window_bits: bits,
                        client_window_bits: bits,
                        server_takeover,
                        client_takeover,
                        ..DeflateConfig::default()
                    };
                    let policy = DeflateConfig {
                        server_takeover: policy_server,
                        client_takeover: policy_client,
                        ..DeflateConfig::default()
                    };
                    let offer = offer(&client);
                    let a = negotiate(&[offer.as_str()], &policy).unwrap();
                    let c = accept(&a.response, &client).unwrap();
                    assert_eq!(c.send_window_bits, a.params.recv_window_bits.min(bits));
                    assert_eq!(c.recv_window_bits, a.params.send_window_bits);
                    assert_eq!(c.send_takeover, a.params.recv_takeover, "{offer}");
                    assert_eq!(c.recv_takeover, a.params.send_takeover, "{offer}");
                    assert_eq!(a.params.send_takeover, server_takeover && policy_server);
                    assert_eq!(a.params.recv_takeover, client_takeover && policy_client);
                }
            }
        }
    }

    #[test]
    fn client_refuses_answers_its_offer_did_not_allow() {
        let config = DeflateConfig {
            server_window_bits: 10,
            client_window_bits: 12,
            ..DeflateConfig::default()
        };
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; x=1",
            "x-other",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, x-other",
        ] {
            assert!(accept(bad, &config).is_err(), "{bad}");
        }
        let ok = accept(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; client_max_window_bits=11",
            &config,
        )
        .unwrap();
        assert_eq!(
            (ok.send_window_bits, ok.recv_window_bits, ok.recv_takeover),
            (11, 9, false)
        );
    }
}
