//! Property-based fuzzing of every parser that reads what an outsider sends:
//! a client's JSON-RPC message, sealed values (sessions, `requestState`,
//! cookies, stored secrets), `WWW-Authenticate` challenges and SSE streams
//! from upstreams, `Mcp-Name` header values, list cursors, URI templates,
//! OAuth `state`, and upstream results. Each must answer (or refuse) without
//! panicking. The number of cases is bounded (`FUZZ_CASES`, default 2000 per
//! target) so that the suite's run time stays predictable.

use proptest::prelude::*;
use serde_json::Value;

use crate::adapters::discovery::auth_param;
use crate::crypto::{Aad, KeySet};
use crate::domain::StateParam;
use crate::edge::proxy::respond;
use crate::gateway::Reply;
use crate::gateway::{decode_cursor, pass_through, template_matches};
use crate::upstream::sse::{find_event_end, find_event_end_from, sse_data};
use crate::upstream::Answer;
use crate::wire::envelope::{self, Method, Parsed};
use crate::wire::{decode_header_value, header_value};

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON, biased toward the shapes of JSON-RPC messages.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("2.0"),
            Just("tools/call"),
            Just("resources/read"),
            Just("_meta"),
            Just("input_required")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_owned()),
                    Just("id".to_owned()),
                    Just("method".to_owned()),
                    Just("params".to_owned()),
                    Just("result".to_owned()),
                    Just("error".to_owned()),
                    Just("resultType".to_owned()),
                    Just("ttlMs".to_owned()),
                    Just("cacheScope".to_owned()),
                    Just("_meta".to_owned()),
                    Just("isError".to_owned()),
                    Just("content".to_owned()),
                    ".{0,6}".prop_map(String::from)
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `a` and `b` are the same JSON, fractions within a relative 1e-12:
/// serde_json reads a fraction to the nearest double or next to it, so
/// text written from a parsed tree may read a last bit away from the text
/// it was parsed from.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if !(x.is_i64() || x.is_u64()) => {
            let (x, y) = (
                x.as_f64().unwrap_or_default(),
                y.as_f64().unwrap_or_default(),
            );
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn keys() -> KeySet {
    KeySet::from_secret_string(r#"{"current":"k1","k1":"0123456789abcdef0123456789abcdef"}"#)
        .expect("a key set")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn jsonrpc_bodies_of_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = envelope::parse(&body);
    }

    #[test]
    fn jsonrpc_messages_of_any_shape(message in json()) {
        match envelope::parse(message.to_string().as_bytes()) {
            Parsed::Request(r) => {
                // The id echoes as sent, the method keeps its name, and the
                // params (always an object) forward to the same JSON.
                prop_assert_eq!(r.id.as_json(), message["id"].to_string());
                prop_assert_eq!(r.method.as_str(), message["method"].as_str().unwrap_or("?"));
                match r.params {
                    Some(p) => {
                        let forwarded = serde_json::to_string(&p).unwrap();
                        prop_assert_eq!(forwarded, message["params"].to_string());
                    }
                    None => prop_assert!(message.get("params").is_none()),
                }
            }
            Parsed::Invalid { id, .. } => {
                if let Some(id) = id {
                    prop_assert_eq!(id.as_json(), message["id"].to_string());
                }
            }
            Parsed::Response(a) => {
                // The id echoes as sent and the outcome reads as the same JSON.
                prop_assert_eq!(a.id.as_json(), message["id"].to_string());
                let value: serde_json::Value = serde_json::from_str(&a.value).unwrap();
                prop_assert_eq!(&value, &message[a.member]);
            }
            Parsed::Accepted => {}
        }
    }

    #[test]
    fn sealed_values_of_any_text(text in ".{0,200}", prefix in prop_oneof![Just(""), Just("k1."), Just("k2.")]) {
        let sealed = format!("{prefix}{text}");
        let _ = KeySet::key_id_of(&sealed);
        prop_assert!(keys().open(&sealed, &Aad::new("client-session", &[])).is_err());
    }

    #[test]
    fn tampered_sealed_values_never_open(plain in prop::collection::vec(any::<u8>(), 0..64), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = keys();
        let aad = Aad::new("request-state", &[]);
        let sealed = k.seal(&plain, &aad);
        prop_assert_eq!(k.open(&sealed, &aad).unwrap(), plain);
        let mut bytes = sealed.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(altered) = String::from_utf8(bytes) {
            prop_assert!(k.open(&altered, &aad).is_err());
        }
    }

    #[test]
    fn www_authenticate_challenges(header in ".{0,120}", name in prop_oneof![Just("scope"), Just("resource_metadata"), Just("error")]) {
        let _ = auth_param(&header, name);
        let _ = auth_param(&format!("Bearer {header}"), name);
    }

    #[test]
    fn quoted_challenge_values_round_trip(value in "[ -~&&[^\"\\\\]]{0,40}") {
        let header = format!("Bearer error=\"insufficient_scope\", scope=\"{value}\"");
        prop_assert_eq!(auth_param(&header, "scope"), Some(value));
    }

    #[test]
    fn upstream_sse_streams(stream in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Some(end) = find_event_end(&stream) {
            prop_assert!(end <= stream.len());
            let _ = sse_data(&stream[..end]);
        }
        let _ = sse_data(&stream);
    }

    #[test]
    fn sse_scanning_resumes_where_it_stopped(
        stream in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'd'), Just(b':')], 0..64),
        cut in 0usize..64,
    ) {
        // Whatever the chunking, resuming after a prefix with no complete
        // event finds the same event end as a scan from the start.
        let cut = cut.min(stream.len());
        if find_event_end(&stream[..cut]).is_none() {
            prop_assert_eq!(find_event_end_from(&stream, cut), find_event_end(&stream));
        }
    }

    #[test]
    fn upstream_results_of_any_shape(message in json()) {
        let _ = pass_through(message);
    }

    #[test]
    fn results_passed_as_written_read_as_their_trees(
        result in json(),
        shape in 0u8..3,
        pretty in any::<bool>(),
    ) {
        // What a client reads of an answer passed on as the upstream wrote
        // it is what it reads of the same answer parsed and written again.
        let message = match shape {
            0 => serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": result}),
            1 => serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [result]}}),
            _ => result,
        };
        let text = if pretty {
            serde_json::to_string_pretty(&message)
        } else {
            serde_json::to_string(&message)
        }
        .expect("JSON");
        // What is not kept as text is read as a tree, as the reader does.
        let answer = Answer::from_body(&bytes::Bytes::from(text.clone()))
            .unwrap_or_else(|| Answer::Tree(message.clone()));
        let kept = match answer.as_is() {
            Some(result) => Reply::AsIs(result),
            None => pass_through(answer.into_value().expect("parses")),
        };
        if shape == 1 {
            prop_assert!(matches!(kept, Reply::AsIs(_)), "passed as written: {}", text);
        }
        // The tree as the reader makes it: from the text.
        let tree = pass_through(serde_json::from_str(&text).expect("JSON"));
        let Parsed::Request(request) = envelope::parse(br#"{"jsonrpc":"2.0","id":"r-1","method":"ping"}"#) else {
            unreachable!("a request")
        };
        for modern in [false, true] {
            for method in [Method::ToolsCall, Method::ToolsList] {
                let read = |reply: Reply| {
                    let res = respond(reply, request.id.clone(), modern, &method);
                    let bytes = futures::executor::block_on(axum::body::to_bytes(res.into_body(), usize::MAX))
                        .expect("a body");
                    serde_json::from_slice::<Value>(&bytes).expect("JSON")
                };
                let (as_kept, as_tree) = (read(kept.clone()), read(tree.clone()));
                prop_assert!(
                    same_json(&as_kept, &as_tree),
                    "{} modern={} {:?}: {} against {}", text, modern, method, as_kept, as_tree
                );
            }
        }
    }

    #[test]
    fn header_values_round_trip(s in ".{0,40}") {
        prop_assert_eq!(decode_header_value(&header_value(&s)), Some(s.clone()));
        let _ = decode_header_value(&s);
    }

    #[test]
    fn cursors_and_states_and_templates(s in ".{0,80}", t in ".{0,40}") {
        let _ = decode_cursor(&s);
        let _ = StateParam::parse(&s);
        let _ = template_matches(&t, &s);
        let _ = template_matches(&format!("file:///{{{t}}}/x"), &s);
    }
}
