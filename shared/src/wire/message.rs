//! Reading one JSON-RPC message from a client's POST body.
//!
//! The gateway accepts one message per request (no batches). A request
//! (`id` and `method`) is handed on; a notification or a response is
//! acknowledged with 202; anything else gets the JSON-RPC error the spec
//! names. The message's parts are moved out, not copied.

use serde_json::Value;

use super::codes;

/// A request the gateway answers.
#[derive(Debug, PartialEq)]
pub struct Incoming {
    /// The request id (a string or a number).
    pub id: Value,
    /// The method.
    pub method: String,
    /// The params (an object or an array), if any.
    pub params: Option<Value>,
}

/// What a body turned out to be.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A request.
    Request(Incoming),
    /// A notification, or a response to a request of ours: nothing to answer (202).
    Accepted,
    /// Not a message the gateway takes: answer 400 with this error.
    Invalid {
        /// The request's id when it had a usable one, else `null`.
        id: Value,
        /// JSON-RPC error code.
        code: i64,
        /// Error message.
        message: &'static str,
    },
}

/// Reads `body` as one JSON-RPC message.
pub fn parse(body: &[u8]) -> Parsed {
    let invalid =
        |id: Value, code: i64, message: &'static str| Parsed::Invalid { id, code, message };
    let mut message: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return invalid(
                Value::Null,
                codes::PARSE_ERROR,
                "Parse error: the body is not JSON",
            )
        }
    };
    if message.is_array() {
        return invalid(
            Value::Null,
            codes::INVALID_REQUEST,
            "Invalid Request: batches are not supported; send one message per request",
        );
    }
    let Some(obj) = message.as_object_mut() else {
        return invalid(
            Value::Null,
            codes::INVALID_REQUEST,
            "Invalid Request: expected a JSON-RPC object",
        );
    };
    let id = obj.remove("id");
    let id_ok = id.as_ref().is_some_and(|i| i.is_string() || i.is_number());
    let echo_id = match &id {
        Some(i) if id_ok => i.clone(),
        _ => Value::Null,
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(
            echo_id,
            codes::INVALID_REQUEST,
            "Invalid Request: jsonrpc must be \"2.0\"",
        );
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => Some(m),
        Some(_) => {
            return invalid(
                echo_id,
                codes::INVALID_REQUEST,
                "Invalid Request: method must be a string",
            )
        }
        None => None,
    };
    let params = obj.remove("params");
    if params
        .as_ref()
        .is_some_and(|p| !p.is_object() && !p.is_array())
    {
        return invalid(
            echo_id,
            codes::INVALID_REQUEST,
            "Invalid Request: params must be an object",
        );
    }
    match (id, method) {
        (None, Some(_)) => Parsed::Accepted,
        (Some(_), None) if obj.contains_key("result") || obj.contains_key("error") => {
            Parsed::Accepted
        }
        (Some(_), Some(method)) if id_ok => Parsed::Request(Incoming {
            id: echo_id,
            method,
            params,
        }),
        _ => invalid(echo_id, codes::INVALID_REQUEST, "Invalid Request"),
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

    #[test]
    fn requests_notifications_and_refusals() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c"}}"#),
            Parsed::Request(Incoming {
                id: json!(7),
                method: "tools/list".into(),
                params: Some(json!({"cursor": "c"})),
            })
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Parsed::Accepted
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":"x","result":{}}"#),
            Parsed::Accepted
        );
        assert_eq!(code("{nope"), Some(codes::PARSE_ERROR));
        assert_eq!(code("[]"), Some(codes::INVALID_REQUEST));
        assert_eq!(code("7"), Some(codes::INVALID_REQUEST));
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Some(codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            Some(codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Some(codes::INVALID_REQUEST)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#),
            Some(codes::INVALID_REQUEST)
        );
        // The id is echoed when usable.
        assert_eq!(
            parse(br#"{"jsonrpc":"1.0","id":"a","method":"ping"}"#),
            Parsed::Invalid {
                id: json!("a"),
                code: codes::INVALID_REQUEST,
                message: "Invalid Request: jsonrpc must be \"2.0\""
            }
        );
    }
}
