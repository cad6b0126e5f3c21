//! AWS Signature Version 4 for targets behind IAM (`TargetAuth::AwsIam`).

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

use super::UpstreamError;

/// The SigV4 headers (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` for temporary credentials) for a `verb` request
/// with `body` to `url` with `headers`, signed with the function's role.
pub(super) async fn sigv4(
    verb: &str,
    credentials: Option<&SharedCredentialsProvider>,
    iam: &crate::domain::AwsIamSettings,
    url: &url::Url,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>, UpstreamError> {
    let provider = credentials.ok_or_else(|| {
        UpstreamError::Protocol("no AWS credentials to sign the request with".into())
    })?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| UpstreamError::Transport(format!("the function's AWS credentials: {e}")))?;
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&iam.region)
        .name(&iam.service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| UpstreamError::Protocol(format!("SigV4 parameters: {e}")))?
        .into();
    let signable = SignableRequest::new(
        verb,
        url.as_str(),
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| UpstreamError::Protocol(format!("SigV4: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| UpstreamError::Protocol(format!("SigV4: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}
