//! Domain types: no AWS, no Lambda, no HTTP.

pub mod authorization;
pub mod grant;
pub mod session;
pub mod target;

pub use authorization::{PendingAuthorization, StateParam};
pub use grant::{Grant, GrantKey, GrantStatus, Lease, SealedGrant, TokenSet};
pub use session::UpstreamSession;
pub use target::{
    ApiKeyPlacement, ApiKeySettings, AwsIamSettings, OAuthFlow, OAuthSettings, ReturnTo, Target,
    TargetAuth, TokenEndpointAuthMethod,
};
