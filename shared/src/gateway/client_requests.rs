//! A 2025 upstream's requests during a call (sampling, elicitation, roots),
//! put to a 2025 client on the call's own stream, and the client's answers
//! passed back.
//!
//! The client answers with a POST of its own, which may reach another
//! instance than the one holding the call (on Lambda it always does: an
//! instance serves one request at a time). So the id the client sees is the
//! way back, sealed: user, target, the upstream's session, its version and
//! the upstream's own request id. Any instance opens it, checks that the
//! answering user is the one asked, and posts the answer to the upstream's
//! session with that user's credentials for the target; the upstream then
//! finishes the call on the stream the first instance holds.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Blocked, Gateway};
use crate::crypto::{OpenError, Sealable, Sealed};
use crate::ports::{Clock, KeyProvider};
use crate::upstream::{AskedOn, ClientRequests};
use crate::wire::envelope::Answer;

/// What the id of a request put to the client holds: where its answer goes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Asked {
    /// The user asked.
    s: String,
    /// The target that asked.
    t: String,
    /// The upstream's session.
    e: String,
    /// The session's protocol version.
    v: String,
    /// The upstream's own id for the request.
    i: Value,
    /// Expiry (Unix seconds).
    x: i64,
}

impl Sealable for Asked {
    fn expires_at(&self) -> i64 {
        self.x
    }
}

const ASKED: Sealed<Asked> = Sealed::new("upstream-request");

/// Puts the upstream requests of one caller's call to its client, for the
/// kinds of request the client declared.
pub(super) struct ToClient {
    pub(super) keys: Arc<dyn KeyProvider>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) sub: String,
    pub(super) declared: Map<String, Value>,
    /// How long the client's answer is taken (the longest a call lasts).
    pub(super) ttl: i64,
}

impl std::fmt::Debug for ToClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToClient")
            .field("sub", &self.sub)
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

/// The longest upstream request id (as JSON) carried in the gateway's id.
const MAX_UPSTREAM_ID_BYTES: usize = 256;

#[async_trait]
impl ClientRequests for ToClient {
    async fn outgoing(&self, on: AskedOn<'_>, request: &Value) -> Option<Value> {
        let method = request.get("method")?.as_str()?;
        if !can_answer(&self.declared, method, request.get("params")) {
            return None;
        }
        // The upstream's id travels inside the gateway's: a long one is not
        // carried (the upstream gets "method not found" instead).
        let upstream_id = request.get("id")?;
        if upstream_id.to_string().len() > MAX_UPSTREAM_ID_BYTES {
            return None;
        }
        let asked = Asked {
            s: self.sub.clone(),
            t: on.target.to_owned(),
            e: on.session.to_owned(),
            v: on.version.to_owned(),
            i: upstream_id.clone(),
            x: self.clock.now() + self.ttl,
        };
        let id = match ASKED.seal(&*self.keys, &asked).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "could not seal an upstream's request for the client");
                return None;
            }
        };
        let mut out = request.clone();
        out["id"] = Value::String(id);
        // Whose question it is: the gateway asks for consents the same way,
        // and a service must not pass its questions off as the gateway's.
        if method == "elicitation/create" {
            if let Some(params) = out.get_mut("params").and_then(Value::as_object_mut) {
                let message = params
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let message = format!("{} asks: {message}", on.target);
                params.insert("message".into(), Value::String(message));
            }
        }
        Some(out)
    }
}

/// What of a 2025 client's declared capabilities the gateway keeps (in its
/// sealed session): which of sampling, roots and elicitation (form, URL)
/// requests it takes; none when it takes none.
pub fn answerable(declared: Option<&Value>) -> Option<Map<String, Value>> {
    let declared = declared?.as_object()?;
    let mut kept = Map::new();
    for kind in ["sampling", "roots"] {
        if declared.contains_key(kind) {
            kept.insert(kind.into(), Value::Object(Map::new()));
        }
    }
    if let Some(e) = declared.get("elicitation").and_then(Value::as_object) {
        let mut modes = Map::new();
        if e.is_empty() || e.contains_key("form") {
            modes.insert("form".into(), Value::Object(Map::new()));
        }
        if e.contains_key("url") {
            modes.insert("url".into(), Value::Object(Map::new()));
        }
        kept.insert("elicitation".into(), Value::Object(modes));
    }
    (!kept.is_empty()).then_some(kept)
}

/// True when a client that declared `declared` takes `method` (with these
/// params): sampling and roots by their capability; elicitation by its
/// mode (URL mode needs `elicitation.url`; form mode an empty
/// `elicitation` or one naming `form`).
fn can_answer(declared: &Map<String, Value>, method: &str, params: Option<&Value>) -> bool {
    match method {
        "sampling/createMessage" => declared.contains_key("sampling"),
        "roots/list" => declared.contains_key("roots"),
        "elicitation/create" => {
            let Some(e) = declared.get("elicitation").and_then(Value::as_object) else {
                return false;
            };
            let url_mode =
                params.and_then(|p| p.get("mode")).and_then(Value::as_str) == Some("url");
            if url_mode {
                e.contains_key("url")
            } else {
                e.is_empty() || e.contains_key("form")
            }
        }
        _ => false,
    }
}

/// Why a client's answer was not passed on.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerRefused {
    /// Not the answer to a request this gateway put to this user (another
    /// user's, tampered, expired, or never asked).
    NotAsked,
    /// The key set could not be read: retry.
    Keys,
    /// The target is gone, or its credentials cannot be used now.
    Unavailable(String),
    /// The upstream did not take the answer.
    Upstream(String),
}

impl Gateway<'_> {
    /// Passes the caller's `answer` to the upstream request its id names,
    /// on the upstream's session, with the caller's credentials for the
    /// target.
    pub async fn pass_answer(&self, answer: &Answer) -> Result<(), AnswerRefused> {
        let Ok(sealed) = serde_json::from_str::<String>(answer.id.as_json()) else {
            return Err(AnswerRefused::NotAsked);
        };
        let asked = match ASKED
            .open(&*self.state.keys, &sealed, self.state.clock.now())
            .await
        {
            Ok(a) if a.s == self.caller.sub() => a,
            Err(OpenError::Keys(_)) => return Err(AnswerRefused::Keys),
            _ => return Err(AnswerRefused::NotAsked),
        };
        let target = match self.state.targets.get(&asked.t).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(AnswerRefused::Unavailable("the service is gone".into())),
            Err(_) => {
                return Err(AnswerRefused::Unavailable(
                    "the gateway could not read its targets".into(),
                ))
            }
        };
        let unavailable = |b: Blocked| AnswerRefused::Unavailable(b.reason());
        let credentials = self.credentials(&target).await.map_err(unavailable)?;
        let call = self.bare_call(&target, &credentials);
        let id = serde_json::to_string(&asked.i).unwrap_or_else(|_| "null".into());
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"{}":{}}}"#,
            answer.member, answer.value
        );
        let on = AskedOn {
            target: &asked.t,
            session: &asked.e,
            version: &asked.v,
        };
        self.state
            .upstream
            .answer(&call, on, body)
            .await
            .map_err(|e| AnswerRefused::Upstream(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn only_the_kinds_of_request_are_kept_of_what_a_client_declares() {
        let kept = answerable(Some(&json!({
            "sampling": {"tools": {"huge": "x".repeat(1000)}},
            "elicitation": {},
            "experimental": {"a": 1},
        })))
        .unwrap();
        assert_eq!(
            Value::Object(kept.clone()),
            json!({"sampling": {}, "elicitation": {"form": {}}})
        );
        assert!(can_answer(&kept, "elicitation/create", None));
        assert_eq!(
            answerable(Some(
                &json!({"elicitation": {"url": {}}, "roots": {"listChanged": true}})
            )),
            declared(json!({"elicitation": {"url": {}}, "roots": {}})).into()
        );
        assert_eq!(answerable(Some(&json!({"experimental": {}}))), None);
        assert_eq!(answerable(None), None);
    }

    #[tokio::test]
    async fn a_request_goes_out_under_a_sealed_id_and_an_elicitation_names_its_service() {
        let keys: Arc<dyn KeyProvider> = Arc::new(
            crate::adapters::memory::MemoryKeys::new(
                r#"{"current":"k1","k1":"0123456789abcdef0123456789abcdef"}"#,
            )
            .unwrap(),
        );
        let to = ToClient {
            keys: keys.clone(),
            clock: Arc::new(crate::ports::SystemClock),
            sub: "alice".into(),
            declared: answerable(Some(&json!({"elicitation": {}, "sampling": {}}))).unwrap(),
            ttl: 60,
        };
        let on = AskedOn {
            target: "github",
            session: "s-1",
            version: "2025-11-25",
        };
        let ask = json!({"jsonrpc": "2.0", "id": 7, "method": "elicitation/create",
            "params": {"message": "Open https://github.com/login", "requestedSchema": {}}});
        let out = to.outgoing(on, &ask).await.unwrap();
        assert_eq!(
            out["params"]["message"],
            "github asks: Open https://github.com/login"
        );
        let id = out["id"].as_str().unwrap();
        let asked = ASKED
            .open(&*keys, id, crate::ports::SystemClock.now())
            .await
            .ok()
            .unwrap();
        assert_eq!(
            (
                asked.s.as_str(),
                asked.t.as_str(),
                asked.e.as_str(),
                &asked.i
            ),
            ("alice", "github", "s-1", &json!(7))
        );
        let long = json!({"id": "x".repeat(300), "method": "sampling/createMessage",
            "params": {"messages": []}});
        assert!(
            to.outgoing(on, &long).await.is_none(),
            "an id too long to carry is not put to the client"
        );
        let sampling =
            json!({"id": "q", "method": "sampling/createMessage", "params": {"messages": []}});
        let out = to.outgoing(on, &sampling).await.unwrap();
        assert_eq!(
            out["params"], sampling["params"],
            "only elicitations are named"
        );
        let roots = json!({"id": "r", "method": "roots/list"});
        assert!(
            to.outgoing(on, &roots).await.is_none(),
            "roots not declared"
        );
    }

    #[test]
    fn requests_go_only_to_clients_that_declared_them() {
        let all = declared(json!({"sampling": {}, "roots": {}, "elicitation": {}}));
        assert!(can_answer(&all, "sampling/createMessage", None));
        assert!(can_answer(&all, "roots/list", None));
        assert!(can_answer(
            &all,
            "elicitation/create",
            Some(&json!({"message": "?"}))
        ));
        assert!(
            !can_answer(&all, "elicitation/create", Some(&json!({"mode": "url"}))),
            "an empty elicitation capability is form mode only"
        );
        assert!(
            !can_answer(&all, "tasks/get", None),
            "only these three kinds"
        );
        let url_only = declared(json!({"elicitation": {"url": {}}}));
        assert!(can_answer(
            &url_only,
            "elicitation/create",
            Some(&json!({"mode": "url"}))
        ));
        assert!(!can_answer(
            &url_only,
            "elicitation/create",
            Some(&json!({"mode": "form"}))
        ));
        assert!(!can_answer(&url_only, "sampling/createMessage", None));
        assert!(!can_answer(&Map::new(), "roots/list", None));
    }
}
