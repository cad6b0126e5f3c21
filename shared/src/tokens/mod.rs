//! Token refresh with a lease, shared by the proxy (on demand) and the
//! scheduled function.
//!
//! Providers that rotate refresh tokens revoke the whole token family when an
//! old refresh token is presented twice, so at most one instance may refresh
//! a grant at a time:
//!
//! 0. resolve the target and its client secret (before the lease, so that
//!    the leased section is only the token request and one write);
//! 1. take the lease with a conditional write (owner, lease-until); the
//!    write returns the item as stored, which is the fresh re-read;
//! 2. if someone refreshed meanwhile (a newer version than the caller saw,
//!    or a token that is fresh), use their tokens;
//! 3. refresh at the token endpoint the grant came from, which must be the
//!    target's (the client secret goes nowhere else), with a timeout that
//!    ends [`WRITE_BUDGET`] before the lease does;
//! 4. write the new tokens only if the version is unchanged, releasing the
//!    lease in the same write when it is still ours;
//! 5. otherwise release the lease only if it is still ours.
//!
//! Within one instance, callers that need the same grant refreshed wait for
//! one another ([`Flights`]) and share the result, so an instance sends at
//! most one caller to the table's lease at a time and the others do no I/O.
//!
//! A token response lost after the server issued it (the connection dropped,
//! the timeout fired) leaves the grant with the refresh token that was
//! presented. A server that does not rotate refresh tokens accepts it again
//! at the next refresh. One that rotates and detects reuse sees it twice and
//! revokes the grant: the next refresh gets `invalid_grant`, and the user is
//! asked to connect again. Nothing else is lost.
//!
//! A refresh therefore costs two conditional writes: take the lease, then
//! write the tokens and release.
//!
//! `invalid_grant` marks the grant as needing consent (conditional on the
//! version); a transient failure leaves the grant as it was. So does any
//! other refusal (`invalid_client`, `unauthorized_client`, ...): it says the
//! gateway's client is misconfigured, which a new consent cannot mend, and
//! marking every user's grant dead for it would lose them all.

//!
//! The flows reach the table, the target catalog, the secrets, the
//! authorization server and the clock only through the ports in
//! [`Refresher`], so the protocol is unit-tested against the in-memory store
//! ([`crate::adapters::memory`]) with paused time, and integration-tested
//! against DynamoDB and a real authorization server.

mod exchange;
mod flights;
mod lease;
mod scheduled;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use exchange::{ExchangeFailure, DEFAULT_EXCHANGED_LIFETIME};
pub use flights::Flights;
pub use lease::{LeasePolicy, NoGrant, Outcome, RefreshRequest, MACHINE_SUB, WRITE_BUDGET};
pub use scheduled::{ScheduledRun, Summary};

use crate::ports::{Clock, GrantStore, SecretSource, TargetCatalog, TokenIssuer};

/// What the refresh flows need: the grant store and its lease, the targets
/// and their client secrets, the token endpoint, the clock, and this
/// instance's refreshes in flight.
pub struct Refresher {
    /// Users' grants (the lease lives on the grant item).
    pub grants: Arc<dyn GrantStore>,
    /// Registered targets (their token endpoints and client settings).
    pub targets: Arc<dyn TargetCatalog>,
    /// Client secrets.
    pub secrets: Arc<dyn SecretSource>,
    /// The token endpoint client.
    pub issuer: Arc<dyn TokenIssuer>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// How far ahead a scheduled run refreshes: grants whose access token
    /// expires within this window.
    pub window: Duration,
    flights: Flights,
}

impl Refresher {
    /// A refresher over the given ports, with no refresh in flight.
    pub fn new(
        grants: Arc<dyn GrantStore>,
        targets: Arc<dyn TargetCatalog>,
        secrets: Arc<dyn SecretSource>,
        issuer: Arc<dyn TokenIssuer>,
        clock: Arc<dyn Clock>,
        window: Duration,
    ) -> Self {
        Refresher {
            grants,
            targets,
            secrets,
            issuer,
            clock,
            window,
            flights: Flights::default(),
        }
    }
}
