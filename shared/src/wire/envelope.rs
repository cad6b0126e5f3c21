//! The JSON-RPC envelope of a client's POST body, typed.
//!
//! The gateway accepts one message per request (no batches). A request
//! (`id` and `method`) is handed on; a notification or a response is
//! acknowledged with 202; anything else gets the JSON-RPC error the spec
//! names.
//!
//! What the gateway reads is typed: the [`Id`] (echoed as received), the
//! [`Method`] (an `Unknown` case keeps any other name), and through
//! [`Params`] the members it looks at (`name`, `uri`, `cursor`, `_meta`,
//! `requestState`, `ref`, `protocolVersion`, `capabilities`). Every other
//! member, `arguments` first among them, stays the JSON text the client
//! sent ([`RawValue`]) and reaches the upstream untouched: never parsed into
//! a tree, never re-serialized.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::codes;
use super::strict::valid;

mod params;

pub use super::method::Method;
pub use params::Params;

/// A request id: a string or a number, echoed exactly as it was written
/// (a number's digits included).
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    /// The id in `raw`, if it is a string or a number that reads as JSON
    /// (no lone surrogate, no number out of range).
    fn from_raw(raw: &RawValue) -> Option<Id> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') if valid(raw) => Some(Id(raw.to_owned())),
            _ => None,
        }
    }

    /// The id as JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl From<Id> for Value {
    fn from(id: Id) -> Value {
        serde_json::from_str(id.as_json()).unwrap_or(Value::Null)
    }
}

/// A request the gateway answers.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    /// The request id.
    pub id: Id,
    /// The method.
    pub method: Method,
    /// The params, if any.
    pub params: Option<Params>,
}

/// What a body turned out to be.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A request.
    Request(Incoming),
    /// A notification: nothing to answer (202).
    Accepted,
    /// A response: the client's answer to a request the gateway put to it.
    Response(Answer),
    /// Not a message the gateway takes: answer 400 with this error.
    Invalid {
        /// The request's id when it had a usable one.
        id: Option<Id>,
        /// JSON-RPC error code.
        code: i64,
        /// Error message.
        message: &'static str,
    },
}

/// A client's JSON-RPC response: its id and its outcome, as JSON text.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The id the gateway gave the request (string or number).
    pub id: Id,
    /// `"result"` or `"error"`.
    pub member: &'static str,
    /// The member's value, as sent (checked to read as JSON).
    pub value: String,
}

/// The members of a message, each kept raw until it is checked. A member
/// given as `null` is present (`Some`), unlike a missing one.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Reads `body` as one JSON-RPC message.
pub fn parse(body: &[u8]) -> Parsed {
    let invalid =
        |id: Option<Id>, code: i64, message: &'static str| Parsed::Invalid { id, code, message };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let not_an_object = |duplicate: bool| {
        let message = if first == Some(&b'[') {
            "Invalid Request: batches are not supported; send one message per request"
        } else if duplicate {
            "Invalid Request: a member appears more than once"
        } else {
            "Invalid Request: expected a JSON-RPC object"
        };
        invalid(None, codes::INVALID_REQUEST, message)
    };
    let envelope: Envelope = match serde_json::from_slice(body) {
        // (A derived struct would also accept a JSON array, positionally.)
        Ok(_) if first != Some(&b'{') => return not_an_object(false),
        Ok(e) => e,
        // Valid JSON, but not an object of distinct members.
        Err(e) if e.is_data() => {
            return not_an_object(e.to_string().starts_with("duplicate field"))
        }
        Err(_) => {
            return invalid(
                None,
                codes::PARSE_ERROR,
                "Parse error: the body is not JSON",
            )
        }
    };
    // The id to echo: only a string or a number is usable.
    let id: Option<Id> = envelope.id.and_then(Id::from_raw);
    if envelope.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return invalid(
            id,
            codes::INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        );
    }
    let method = match envelope.method {
        None => None,
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(m) => Some(m),
            Err(_) => {
                return invalid(
                    id,
                    codes::INVALID_REQUEST,
                    "Invalid Request: method must be a string",
                )
            }
        },
    };
    let params = match envelope.params {
        None => None,
        Some(raw) if !valid(raw) => {
            return invalid(
                id,
                codes::PARSE_ERROR,
                "Parse error: params hold text that is not JSON (a lone surrogate, a number out of range, nesting deeper than 128) or a member given twice",
            )
        }
        Some(raw) => match serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(raw.get()) {
            Ok(members) => Some(Params::from_members(members)),
            Err(_) => {
                return invalid(
                    id,
                    codes::INVALID_REQUEST,
                    "Invalid Request: params must be an object",
                )
            }
        },
    };
    let outcome = match (envelope.result, envelope.error) {
        (Some(r), None) => Some(("result", r)),
        (None, Some(e)) => Some(("error", e)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return invalid(
                id,
                codes::INVALID_REQUEST,
                "Invalid Request: a response has a result or an error, not both",
            )
        }
    };
    match (envelope.id, id, method) {
        (None, _, Some(_)) => Parsed::Accepted,
        (Some(_), id, None) if outcome.is_some() => {
            let Some((member, raw)) = outcome else {
                return invalid(id, codes::INVALID_REQUEST, "Invalid Request");
            };
            match id {
                Some(id) if valid(raw) => Parsed::Response(Answer {
                    id,
                    member,
                    value: raw.get().to_owned(),
                }),
                // A response to no request (a null id: the client's own
                // parse error report): nothing to pass on.
                None => Parsed::Accepted,
                Some(id) => invalid(
                    Some(id),
                    codes::PARSE_ERROR,
                    "Parse error: the response holds text that is not JSON or a member given twice",
                ),
            }
        }
        (Some(_), Some(id), Some(method)) => Parsed::Request(Incoming {
            id,
            method: Method::from_name(&method),
            params,
        }),
        (_, id, _) => invalid(id, codes::INVALID_REQUEST, "Invalid Request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(body: &str) -> Option<i64> {
        match parse(body.as_bytes()) {
            Parsed::Invalid { code, .. } => Some(code),
            _ => None,
        }
    }

    fn request(body: &str) -> Incoming {
        match parse(body.as_bytes()) {
            Parsed::Request(r) => r,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn requests_notifications_and_refusals() {
        let r =
            request(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c"}}"#);
        assert_eq!(r.id.as_json(), "7");
        assert_eq!(r.method, Method::ToolsList);
        assert_eq!(r.params.unwrap().cursor().as_deref(), Some("c"));
        assert_eq!(
            request(r#"{"jsonrpc":"2.0","id":"a","method":"vendor/x"}"#).method,
            Method::Unknown("vendor/x".into())
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Parsed::Accepted
        );
        let answer = |body: &str| match parse(body.as_bytes()) {
            Parsed::Response(a) => (a.id.as_json().to_owned(), a.member, a.value),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","id":"x","result":{"a": 1}}"#),
            ("\"x\"".into(), "result", r#"{"a": 1}"#.into())
        );
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","id":3,"result":null}"#),
            ("3".into(), "result", "null".into())
        );
        assert_eq!(
            answer(r#"{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no"}}"#).1,
            "error"
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"?"}}"#),
            Parsed::Accepted
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":"x","result":{},"error":{}}"#),
            Some(codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":"x","result":{"a":1,"a":2}}"#),
            Some(codes::PARSE_ERROR)
        );
        assert_eq!(code("{nope"), Some(codes::PARSE_ERROR));
        assert_eq!(code(""), Some(codes::PARSE_ERROR));
        assert_eq!(code("[]"), Some(codes::INVALID_REQUEST));
        assert_eq!(code("7"), Some(codes::INVALID_REQUEST));
        // Not positional members either.
        assert_eq!(code(r#"["2.0", 1, "ping"]"#), Some(codes::INVALID_REQUEST));
        for bad in [
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            // An id that does not read as JSON is no id: refused, not echoed.
            r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#,
        ] {
            assert_eq!(code(bad), Some(codes::INVALID_REQUEST), "{bad}");
        }
        // Params whose text is not JSON as `Value` reads it, or that name a
        // member twice at any depth: one meaning for every reader, or none.
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        for bad in [
            r#"{"x":"\ud800"}"#,
            r#"{"n":1e400}"#,
            r#"{"arguments":{"to":"alice","to":"mallory"}}"#,
            r#"{"ref":{"type":"ref/resource","uri":"a://1","uri":"b://2"}}"#,
            r#"{"name":"a","name":"b"}"#,
            &deep,
        ] {
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{bad}}}"#);
            assert_eq!(code(&body), Some(codes::PARSE_ERROR), "{bad}");
        }
        // The id is echoed when usable.
        assert_eq!(
            parse(br#"{"jsonrpc":"1.0","id":"a","method":"ping"}"#),
            Parsed::Invalid {
                id: Id::from_raw(&RawValue::from_string("\"a\"".into()).unwrap()),
                code: codes::INVALID_REQUEST,
                message: "Invalid Request: jsonrpc must be \"2.0\""
            }
        );
    }

    #[test]
    fn unread_members_pass_through_as_sent() {
        let body = r#"{"jsonrpc":"2.0","id":1.50,"method":"tools/call","params":{"name":"t","arguments":{"b": 1.0e3, "a":[ "x" ]},"_meta":{"progressToken":3}}}"#;
        let r = request(body);
        assert_eq!(serde_json::to_string(&r.id).unwrap(), "1.50");
        let mut p = r.params.unwrap();
        assert_eq!(p.name().as_deref(), Some("t"));
        assert!(matches!(p.name(), Some(std::borrow::Cow::Borrowed("t"))));
        // A name with escapes is read as the string it stands for.
        let escaped = request(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0062\n"}}"#,
        );
        assert_eq!(escaped.params.unwrap().name().as_deref(), Some("ab\n"));
        let quoted =
            request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\"b"}}"#);
        assert_eq!(quoted.params.unwrap().name().as_deref(), Some("a\"b"));
        assert_eq!(p.meta(), json!({"progressToken": 3}).as_object());
        p.set("name", &"upstream_t").remove("_meta");
        assert_eq!(p.meta(), None);
        let mut q = p.clone();
        q.set("_meta", &json!({"k": 1}));
        assert_eq!(q.meta(), json!({"k": 1}).as_object());
        // `arguments` keeps its exact text: spacing, key order, number form.
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"arguments":{"b": 1.0e3, "a":[ "x" ]},"name":"upstream_t"}"#
        );
        assert_eq!(p.to_value()["arguments"], json!({"a": ["x"], "b": 1000.0}));
        // A member of another type reads as absent.
        let r = request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#);
        assert_eq!(r.params.unwrap().name(), None);
    }
}
