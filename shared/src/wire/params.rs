//! 2026-07-28 `Mcp-Param-*` headers: tool arguments a tool's input schema
//! marks with `x-mcp-header` travel as headers too, so that load balancers
//! and gateways can route on them without reading the body. The gateway
//! checks the client's headers against the arguments (a mismatch is
//! refused with HTTP 400 and `-32020`, as the spec asks of servers) and
//! writes them again for the upstream, whatever the client sent.

use serde_json::Value;

use super::{decode_header_value, header_value};

/// The annotation that makes a property a header.
pub const ANNOTATION: &str = "x-mcp-header";
/// The header name's prefix.
pub const PREFIX: &str = "mcp-param-";

/// The header parameters an input schema declares: each header's token
/// (as written in the schema) and the path of properties to its value,
/// following `properties` from the root only (positions reachable by
/// no other keyword).
pub fn declared(schema: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, sub) in props {
            path.push(name.clone());
            if let Some(token) = sub.get(ANNOTATION).and_then(Value::as_str) {
                if is_token(token) {
                    out.push((token.to_owned(), path.clone()));
                }
            }
            if path.len() < 8 {
                walk(sub, path, out);
            }
            path.pop();
        }
    }
    let mut out = vec![];
    walk(schema, &mut vec![], &mut out);
    out
}

/// An RFC 9110 token (the characters a header name may have).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The argument at `path`, as a header's text: strings as they are,
/// integers and booleans as JSON writes them; none for other values.
fn text_at(arguments: Option<&Value>, path: &[String]) -> Option<Option<String>> {
    let mut v = arguments?;
    for p in path {
        v = v.get(p)?;
    }
    Some(match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Null => return None,
        _ => None,
    })
}

/// Why the client's headers do not match its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// Checks the client's `Mcp-Param-*` headers (`sent`: lowercase names
/// without the prefix, and values) against the arguments, for a tool that
/// declares the headers `declared` (possibly none): each declared header
/// matches its argument, and no other is sent.
pub fn check(
    declared: &[(String, Vec<String>)],
    arguments: Option<&Value>,
    sent: &[(String, String)],
) -> Result<(), Mismatch> {
    if let Some((extra, _)) = sent
        .iter()
        .find(|(k, _)| !declared.iter().any(|(t, _)| t.eq_ignore_ascii_case(k)))
    {
        return Err(Mismatch(format!(
            "the Mcp-Param-{} header names no argument of this tool",
            crate::telemetry::clean(extra, 64)
        )));
    }
    for (token, path) in declared {
        let header = sent
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(token))
            .map(|(_, v)| v.as_str());
        let name = format!("Mcp-Param-{token}");
        match (text_at(arguments, path), header) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(Mismatch(format!(
                    "the {name} header is missing but the argument it carries is present"
                )))
            }
            (None, Some(_)) => {
                return Err(Mismatch(format!(
                    "the {name} header is present but the argument it carries is not"
                )))
            }
            (Some(None), Some(_)) => {
                return Err(Mismatch(format!(
                    "the argument the {name} header carries is not a string, integer or boolean"
                )))
            }
            (Some(Some(text)), Some(h)) => match decode_header_value(h) {
                Some(decoded) if decoded == text => {}
                Some(_) => {
                    return Err(Mismatch(format!(
                        "the {name} header does not match its argument"
                    )))
                }
                None => {
                    return Err(Mismatch(format!(
                        "the {name} header's base64 value is invalid"
                    )))
                }
            },
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers for an upstream: each declared argument that is
/// present, encoded as [`header_value`] does.
pub fn headers(
    declared: &[(String, Vec<String>)],
    arguments: Option<&Value>,
) -> Vec<(String, String)> {
    declared
        .iter()
        .filter_map(|(token, path)| {
            let text = text_at(arguments, path)??;
            Some((
                format!("{PREFIX}{}", token.to_ascii_lowercase()),
                header_value(&text),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "integer", "x-mcp-header": "Count"},
            "plain": {"type": "string"},
            "nested": {"type": "object", "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}}},
            "bad": {"type": "string", "x-mcp-header": "not a token"},
        }})
    }

    #[test]
    fn declared_headers_follow_properties_only() {
        let mut d = declared(&schema());
        d.sort();
        assert_eq!(
            d,
            vec![
                ("Count".to_owned(), vec!["count".to_owned()]),
                (
                    "Flag".to_owned(),
                    vec!["nested".to_owned(), "flag".to_owned()]
                ),
                ("Region".to_owned(), vec!["region".to_owned()]),
            ]
        );
        assert!(
            declared(&json!({"anyOf": [{"properties": {"x": {"x-mcp-header": "X"}}}]})).is_empty()
        );
    }

    #[test]
    fn headers_must_match_the_arguments() {
        let d = declared(&schema());
        let args = json!({"region": "Hello", "count": 3, "nested": {"flag": true}});
        let sent = |r: &str| {
            vec![
                ("region".to_owned(), r.to_owned()),
                ("count".to_owned(), "3".to_owned()),
                ("flag".to_owned(), "true".to_owned()),
            ]
        };
        assert_eq!(check(&d, Some(&args), &sent("Hello")), Ok(()));
        assert_eq!(check(&d, Some(&args), &sent("=?base64?SGVsbG8=?=")), Ok(()));
        for wrong in ["Goodbye", "=?base64?SGVsbG8?=", "=?base64?SGVs!!!bG8=?="] {
            assert!(check(&d, Some(&args), &sent(wrong)).is_err(), "{wrong}");
        }
        // Missing, or present without its argument.
        assert!(check(&d, Some(&args), &sent("Hello")[1..]).is_err());
        assert!(check(
            &d,
            Some(&json!({"count": 3, "nested": {"flag": true}})),
            &sent("Hello")
        )
        .is_err());
        // A header the tool does not declare.
        let mut extra = sent("Hello");
        extra.push(("other".into(), "x".into()));
        assert!(check(&d, Some(&args), &extra).is_err());
        assert!(check(&[], None, &[("region".into(), "x".into())]).is_err());
        assert_eq!(check(&[], None, &[]), Ok(()));
        // A literal value that looks encoded is compared as sent, decoded.
        let odd = json!({"region": "SGVsbG8="});
        assert_eq!(
            check(&d, Some(&odd), &[("region".into(), "SGVsbG8=".into())]),
            Ok(())
        );
    }

    #[test]
    fn upstream_headers_are_written_from_the_arguments() {
        let d = declared(&schema());
        let mut h = headers(&d, Some(&json!({"region": "Zürich", "count": 3})));
        h.sort();
        assert_eq!(
            h,
            vec![
                ("mcp-param-count".to_owned(), "3".to_owned()),
                ("mcp-param-region".to_owned(), header_value("Zürich")),
            ]
        );
        assert!(h[1].1.starts_with("=?base64?"));
    }
}
