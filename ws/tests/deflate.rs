//! permessage-deflate through `Session`: round trips between a client and a server session for
//! every context-takeover policy, with and without the worker's codecs; the RSV1 rules of
//! RFC 7692 §6; the bound on inflated output; corrupt data; shared codecs between sessions
//! whose messages interleave.

use hioload_wsproto::deflate::{self, Codecs, Compressor, DeflateConfig, DeflateParams};
use hioload_wsproto::frame::{FrameHeader, FrameTallies, MAX_HEADER_LEN};
use hioload_wsproto::mask::apply_mask;
use hioload_wsproto::{
    CloseCode, Event, Limits, Message, OpCode, ProtocolError, Role, Session, SessionState,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Parameters both ends agreed on for `config`, through the real offer and answer.
fn agree(config: &DeflateConfig) -> (DeflateParams, DeflateParams) {
    let offer = deflate::offer(config);
    let a = deflate::negotiate(&[offer.as_str()], config).expect("offer accepted");
    let client = deflate::accept(&a.response, config).expect("answer accepted");
    (client, a.params)
}

fn chat_json(n: usize, salt: u32) -> String {
    let mut s = String::new();
    let mut i = salt;
    while s.len() < n {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        s.push_str(&format!(
            "{{\"type\":\"message\",\"channel\":\"room-{}\",\"user\":\"u{}\",\"text\":\"héllo {}\"}}",
            i % 7,
            i % 13,
            i >> 20
        ));
    }
    s.truncate(s.char_indices().take_while(|(p, _)| *p < n).count());
    s
}

/// A frame from the client: masked, with `rsv`.
fn client_frame(fin: bool, rsv: u8, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv,
        opcode: op,
        mask: Some(KEY),
        len: payload.len() as u64,
    };
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut hdr);
    let mut v = hdr[..n].to_vec();
    let start = v.len();
    v.extend_from_slice(payload);
    apply_mask(&mut v[start..], KEY, 0);
    v
}

fn compressed(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(Compressor::new(6, 15).message(data, &mut out));
    out
}

/// Feed `chunks` to a server session with deflate; the messages and the error, if any.
fn serve(
    session: &mut Session,
    codecs: Option<&mut Codecs>,
    chunks: &[Vec<u8>],
) -> (Vec<String>, Option<ProtocolError>, Vec<u8>) {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let mut err = None;
    let mut codecs = codecs;
    for c in chunks {
        let mut buf = c.clone();
        let r = session.feed_with(
            &mut buf,
            &mut out,
            &mut FrameTallies::default(),
            codecs.as_deref_mut(),
            |ev, _| match ev {
                Event::Message(Message::Text(t)) => seen.push(t.to_owned()),
                Event::Message(Message::Binary(b)) => seen.push(format!("binary:{}", b.len())),
                Event::Ping(_) => seen.push("ping".into()),
                _ => {}
            },
        );
        if let Err(e) = r {
            err = Some(e);
        }
    }
    (seen, err, out)
}

fn server(limits: Limits) -> Session {
    let (_, s) = agree(&DeflateConfig::default());
    Session::new(Role::Server, limits).with_deflate(s)
}

/// The close code of the close frame at the start of `out` (a server frame).
fn close_code(out: &[u8]) -> u16 {
    assert_eq!(out[0], 0x88, "a close frame: {out:02x?}");
    u16::from_be_bytes([out[2], out[3]])
}

#[test]
fn echo_round_trips_for_every_policy_with_and_without_codecs() {
    let both = [false, true];
    for server_takeover in both {
        for client_takeover in both {
            for bits in [9, 15] {
                for pooled in both {
                    let config = DeflateConfig {
                        server_takeover,
                        client_takeover,
                        server_window_bits: bits,
                        client_window_bits: bits,
                        level: 6,
                        ..DeflateConfig::default()
                    };
                    let what = format!("{config:?} pooled={pooled}");
                    let (cp, sp) = agree(&config);
                    let mut client = Session::new(Role::Client { mask_seed: 9 }, Limits::default())
                        .with_deflate(cp);
                    let mut srv = Session::new(Role::Server, Limits::default()).with_deflate(sp);
                    let mut client_codecs = Codecs::new(6, 64);
                    let mut server_codecs = Codecs::new(6, 64);
                    let (mut plain_bytes, mut wire_bytes) = (0, 0);
                    for (i, n) in [10, 200, 1_000, 1_000, 16_384, 70_000, 0, 500]
                        .into_iter()
                        .enumerate()
                    {
                        let msg = chat_json(n, i as u32 % 3);
                        let mut wire = Vec::new();
                        let cc = pooled.then_some(&mut client_codecs.compress);
                        client.sender_with(&mut wire, None, cc).text(&msg);
                        plain_bytes += msg.len();
                        wire_bytes += wire.len();
                        // The server echoes; the client decodes the echo.
                        let mut back = Vec::new();
                        let sc = pooled.then_some(&mut server_codecs);
                        srv.feed_with(
                            &mut wire,
                            &mut back,
                            &mut FrameTallies::default(),
                            sc,
                            |ev, tx| {
                                if let Event::Message(m) = ev {
                                    tx.message(m);
                                }
                            },
                        )
                        .unwrap_or_else(|e| panic!("server, {what}, {n} bytes: {e}"));
                        let mut echoed = None;
                        let cc = pooled.then_some(&mut client_codecs);
                        client
                            .feed_with(
                                &mut back,
                                &mut Vec::new(),
                                &mut FrameTallies::default(),
                                cc,
                                |ev, _| {
                                    if let Event::Message(Message::Text(t)) = ev {
                                        echoed = Some(t.to_owned());
                                    }
                                },
                            )
                            .unwrap_or_else(|e| panic!("client, {what}, {n} bytes: {e}"));
                        assert_eq!(echoed.as_deref(), Some(msg.as_str()), "{what}, {n} bytes");
                    }
                    assert!(
                        wire_bytes * 3 < plain_bytes,
                        "{what}: {wire_bytes} on the wire for {plain_bytes}"
                    );
                    if pooled {
                        let s = server_codecs.stats();
                        assert!(s.inflated >= 5 && s.compressed >= 5, "{what}: {s:?}");
                        assert!(s.inflated_out > s.inflated_in * 3, "{what}: {s:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn fragmented_compressed_message_across_reads_with_a_ping_inside() {
    let msg = chat_json(5_000, 1);
    let z = compressed(msg.as_bytes());
    let third = z.len() / 3;
    let mut stream = client_frame(false, 0b100, OpCode::Text, &z[..third]);
    stream.extend(client_frame(true, 0, OpCode::Ping, b"hi"));
    stream.extend(client_frame(
        false,
        0,
        OpCode::Continuation,
        &z[third..2 * third],
    ));
    stream.extend(client_frame(true, 0, OpCode::Continuation, &z[2 * third..]));
    // One byte per read: headers and payloads are cut everywhere.
    let chunks: Vec<Vec<u8>> = stream.iter().map(|b| vec![*b]).collect();
    for pooled in [false, true] {
        let mut codecs = Codecs::new(1, 64);
        let mut s = server(Limits::default());
        let (seen, err, _) = serve(&mut s, pooled.then_some(&mut codecs), &chunks);
        assert_eq!(err, None);
        assert_eq!(seen, ["ping".to_owned(), msg.clone()]);
    }
}

#[test]
fn uncompressed_messages_still_pass_in_a_deflate_session() {
    let mut s = server(Limits::default());
    let (seen, err, _) = serve(
        &mut s,
        None,
        &[
            client_frame(true, 0, OpCode::Text, b"plain"),
            client_frame(true, 0b100, OpCode::Text, &compressed(b"squeezed")),
            client_frame(true, 0, OpCode::Binary, &[1, 2, 3]),
        ],
    );
    assert_eq!(err, None);
    assert_eq!(seen, ["plain", "squeezed", "binary:3"]);
}

#[test]
fn rsv1_where_the_rfc_forbids_it_fails_1002() {
    let z = compressed(b"hello hello hello");
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "on a ping",
            client_frame(true, 0b100, OpCode::Ping, b""),
            true,
        ),
        (
            "on a close",
            client_frame(true, 0b100, OpCode::Close, &[3, 232]),
            true,
        ),
        (
            "on a continuation",
            {
                let mut v = client_frame(false, 0b100, OpCode::Text, &z[..3]);
                v.extend(client_frame(true, 0b100, OpCode::Continuation, &z[3..]));
                v
            },
            true,
        ),
        (
            "RSV2 with deflate",
            client_frame(true, 0b010, OpCode::Text, b"x"),
            true,
        ),
        (
            "RSV1|RSV3",
            client_frame(true, 0b101, OpCode::Text, &z),
            true,
        ),
        (
            "RSV1 without deflate",
            client_frame(true, 0b100, OpCode::Text, &z),
            false,
        ),
    ];
    for (what, bytes, with_deflate) in cases {
        let mut s = if with_deflate {
            server(Limits::default())
        } else {
            Session::new(Role::Server, Limits::default())
        };
        let (seen, err, out) = serve(&mut s, None, &[bytes]);
        assert!(
            matches!(err, Some(ProtocolError::ReservedBits(_))),
            "{what}: {err:?}"
        );
        assert!(seen.is_empty(), "{what}: {seen:?}");
        assert_eq!(close_code(&out), 1002, "{what}");
        assert_eq!(s.state(), SessionState::Closed);
    }
}

#[test]
fn a_bomb_is_closed_with_1009_at_the_limit() {
    // 16 MiB of zeros compress to about 16 KiB; the limit is 1 MiB.
    let bomb = compressed(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 32 << 10, "{}", bomb.len());
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };
    for pooled in [false, true] {
        let mut codecs = Codecs::new(1, 64);
        let mut s = server(limits);
        let (seen, err, out) = serve(
            &mut s,
            pooled.then_some(&mut codecs),
            &[client_frame(true, 0b100, OpCode::Binary, &bomb)],
        );
        assert!(seen.is_empty());
        assert_eq!(
            err,
            Some(ProtocolError::MessageTooLarge {
                len: (1 << 20) + 1,
                max: 1 << 20
            })
        );
        assert_eq!(close_code(&out), CloseCode::TOO_BIG.0);
        if pooled {
            // Inflating stopped at the limit: the shared buffer never grew past it.
            assert!(
                codecs.inflate_capacity() <= (1 << 20) + 1,
                "{}",
                codecs.inflate_capacity()
            );
        }
    }
    // Just under the limit inflates.
    let fits = compressed(&vec![0u8; 1 << 20]);
    let mut s = server(limits);
    let (seen, err, _) = serve(
        &mut s,
        None,
        &[client_frame(true, 0b100, OpCode::Binary, &fits)],
    );
    assert_eq!((seen, err), (vec![format!("binary:{}", 1 << 20)], None));
}

#[test]
fn corrupt_data_and_bad_utf8_fail_1007() {
    let garbage = vec![0xffu8; 64];
    let bad_utf8 = compressed(&[b'a', 0xff, 0xfe, b'b']);
    for (what, frame, expect) in [
        (
            "garbage",
            client_frame(true, 0b100, OpCode::Text, &garbage),
            ProtocolError::InvalidCompressedData,
        ),
        (
            "invalid UTF-8 inside",
            client_frame(true, 0b100, OpCode::Text, &bad_utf8),
            ProtocolError::InvalidUtf8,
        ),
    ] {
        let mut s = server(Limits::default());
        let (_, err, out) = serve(&mut s, None, &[frame]);
        assert_eq!(err, Some(expect), "{what}");
        assert_eq!(close_code(&out), 1007, "{what}");
    }
}

#[test]
fn sessions_sharing_codecs_interleave_fragmented_messages() {
    let mut codecs = Codecs::new(1, 64);
    let (mut a, mut b) = (server(Limits::default()), server(Limits::default()));
    let (ma, mb) = (chat_json(3_000, 1), chat_json(4_000, 2));
    let (za, zb) = (compressed(ma.as_bytes()), compressed(mb.as_bytes()));
    let half = |z: &[u8], first: bool| {
        let h = z.len() / 2;
        if first {
            client_frame(false, 0b100, OpCode::Text, &z[..h])
        } else {
            client_frame(true, 0, OpCode::Continuation, &z[h..])
        }
    };
    // A's first half, B's whole message in two reads, then A's second half.
    let (s1, e1, _) = serve(&mut a, Some(&mut codecs), &[half(&za, true)]);
    let (s2, e2, _) = serve(
        &mut b,
        Some(&mut codecs),
        &[half(&zb, true), half(&zb, false)],
    );
    let (s3, e3, _) = serve(&mut a, Some(&mut codecs), &[half(&za, false)]);
    assert_eq!((e1, e2, e3), (None, None, None));
    assert!(s1.is_empty());
    assert_eq!(s2, [mb]);
    assert_eq!(s3, [ma]);
}

#[test]
fn small_messages_and_control_frames_go_uncompressed() {
    let (_, sp) = agree(&DeflateConfig::default());
    let mut s = Session::new(Role::Server, Limits::default()).with_deflate(sp);
    let mut codecs = Codecs::new(1, 64);
    let mut out = Vec::new();
    let mut tally = Default::default();
    {
        let mut tx = s.sender_with(&mut out, Some(&mut tally), Some(&mut codecs.compress));
        tx.text("short");
        tx.ping(b"p");
        tx.text(&chat_json(300, 0));
    }
    // Frame 1: plain text; frame 2: ping; frame 3: RSV1 text.
    assert_eq!(out[0], 0x81);
    assert_eq!(&out[2..7], b"short");
    assert_eq!(out[7], 0x89);
    assert_eq!(out[10], 0xc1, "RSV1 + FIN + text");
    let s = codecs.stats();
    assert_eq!((s.compressed, s.sent_plain), (1, 1));
}

#[test]
fn a_256_byte_window_peer_gets_plain_messages_and_its_own_inflate() {
    let a = deflate::negotiate(
        &["permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"],
        &DeflateConfig::default(),
    )
    .unwrap();
    let mut s = Session::new(Role::Server, Limits::default()).with_deflate(a.params);
    let mut codecs = Codecs::new(1, 64);
    let long = chat_json(2_000, 5);
    let mut out = Vec::new();
    s.sender_with(&mut out, None, Some(&mut codecs.compress))
        .text(&long);
    assert_eq!(out[0], 0x81, "sent uncompressed");
    // What the peer compresses with an 8-bit window (here: a 9-bit compressor on a message
    // whose back-references stay within 256 bytes) still inflates.
    let (seen, err, _) = serve(
        &mut s,
        Some(&mut codecs),
        &[client_frame(
            true,
            0b100,
            OpCode::Text,
            &compressed(b"abcabcabcabc"),
        )],
    );
    assert_eq!((seen, err), (vec!["abcabcabcabc".to_owned()], None));
}
