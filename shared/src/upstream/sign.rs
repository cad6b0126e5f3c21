//! AWS Signature Version 4: for targets behind IAM (`TargetAuth::AwsIam`), and
//! the function's own signed POSTs (an interceptor's Lambda invocation, the
//! audit trail's CloudWatch Logs calls).

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

use reqwest::header::HeaderValue;

use super::post::transport;
use super::{UpstreamClient, UpstreamError};

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

impl UpstreamClient {
    /// POSTs `body` to `url` signed with SigV4 as `service` in `region`
    /// with the function's role (an interceptor's Lambda invocation, the
    /// audit trail's CloudWatch Logs calls); the signature's headers are
    /// marked sensitive.
    pub(crate) async fn signed_post(
        &self,
        service: &str,
        region: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: String,
        timeout: Option<std::time::Duration>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let iam = crate::domain::AwsIamSettings {
            service: service.to_owned(),
            region: region.to_owned(),
        };
        let signed = sigv4(
            "POST",
            self.aws_credentials.as_ref(),
            &iam,
            url,
            headers,
            body.as_bytes(),
        )
        .await?;
        let mut req = self.http.post(url.clone());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        for (k, v) in signed {
            let mut value = HeaderValue::from_str(&v).map_err(|_| {
                UpstreamError::Protocol("a SigV4 header is not a header value".into())
            })?;
            value.set_sensitive(true);
            req = req.header(k, value);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        req.body(body).send().await.map_err(transport)
    }
}
