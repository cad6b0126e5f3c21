//! Domain types: no AWS, no Lambda, no HTTP.

pub mod authorization;
pub mod catalog;
pub mod grant;
pub mod session;
pub mod target;

pub use authorization::{PendingAuthorization, StateParam};
pub use catalog::{Catalog, CatalogTool};
pub use grant::{Grant, GrantKey, GrantStatus, Lease, SealedGrant, TokenSet};
pub use session::UpstreamSession;
pub use target::{
    ApiKeyPlacement, ApiKeySettings, AwsIamSettings, ExchangeSettings, IdentityProviderClient,
    OAuthFlow, OAuthSettings, ReturnTo, Target, TargetAuth, TokenEndpointAuthMethod,
    ACCESS_TOKEN_TYPE, ID_JAG_TYPE, ID_TOKEN_TYPE,
};
