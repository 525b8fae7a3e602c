//! Every RFC 6455 §5 rule the server session enforces, driven through `Session::feed`.

use hioload_wsproto::frame::write_frame;
use hioload_wsproto::{
    CloseCode, Event, Limits, Message, OpCode, ProtocolError, Role, Session, SessionState,
};

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// What the server observed and wrote.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<String>,
    out: Vec<u8>,
    err: Option<ProtocolError>,
}

fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_frame(&mut v, fin, op, payload, Some(KEY));
    v
}

fn raw(first: u8, payload: &[u8]) -> Vec<u8> {
    // A masked frame with an arbitrary first byte (RSV bits, reserved opcodes).
    let mut v = frame(true, OpCode::Binary, payload);
    v[0] = first;
    v
}

fn feed_with(limits: Limits, chunks: &[&[u8]]) -> (Session, Seen) {
    let mut s = Session::new(Role::Server, limits);
    let mut seen = Seen::default();
    for chunk in chunks {
        let mut buf = chunk.to_vec();
        let events = &mut seen.events;
        let r = s.feed(&mut buf, &mut seen.out, |ev, _| events.push(describe(ev)));
        if let Err(e) = r {
            seen.err = Some(e);
        }
    }
    (s, seen)
}

fn feed(chunks: &[&[u8]]) -> (Session, Seen) {
    feed_with(Limits::default(), chunks)
}

fn describe(ev: Event<'_>) -> String {
    match ev {
        Event::Message(Message::Text(t)) => format!("text:{t}"),
        Event::Message(Message::Binary(b)) => format!("binary:{}", b.len()),
        Event::Ping(p) => format!("ping:{}", p.len()),
        Event::Pong(p) => format!("pong:{}", p.len()),
        Event::Close(None) => "close".into(),
        Event::Close(Some(f)) => format!("close:{}:{}", f.code, f.reason),
    }
}

/// Decode what the server wrote as an unmasked frame sequence: (opcode, payload).
fn server_frames(out: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut client = Session::new(Role::Client { mask_seed: 1 }, Limits::default());
    let mut frames = Vec::new();
    let mut buf = out.to_vec();
    let mut sink = Vec::new();
    client
        .feed(&mut buf, &mut sink, |ev, _| match ev {
            Event::Message(Message::Text(t)) => frames.push((OpCode::Text, t.as_bytes().to_vec())),
            Event::Message(Message::Binary(b)) => frames.push((OpCode::Binary, b.to_vec())),
            Event::Ping(p) => frames.push((OpCode::Ping, p.to_vec())),
            Event::Pong(p) => frames.push((OpCode::Pong, p.to_vec())),
            Event::Close(f) => frames.push((
                OpCode::Close,
                f.map(|f| f.code.0.to_be_bytes().to_vec())
                    .unwrap_or_default(),
            )),
        })
        .expect("server output must be valid");
    frames
}

fn closed_with(seen: &Seen, code: CloseCode) {
    let frames = server_frames(&seen.out);
    assert_eq!(
        frames.last(),
        Some(&(OpCode::Close, code.0.to_be_bytes().to_vec())),
        "{seen:?}"
    );
}

#[test]
fn text_and_binary_messages() {
    let (s, seen) = feed(&[
        &frame(true, OpCode::Text, b"hello"),
        &frame(true, OpCode::Binary, &[0; 300]),
    ]);
    assert_eq!(seen.events, ["text:hello", "binary:300"]);
    assert_eq!(s.state(), SessionState::Open);
    assert!(seen.out.is_empty());
}

#[test]
fn unmasked_client_frame_fails_1002() {
    let mut f = Vec::new();
    write_frame(&mut f, true, OpCode::Text, b"hi", None);
    let (s, seen) = feed(&[&f]);
    assert_eq!(seen.err, Some(ProtocolError::UnmaskedFrame));
    assert_eq!(s.state(), SessionState::Closed);
    closed_with(&seen, CloseCode::PROTOCOL_ERROR);
    assert!(seen.events.is_empty());
}

#[test]
fn rsv_bits_without_extension_fail() {
    for rsv in 1..8u8 {
        let (_, seen) = feed(&[&raw(0x80 | (rsv << 4) | 0x1, b"x")]);
        assert_eq!(seen.err, Some(ProtocolError::ReservedBits(rsv)));
        closed_with(&seen, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn reserved_opcodes_fail() {
    for op in (3..=7u8).chain(11..=15) {
        let (_, seen) = feed(&[&raw(0x80 | op, b"")]);
        assert_eq!(seen.err, Some(ProtocolError::ReservedOpcode(op)));
        closed_with(&seen, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn control_frames_at_most_125_and_unfragmented() {
    let (_, seen) = feed(&[&frame(true, OpCode::Ping, &[0; 126])]);
    assert_eq!(seen.err, Some(ProtocolError::ControlFrameTooLong(126)));
    let (_, seen) = feed(&[&frame(false, OpCode::Ping, b"x")]);
    assert_eq!(seen.err, Some(ProtocolError::FragmentedControlFrame));
    let (_, seen) = feed(&[&frame(true, OpCode::Ping, &[7; 125])]);
    assert_eq!(seen.err, None);
    assert_eq!(server_frames(&seen.out), [(OpCode::Pong, vec![7; 125])]);
}

#[test]
fn control_frames_between_fragments() {
    let (_, seen) = feed(&[
        &frame(false, OpCode::Text, b"frag"),
        &frame(true, OpCode::Ping, b"p"),
        &frame(false, OpCode::Continuation, b"men"),
        &frame(true, OpCode::Pong, b""),
        &frame(true, OpCode::Continuation, b"ted"),
    ]);
    assert_eq!(seen.err, None);
    assert_eq!(seen.events, ["ping:1", "pong:0", "text:fragmented"]);
    assert_eq!(server_frames(&seen.out), [(OpCode::Pong, b"p".to_vec())]);
}

#[test]
fn continuation_rules() {
    let (_, seen) = feed(&[&frame(true, OpCode::Continuation, b"x")]);
    assert_eq!(seen.err, Some(ProtocolError::UnexpectedContinuation));
    let (_, seen) = feed(&[
        &frame(false, OpCode::Text, b"a"),
        &frame(true, OpCode::Text, b"b"),
    ]);
    assert_eq!(seen.err, Some(ProtocolError::ExpectedContinuation));
    let (_, seen) = feed(&[
        &frame(false, OpCode::Binary, b"a"),
        &frame(true, OpCode::Binary, b"b"),
    ]);
    assert_eq!(seen.err, Some(ProtocolError::ExpectedContinuation));
    // Empty fragments are fine.
    let (_, seen) = feed(&[
        &frame(false, OpCode::Text, b""),
        &frame(false, OpCode::Continuation, b""),
        &frame(true, OpCode::Continuation, b""),
    ]);
    assert_eq!(seen.events, ["text:"]);
}

#[test]
fn size_limits_close_1009_before_buffering() {
    let limits = Limits {
        max_frame: 100,
        max_message: 150,
    };
    // Only the header is fed: the frame is refused on its declared length.
    let f = frame(true, OpCode::Binary, &[0; 101]);
    let (s, seen) = feed_with(limits, &[&f[..8]]);
    assert_eq!(
        seen.err,
        Some(ProtocolError::FrameTooLarge { len: 101, max: 100 })
    );
    assert_eq!(s.buffered(), 0);
    closed_with(&seen, CloseCode::TOO_BIG);
    let (_, seen) = feed_with(
        limits,
        &[
            &frame(false, OpCode::Binary, &[0; 100]),
            &frame(true, OpCode::Continuation, &[0; 51]),
        ],
    );
    assert_eq!(
        seen.err,
        Some(ProtocolError::MessageTooLarge { len: 151, max: 150 })
    );
    closed_with(&seen, CloseCode::TOO_BIG);
    let (_, seen) = feed_with(
        limits,
        &[
            &frame(false, OpCode::Binary, &[0; 100]),
            &frame(true, OpCode::Continuation, &[0; 50]),
        ],
    );
    assert_eq!(
        (seen.err, seen.events),
        (None, vec!["binary:150".to_string()])
    );
}

#[test]
fn invalid_utf8_fails_fast_with_1007() {
    // The invalid byte is in the first fragment; the message never completes.
    let (s, seen) = feed(&[&frame(false, OpCode::Text, b"ok\xff")]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidUtf8));
    assert_eq!(s.state(), SessionState::Closed);
    closed_with(&seen, CloseCode::INVALID_PAYLOAD);
    // A frame cut mid-payload: detected in the first part.
    let f = frame(
        true,
        OpCode::Text,
        b"abc\xed\xa0\x80 and much more text after it",
    );
    let (_, seen) = feed(&[&f[..11]]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidUtf8));
    // A code point split across fragments is fine.
    let (_, seen) = feed(&[
        &frame(false, OpCode::Text, b"\xce"),
        &frame(true, OpCode::Continuation, b"\xba"),
    ]);
    assert_eq!(seen.events, ["text:κ"]);
    // Truncated at the end of the message.
    let (_, seen) = feed(&[
        &frame(false, OpCode::Text, b"a"),
        &frame(true, OpCode::Continuation, b"\xce"),
    ]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidUtf8));
    // Whole-frame fast path.
    let (_, seen) = feed(&[&frame(true, OpCode::Text, b"\xc0\xaf")]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn close_handshake_echoes_code() {
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    let (s, seen) = feed(&[&frame(true, OpCode::Close, &payload)]);
    assert_eq!(seen.events, ["close:1001:bye"]);
    assert_eq!(s.state(), SessionState::Closed);
    closed_with(&seen, CloseCode::GOING_AWAY);
    // Empty close: answered with an empty close.
    let (_, seen) = feed(&[&frame(true, OpCode::Close, b"")]);
    assert_eq!(seen.events, ["close"]);
    assert_eq!(seen.out, [0x88, 0x00]);
}

#[test]
fn invalid_close_payloads() {
    let (_, seen) = feed(&[&frame(true, OpCode::Close, &[0x03])]);
    assert_eq!(seen.err, Some(ProtocolError::ClosePayloadTooShort));
    closed_with(&seen, CloseCode::PROTOCOL_ERROR);
    let (_, seen) = feed(&[&frame(true, OpCode::Close, &1005u16.to_be_bytes())]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidCloseCode(1005)));
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.push(0xff);
    let (_, seen) = feed(&[&frame(true, OpCode::Close, &p)]);
    assert_eq!(seen.err, Some(ProtocolError::InvalidUtf8));
    closed_with(&seen, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn input_after_close_is_ignored() {
    let (_, seen) = feed(&[&[
        frame(true, OpCode::Close, b""),
        frame(true, OpCode::Text, b"late"),
    ]
    .concat()]);
    assert_eq!(seen.events, ["close"]);
}

#[test]
fn server_initiated_close_waits_for_reply() {
    let mut s = Session::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    s.sender(&mut out).close(CloseCode::GOING_AWAY, "shutdown");
    assert_eq!(s.state(), SessionState::CloseSent);
    // Nothing more is sent after the close frame, not even echoes.
    s.sender(&mut out).text("late");
    assert_eq!(
        server_frames(&out),
        [(OpCode::Close, 1001u16.to_be_bytes().to_vec())]
    );
    let mut reply = frame(true, OpCode::Close, &1001u16.to_be_bytes());
    let before = out.len();
    s.feed(&mut reply, &mut out, |_, _| {}).unwrap();
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(out.len(), before, "no second close frame");
}

#[test]
fn close_reason_is_cut_at_a_char_boundary() {
    let mut s = Session::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    s.sender(&mut out)
        .close(CloseCode::NORMAL, &"é".repeat(100));
    assert!(out.len() <= 2 + 125);
    let reason = &out[4..];
    assert!(std::str::from_utf8(reason).is_ok());
    assert_eq!(reason.len(), 122);
}

#[test]
fn zero_copy_for_whole_frames() {
    let mut s = Session::new(Role::Server, Limits::default());
    let mut input = frame(true, OpCode::Binary, b"payload");
    let range = input.as_ptr_range();
    let mut out = Vec::new();
    let mut inside = false;
    s.feed(&mut input, &mut out, |ev, _| {
        if let Event::Message(m) = ev {
            inside = range.contains(&m.as_bytes().as_ptr());
        }
    })
    .unwrap();
    assert!(inside, "a whole frame is delivered as a slice of the input");
    assert_eq!(s.buffered(), 0);
}

#[test]
fn client_role_rejects_masked_frames() {
    let mut s = Session::new(Role::Client { mask_seed: 9 }, Limits::default());
    let mut f = frame(true, OpCode::Text, b"x");
    let mut out = Vec::new();
    assert_eq!(
        s.feed(&mut f, &mut out, |_, _| {}),
        Err(ProtocolError::MaskedFrame)
    );
}

#[test]
fn frames_are_tallied_by_opcode_both_ways() {
    use hioload_wsproto::{FrameTallies, FrameTally};
    // In: a fragmented text message with a ping between its fragments, then a close.
    let mut input = Vec::new();
    input.extend(frame(false, OpCode::Text, b"hel"));
    input.extend(frame(true, OpCode::Ping, b"p"));
    input.extend(frame(true, OpCode::Continuation, b"lo"));
    input.extend(frame(true, OpCode::Close, &1000u16.to_be_bytes()));
    let mut s = Session::new(Role::Server, Limits::default());
    let mut out = Vec::new();
    let mut tallies = FrameTallies::default();
    s.feed_tallied(&mut input, &mut out, &mut tallies, |ev, reply| {
        if let Event::Message(m) = ev {
            reply.message(m);
        }
    })
    .unwrap();
    let tally = tallies.received;
    let i = |op: OpCode| op.index();
    assert_eq!(tally.frames[i(OpCode::Text)], 1);
    assert_eq!(tally.frames[i(OpCode::Continuation)], 1);
    assert_eq!(tally.frames[i(OpCode::Ping)], 1);
    assert_eq!(tally.frames[i(OpCode::Close)], 1);
    assert_eq!(
        tally.bytes[i(OpCode::Text)] + tally.bytes[i(OpCode::Continuation)],
        5
    );
    // Out: what the session wrote (pong, the echo, the close reply), counted from the bytes.
    let mut written = FrameTally::default();
    written.add_written(&out);
    assert_eq!(written.frames[i(OpCode::Pong)], 1);
    assert_eq!(written.frames[i(OpCode::Text)], 1);
    assert_eq!(written.bytes[i(OpCode::Text)], 5);
    assert_eq!(written.frames[i(OpCode::Close)], 1);
    assert_eq!(tallies.sent, written, "the session counted what it wrote");
    assert_eq!(
        s.close_code_sent(),
        Some(CloseCode::NORMAL),
        "the peer's code, echoed"
    );
    // A truncated tail is not counted.
    let mut partial = FrameTally::default();
    partial.add_written(&out[..out.len() - 1]);
    assert_eq!(partial.frames.iter().sum::<u64>(), 2);
}
