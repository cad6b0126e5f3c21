//! The crate's one error type.
//!
//! Storage refusals that callers act on (a lost lease, a stale version, a
//! consumed authorization) are their own variants so that the flows above can
//! match on them; infrastructure failures keep their source.

use aws_sdk_dynamodb::error::SdkError;

/// Errors raised by the shared crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration variable is missing or malformed.
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),

    /// An item that must not exist yet already exists.
    #[error("{0} already exists")]
    AlreadyExists(&'static str),

    /// The item was not found.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A conditional write found a different version than expected.
    #[error("the grant changed since it was read (stale version)")]
    StaleVersion,

    /// Another owner holds a live refresh lease on the grant.
    #[error("another instance holds the refresh lease")]
    LeaseHeld,

    /// The caller is not (or no longer) the owner of the lease.
    #[error("the refresh lease is not held by this owner")]
    NotLeaseOwner,

    /// A pending authorization is unknown or was already used.
    #[error("the authorization link is unknown or was already used")]
    AuthorizationUsed,

    /// A pending authorization has expired.
    #[error("the authorization link has expired")]
    AuthorizationExpired,

    /// The pending authorization belongs to another browser than the one
    /// presenting it (its browser-binding cookie does not match).
    #[error("the authorization was started in another browser")]
    OtherBrowser,

    /// The `state` presented does not belong to the pending authorization.
    #[error("the authorization state does not match")]
    StateMismatch,

    /// A ciphertext could not be opened: wrong key, wrong binding, or tampered.
    #[error("a stored secret could not be decrypted: {0}")]
    Decrypt(&'static str),

    /// A stored item does not have the expected shape.
    #[error("stored item is malformed: {0}")]
    Malformed(String),

    /// A secret in Secrets Manager is missing or unusable.
    #[error("secret {arn}: {reason}")]
    Secret {
        /// The ARN or name of the secret.
        arn: String,
        /// What is wrong with it (never its value).
        reason: String,
    },

    /// DynamoDB failed for a reason other than a failed condition.
    #[error("dynamodb: {}", chain(.0.as_ref()))]
    DynamoDb(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Secrets Manager failed.
    #[error("secrets manager: {}", chain(.0.as_ref()))]
    SecretsManager(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// True when retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::DynamoDb(_) | Error::SecretsManager(_) | Error::LeaseHeld => true,
            Error::Config(_)
            | Error::AlreadyExists(_)
            | Error::NotFound(_)
            | Error::StaleVersion
            | Error::NotLeaseOwner
            | Error::AuthorizationUsed
            | Error::AuthorizationExpired
            | Error::StateMismatch
            | Error::OtherBrowser
            | Error::Decrypt(_)
            | Error::Malformed(_)
            | Error::Secret { .. } => false,
        }
    }

    /// True when a stored item exists but cannot be used: it does not open
    /// (tampered, moved, or sealed with a key no longer in the key set) or
    /// does not have the expected shape.
    ///
    /// A value sealed with a key this instance does not hold is not: the
    /// instance may not have seen a key added since it warmed up, so that is
    /// a passing failure, never a reason to give a grant up.
    pub fn is_unreadable(&self) -> bool {
        match self {
            Error::Decrypt(why) => *why != crate::crypto::UNKNOWN_KEY,
            Error::Malformed(_) => true,
            _ => false,
        }
    }

    pub(crate) fn dynamo<E, R>(err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Error::DynamoDb(Box::new(err))
    }

    pub(crate) fn secrets<E, R>(err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Error::SecretsManager(Box::new(err))
    }
}

/// Renders an error and its sources on one line (the SDK's top-level
/// messages alone, such as "service error", say little).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
