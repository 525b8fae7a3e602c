//! Property: any valid frame sequence decodes to the same events however the reads split it.

use hioload_wsproto::frame::write_frame;
use hioload_wsproto::{Event, Limits, Message, OpCode, Role, Session};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Piece {
    Whole {
        text: bool,
        payload: Vec<u8>,
    },
    Fragmented {
        text: bool,
        parts: Vec<Vec<u8>>,
        ping_between: bool,
    },
    Ping(Vec<u8>),
}

fn text_payload() -> impl Strategy<Value = Vec<u8>> {
    ".{0,40}".prop_map(|s: String| s.into_bytes())
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(t, p)| {
            if t {
                Piece::Whole {
                    text: true,
                    payload: String::from_utf8_lossy(&p).into_owned().into_bytes(),
                }
            } else {
                Piece::Whole {
                    text: false,
                    payload: p,
                }
            }
        }),
        (text_payload(), 1usize..5, any::<bool>()).prop_map(|(p, n, ping)| {
            // Cut a text message at arbitrary byte positions, even inside code points.
            let step = p.len() / n + 1;
            let mut parts: Vec<Vec<u8>> = p.chunks(step).map(<[u8]>::to_vec).collect();
            if parts.is_empty() {
                parts.push(Vec::new());
            }
            Piece::Fragmented {
                text: true,
                parts,
                ping_between: ping,
            }
        }),
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..4),
            any::<bool>()
        )
            .prop_map(|(parts, ping)| Piece::Fragmented {
                text: false,
                parts,
                ping_between: ping
            }),
        prop::collection::vec(any::<u8>(), 0..126).prop_map(Piece::Ping),
    ]
}

fn encode(pieces: &[Piece], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Whole { text, payload } => write_frame(
                &mut out,
                true,
                if *text { OpCode::Text } else { OpCode::Binary },
                payload,
                Some(key),
            ),
            Piece::Fragmented {
                text,
                parts,
                ping_between,
            } => {
                let last = parts.len() - 1;
                for (i, part) in parts.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => OpCode::Text,
                        (0, false) => OpCode::Binary,
                        _ => OpCode::Continuation,
                    };
                    write_frame(&mut out, i == last, op, part, Some(key));
                    if *ping_between && i != last {
                        write_frame(&mut out, true, OpCode::Ping, b"mid", Some(key));
                    }
                }
            }
            Piece::Ping(p) => write_frame(&mut out, true, OpCode::Ping, p, Some(key)),
        }
    }
    out
}

fn decode(stream: &[u8], cuts: &[usize]) -> (Vec<(u8, Vec<u8>)>, Vec<u8>) {
    let mut s = Session::new(Role::Server, Limits::default());
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(stream.len());
    for end in bounds {
        let mut chunk = stream[start..end].to_vec();
        s.feed(&mut chunk, &mut out, |ev, _| match ev {
            Event::Message(Message::Text(t)) => events.push((1, t.as_bytes().to_vec())),
            Event::Message(Message::Binary(b)) => events.push((2, b.to_vec())),
            Event::Ping(p) => events.push((9, p.to_vec())),
            Event::Pong(p) => events.push((10, p.to_vec())),
            Event::Close(_) => events.push((8, Vec::new())),
        })
        .expect("valid stream");
        start = end;
    }
    (events, out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn any_split_decodes_the_same(
        pieces in prop::collection::vec(piece(), 1..8),
        key in any::<[u8; 4]>(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let stream = encode(&pieces, key);
        let whole = decode(&stream, &[]);
        let split = decode(&stream, &cuts);
        prop_assert_eq!(&whole, &split);
        // And one byte at a time.
        let every: Vec<usize> = (0..stream.len()).collect();
        prop_assert_eq!(&whole, &decode(&stream, &every));
        // The decoded messages are the ones encoded.
        let expected: Vec<Vec<u8>> = pieces.iter().filter_map(|p| match p {
            Piece::Whole { payload, .. } => Some(payload.clone()),
            Piece::Fragmented { parts, .. } => Some(parts.concat()),
            Piece::Ping(_) => None,
        }).collect();
        let got: Vec<Vec<u8>> = whole.0.iter().filter(|(op, _)| *op == 1 || *op == 2).map(|(_, p)| p.clone()).collect();
        prop_assert_eq!(expected, got);
    }
}
