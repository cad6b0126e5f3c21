//! An upstream's answer to a call, kept as the text it came in until
//! something needs to look inside it.
//!
//! Most results go to the client as the upstream wrote them: building a
//! JSON tree of a result only to write it out again costs an allocation
//! per key, string and array, for nothing. An answer read from a JSON body
//! stays text; [`Answer::as_is`] says whether its result can be passed on
//! untouched (an object without the fields the gateway removes or adds),
//! and everything else is parsed into a tree ([`Answer::into_value`]) and
//! handled as before.
//!
//! A result passed on is read twice: once with the message, to find it
//! ([`Answer::from_body`]), and once to check it and read its top members
//! in the same pass ([`Answer::as_is`]).

use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::UpstreamError;

/// An upstream's JSON-RPC response message (with `result` or `error`).
#[derive(Debug, Clone)]
pub enum Answer {
    /// As read from a JSON body: JSON text whose top level has a `result`
    /// or an `error`.
    Text(Text),
    /// A tree: read from an event stream, or made by the gateway.
    Tree(Value),
}

/// The top-level members the gateway reads of a response message.
#[derive(Deserialize)]
struct Parts<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// A JSON body holding a response message, as it came.
#[derive(Debug, Clone)]
pub struct Text {
    /// The body: one JSON object, UTF-8.
    body: Bytes,
    /// Where in `body` the result is, when the message has a result and
    /// no error.
    result: Option<Range<usize>>,
}

/// Members of a result that the gateway changes (see
/// `gateway::pass_through`): a result with any of them, `null` included,
/// does not pass as it is.
const CHANGED_MEMBERS: [&str; 4] = ["resultType", "ttlMs", "cacheScope", "_meta"];

/// A result passed on as the upstream wrote it: a JSON object that has
/// none of `resultType`, `ttlMs`, `cacheScope` and `_meta`, and that every
/// reader reads alike (see `wire::strict::valid_object`).
#[derive(Debug, Clone)]
pub struct AsIs {
    text: Box<str>,
    /// Whether the result says `"isError": true` (a tool's failure).
    pub is_error: bool,
}

impl PartialEq for AsIs {
    fn eq(&self, other: &AsIs) -> bool {
        self.get() == other.get()
    }
}

impl AsIs {
    /// The result's JSON text (an object).
    pub fn get(&self) -> &str {
        &self.text
    }
}

impl Answer {
    /// The answer in a JSON body, when it is one: JSON whose top level is
    /// an object with a `result` or an `error`, each appearing once. `None`
    /// for anything else, which the caller parses as a tree to judge (and
    /// to name what is wrong).
    pub(crate) fn from_body(body: &Bytes) -> Option<Answer> {
        let whole = std::str::from_utf8(body).ok()?;
        let text = whole.trim_matches([' ', '\t', '\r', '\n']);
        if !text.starts_with('{') {
            return None;
        }
        // One pass: `Parts` reads all of it (it is JSON, and one value)
        // and finds the result, borrowed from the text.
        let parts: Parts<'_> = serde_json::from_str(text).ok()?;
        if parts.result.is_none() && parts.error.is_none() {
            return None;
        }
        let result = parts
            .result
            .filter(|_| parts.error.is_none())
            .map(|raw| offsets_in(whole, raw.get()));
        Some(Answer::Text(Text {
            body: body.clone(),
            result,
        }))
    }

    /// The result to pass on as it is, when the answer has one that needs
    /// no change; `None` for an error, a result the gateway changes (see
    /// `gateway::pass_through`), an answer already parsed, or a result
    /// that would not read as one thing to every reader (a number out of
    /// range, a lone surrogate, a member given twice, nesting deeper than
    /// a reader takes in the message the client gets): that is read as a
    /// tree, which refuses or normalizes it, so that what a RESPONSE
    /// interceptor checks and what the client reads are the same.
    pub fn as_is(&self) -> Option<AsIs> {
        let Answer::Text(Text {
            body,
            result: Some(range),
        }) = self
        else {
            return None;
        };
        let result = std::str::from_utf8(body.get(range.clone())?).ok()?;
        if !result.starts_with('{') {
            return None;
        }
        let (mut changed, mut is_error) = (false, false);
        // Checked as one level down: the message the client gets holds
        // the result there, so a result passed on is never too deep for
        // its reader.
        let valid = crate::wire::strict::valid_object(result, 1, |name, is_true| {
            if CHANGED_MEMBERS.contains(&name) {
                changed = true;
            } else if name == "isError" {
                is_error = is_true;
            }
        });
        (valid && !changed).then(|| AsIs {
            text: result.into(),
            is_error,
        })
    }

    /// The answer as a tree.
    pub fn into_value(self) -> Result<Value, UpstreamError> {
        match self {
            Answer::Tree(v) => Ok(v),
            Answer::Text(text) => serde_json::from_slice(&text.body)
                .map_err(|e| UpstreamError::Protocol(format!("not JSON: {e}"))),
        }
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn offsets_in(whole: &str, part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

impl From<Value> for Answer {
    fn from(v: Value) -> Answer {
        Answer::Tree(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Answer {
        Answer::from_body(&Bytes::copy_from_slice(s.as_bytes())).expect("an answer")
    }

    #[test]
    fn a_plain_result_passes_as_written() {
        let a = text(
            r#" {"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}],"b":1.50}} "#,
        );
        let as_is = a.as_is().expect("passes as is");
        // As written: the number keeps its form, the order its keys.
        assert_eq!(
            as_is.get(),
            r#"{"content":[{"type":"text","text":"ok"}],"b":1.50}"#
        );
        assert!(!as_is.is_error);
        assert!(
            text(r#"{"id":1,"result":{"isError":true,"content":[]}}"#)
                .as_is()
                .unwrap()
                .is_error
        );
        assert!(
            !text(r#"{"id":1,"result":{"isError":"true","content":[]}}"#)
                .as_is()
                .unwrap()
                .is_error
        );
    }

    #[test]
    fn results_the_gateway_changes_are_parsed() {
        for body in [
            r#"{"id":1,"result":{"resultType":"complete","content":[]}}"#,
            r#"{"id":1,"result":{"content":[],"ttlMs":5}}"#,
            r#"{"id":1,"result":{"cacheScope":"public"}}"#,
            r#"{"id":1,"result":{"_meta":{}}}"#,
            r#"{"id":1,"result":{"_meta":null}}"#,
            r#"{"id":1,"result":[1,2]}"#,
            r#"{"id":1,"result":"text"}"#,
            r#"{"id":1,"result":{},"error":{"code":1}}"#,
            r#"{"id":1,"error":{"code":-32601,"message":"no"}}"#,
            r#"{"id":1,"result":{"resultType":null}}"#,
            // Read alike by every reader, or not passed as written.
            r#"{"id":1,"result":{"a":1,"a":2}}"#,
            r#"{"id":1,"result":{"content":[{"type":"text","text":"x","text":"y"}]}}"#,
        ] {
            let a = text(body);
            assert!(a.as_is().is_none(), "{body}");
            let v = a.into_value().unwrap();
            assert_eq!(v, serde_json::from_str::<Value>(body).unwrap(), "{body}");
        }
        assert!(Answer::from(json!({"result": {}})).as_is().is_none());
    }

    #[test]
    fn results_not_every_reader_reads_alike_are_not_passed_as_written() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for result in [
            r#"{"n":1e400}"#.to_owned(),
            r#"{"s":"\ud800"}"#.to_owned(),
            format!(r#"{{"deep":{deep}}}"#),
        ] {
            let a = text(&format!(r#"{{"id":1,"result":{result}}}"#));
            assert!(a.as_is().is_none(), "{result}");
            assert!(a.into_value().is_err(), "no tree either: {result}");
        }
    }

    #[test]
    fn a_result_passed_as_written_is_never_too_deep_for_its_reader() {
        // Around serde_json's nesting limit: whatever passes as written
        // reads in the message the client gets; what does not is read as
        // a tree, which refuses what is too deep.
        let mut passed = 0;
        for depth in 120..132 {
            let result = format!(r#"{{"a":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let a = text(&format!(r#"{{"id":1,"result":{result}}}"#));
            match a.as_is() {
                Some(as_is) => {
                    passed += 1;
                    let sent =
                        format!(r#"{{"jsonrpc":"2.0","id":"r-1","result":{}}}"#, as_is.get());
                    assert!(
                        serde_json::from_str::<Value>(&sent).is_ok(),
                        "depth {depth}"
                    );
                }
                None => assert!(a.into_value().is_err(), "depth {depth}"),
            }
        }
        assert!(
            passed > 0 && passed < 12,
            "the limit lies in the range: {passed}"
        );
    }

    #[test]
    fn bodies_that_are_not_answers_are_left_to_the_tree() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"id":1}"#,
            r#"{"id":1,"result":{}} trailing"#,
            r#"{"id":1,"result":{},"result":{}}"#,
            "{\"result\":\"\u{0}\"",
            // Only JSON's own white space around it.
            "\u{a0}{\"result\":{}}",
        ] {
            assert!(
                Answer::from_body(&Bytes::copy_from_slice(body.as_bytes())).is_none(),
                "{body:?}"
            );
        }
        assert!(Answer::from_body(&Bytes::from_static(b"{\"result\":{}}\xff")).is_none());
    }
}
