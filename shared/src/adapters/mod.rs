//! Adapters: the ports implemented with AWS services (and in memory, for
//! unit tests of the flows).

pub mod cache;
pub mod discovery;
pub mod dynamodb;
pub mod memory;
pub mod oauth;
pub mod oidc;
pub mod secrets;

/// Builds the AWS SDK configuration once per cold start.
///
/// Honors the standard variables, including `AWS_ENDPOINT_URL` (and the
/// per-service forms) that point the SDK at local endpoints.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
