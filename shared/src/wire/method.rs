//! JSON-RPC method names: the ones the gateway answers, typed, and any
//! other kept by name.

use std::fmt;

macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A JSON-RPC method: the ones the gateway answers, and any other by name.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Method {
            $($(#[$doc])* $variant,)*
            /// A method the gateway does not know (answered "method not found").
            Unknown(String),
        }

        impl Method {
            /// The names of the methods the gateway knows.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The method named `name`.
            pub fn from_name(name: &str) -> Self {
                match name {
                    $($name => Method::$variant,)*
                    other => Method::Unknown(other.to_owned()),
                }
            }

            /// The method's name on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Method::$variant => $name,)*
                    Method::Unknown(name) => name,
                }
            }

            /// The method's name, borrowed for the ones the gateway knows.
            pub fn name(&self) -> std::borrow::Cow<'static, str> {
                match self {
                    $(Method::$variant => std::borrow::Cow::Borrowed($name),)*
                    Method::Unknown(name) => std::borrow::Cow::Owned(name.clone()),
                }
            }
        }
    };
}

methods! {
    /// `initialize` (2025 revisions).
    Initialize => "initialize",
    /// `ping`.
    Ping => "ping",
    /// `server/discover` (2026-07-28).
    ServerDiscover => "server/discover",
    /// `logging/setLevel`.
    LoggingSetLevel => "logging/setLevel",
    /// `tools/list`.
    ToolsList => "tools/list",
    /// `tools/call`.
    ToolsCall => "tools/call",
    /// `prompts/list`.
    PromptsList => "prompts/list",
    /// `prompts/get`.
    PromptsGet => "prompts/get",
    /// `resources/list`.
    ResourcesList => "resources/list",
    /// `resources/templates/list`.
    ResourcesTemplatesList => "resources/templates/list",
    /// `resources/read`.
    ResourcesRead => "resources/read",
    /// `resources/subscribe` (2025 revisions).
    ResourcesSubscribe => "resources/subscribe",
    /// `resources/unsubscribe` (2025 revisions).
    ResourcesUnsubscribe => "resources/unsubscribe",
    /// `completion/complete`.
    CompletionComplete => "completion/complete",
    /// `subscriptions/listen` (2026-07-28).
    SubscriptionsListen => "subscriptions/listen",
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_their_names() {
        for name in [
            "initialize",
            "ping",
            "server/discover",
            "logging/setLevel",
            "tools/list",
            "tools/call",
            "prompts/list",
            "prompts/get",
            "resources/list",
            "resources/templates/list",
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
            "completion/complete",
            "subscriptions/listen",
            "sampling/createMessage",
        ] {
            assert_eq!(Method::from_name(name).as_str(), name);
            let known = !matches!(Method::from_name(name), Method::Unknown(_));
            assert_eq!(Method::NAMES.contains(&name), known, "{name}");
        }
        assert!(matches!(
            Method::from_name("Tools/List"),
            Method::Unknown(_)
        ));
        // The known names are the ones that are not `Unknown`.
        for name in Method::NAMES {
            assert!(!matches!(Method::from_name(name), Method::Unknown(_)));
        }
    }
}
