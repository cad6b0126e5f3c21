//! Interceptors: the operator's own code before and after each MCP request,
//! with Amazon Bedrock AgentCore Gateway's payload contract, so that
//! interceptors written for AgentCore run unchanged.
//!
//! - A REQUEST interceptor receives
//!   `{"interceptorInputVersion": "1.0", "mcp": {"rawGatewayRequest": {"body": "<raw>"},
//!   "gatewayRequest": {"path": "/mcp", "httpMethod": "POST", "headers": {...}, "body": {...}}}}`
//!   (headers only with `INTERCEPTOR_PASS_HEADERS=true`) and answers
//!   `{"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayRequest": {"body": {...}}}}`
//!   to go on with that (possibly changed) request, or with
//!   `"transformedGatewayResponse": {"statusCode": 403, "body": {...}}` to
//!   answer at once (a denial).
//! - A RESPONSE interceptor receives the same with `gatewayResponse`
//!   (`statusCode`, `body`) added and answers `transformedGatewayResponse`.
//!
//! Each is an AWS Lambda function, by ARN (invoked with the Lambda Invoke
//! API, signed with SigV4 by the function's role; the endpoint follows
//! `AWS_ENDPOINT_URL_LAMBDA` / `AWS_ENDPOINT_URL`), or an http(s) URL
//! (local development) that takes the payload as a POST. They fail closed:
//! a timeout (`INTERCEPTOR_TIMEOUT_MS`), an error or an answer that is not
//! the contract's refuses the request with a JSON-RPC error.

use std::time::Duration;

use serde_json::{json, Value};

use crate::upstream::UpstreamError;

/// Where an interceptor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An AWS Lambda function: its ARN and region.
    Lambda {
        /// The function's ARN (a qualifier may follow).
        arn: String,
        /// Its region (from the ARN).
        region: String,
    },
    /// A URL the payload is POSTed to.
    Http(url::Url),
}

impl Endpoint {
    /// Reads a Lambda function ARN or an http(s) URL.
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("arn:") {
            // arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]
            let parts: Vec<&str> = rest.split(':').collect();
            let ok = parts.len() >= 6
                && parts[1] == "lambda"
                && !parts[2].is_empty()
                && parts[4] == "function"
                && !parts[5].is_empty()
                && parts.len() <= 7;
            if !ok {
                return Err(format!("{value:?} is not a Lambda function ARN"));
            }
            return Ok(Endpoint::Lambda {
                arn: value.to_owned(),
                region: parts[2].to_owned(),
            });
        }
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(Endpoint::Http(u)),
            _ => Err(format!(
                "{value:?} is neither a Lambda function ARN nor an http(s) URL"
            )),
        }
    }
}

/// One interceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interceptor {
    /// Where it runs.
    pub endpoint: Endpoint,
}

/// The interceptors of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterceptorConfig {
    /// Runs before each request is handled (`REQUEST_INTERCEPTOR`).
    pub request: Option<Interceptor>,
    /// Runs on each response (`RESPONSE_INTERCEPTOR`).
    pub response: Option<Interceptor>,
    /// Whether the request's headers go to the interceptors
    /// (`INTERCEPTOR_PASS_HEADERS`; they may carry the caller's token).
    pub pass_headers: bool,
    /// How long an interceptor may take (`INTERCEPTOR_TIMEOUT_MS`, default 3,000).
    pub timeout: Duration,
    /// The Lambda endpoint (`AWS_ENDPOINT_URL_LAMBDA`, else
    /// `AWS_ENDPOINT_URL`, else the region's).
    pub lambda_endpoint: Option<String>,
}

impl InterceptorConfig {
    /// True when neither interceptor is configured.
    pub fn is_empty(&self) -> bool {
        self.request.is_none() && self.response.is_none()
    }
}

/// Why an interceptor gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterceptorError {
    /// It did not answer in time.
    #[error("the interceptor did not answer within its timeout")]
    Timeout,
    /// It could not be called, or failed.
    #[error("the interceptor failed: {0}")]
    Failed(String),
    /// Its answer is not the contract's.
    #[error("the interceptor's answer is malformed: {0}")]
    Malformed(String),
}

/// What a REQUEST interceptor decided.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    /// Go on with this request body.
    Continue(Value),
    /// Answer at once with this status and body.
    Respond {
        /// HTTP status.
        status: u16,
        /// The JSON body.
        body: Value,
    },
}

/// The `gatewayRequest` of a payload.
pub fn gateway_request(headers: Option<Value>, body: &Value) -> Value {
    let mut request = json!({"path": "/mcp", "httpMethod": "POST", "body": body});
    if let Some(h) = headers {
        request["headers"] = h;
    }
    request
}

/// A REQUEST interceptor's input.
pub fn request_payload(raw: &str, gateway_request: &Value) -> Value {
    json!({
        "interceptorInputVersion": "1.0",
        "mcp": {"rawGatewayRequest": {"body": raw}, "gatewayRequest": gateway_request},
    })
}

/// A RESPONSE interceptor's input.
pub fn response_payload(raw: &str, gateway_request: &Value, status: u16, body: &Value) -> Value {
    json!({
        "interceptorInputVersion": "1.0",
        "mcp": {
            "rawGatewayRequest": {"body": raw},
            "gatewayRequest": gateway_request,
            "gatewayResponse": {"statusCode": status, "body": body},
        },
    })
}

fn transformed_response(mcp: &Value) -> Option<Result<(u16, Value), InterceptorError>> {
    let r = mcp.get("transformedGatewayResponse")?;
    let status = match r.get("statusCode") {
        None => 200,
        Some(s) => match s.as_u64() {
            Some(s @ 100..=599) => s as u16,
            _ => {
                return Some(Err(InterceptorError::Malformed(
                    "statusCode is not an HTTP status".into(),
                )))
            }
        },
    };
    Some(match r.get("body") {
        Some(b) if b.is_object() || b.is_array() => Ok((status, b.clone())),
        _ => Err(InterceptorError::Malformed(
            "transformedGatewayResponse has no JSON body".into(),
        )),
    })
}

fn output_mcp(output: &Value) -> Result<&Value, InterceptorError> {
    if output
        .get("interceptorOutputVersion")
        .and_then(Value::as_str)
        != Some("1.0")
    {
        return Err(InterceptorError::Malformed(
            "interceptorOutputVersion is not \"1.0\"".into(),
        ));
    }
    output
        .get("mcp")
        .filter(|m| m.is_object())
        .ok_or_else(|| InterceptorError::Malformed("no mcp object".into()))
}

/// Reads a REQUEST interceptor's answer: a response wins over a request.
pub fn read_request_output(output: &Value) -> Result<RequestOutcome, InterceptorError> {
    let mcp = output_mcp(output)?;
    if let Some(r) = transformed_response(mcp) {
        let (status, body) = r?;
        return Ok(RequestOutcome::Respond { status, body });
    }
    match mcp
        .get("transformedGatewayRequest")
        .and_then(|r| r.get("body"))
    {
        Some(b) if b.is_object() => Ok(RequestOutcome::Continue(b.clone())),
        _ => Err(InterceptorError::Malformed(
            "neither transformedGatewayRequest.body nor transformedGatewayResponse".into(),
        )),
    }
}

/// Reads a RESPONSE interceptor's answer.
pub fn read_response_output(output: &Value) -> Result<(u16, Value), InterceptorError> {
    let mcp = output_mcp(output)?;
    transformed_response(mcp).unwrap_or_else(|| {
        Err(InterceptorError::Malformed(
            "no transformedGatewayResponse".into(),
        ))
    })
}

/// Calls `interceptor` with `payload`; its JSON answer.
pub async fn invoke(
    http: &reqwest::Client,
    upstream: &crate::upstream::UpstreamClient,
    config: &InterceptorConfig,
    interceptor: &Interceptor,
    payload: &Value,
) -> Result<Value, InterceptorError> {
    let body = payload.to_string();
    let call = async {
        let response = match &interceptor.endpoint {
            Endpoint::Http(url) => http
                .post(url.clone())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| InterceptorError::Failed(crate::error::chain(&e.without_url())))?,
            Endpoint::Lambda { arn, region } => {
                let base = config
                    .lambda_endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com"));
                let encoded: String =
                    url::form_urlencoded::byte_serialize(arn.as_bytes()).collect();
                let url = url::Url::parse(&format!(
                    "{}/2015-03-31/functions/{encoded}/invocations",
                    base.trim_end_matches('/')
                ))
                .map_err(|e| InterceptorError::Failed(format!("the Lambda endpoint: {e}")))?;
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("x-amz-invocation-type", "RequestResponse".to_owned()),
                ];
                let res = upstream
                    .signed_post("lambda", region, &url, &headers, body, None)
                    .await
                    .map_err(|e: UpstreamError| InterceptorError::Failed(e.to_string()))?;
                if res.headers().contains_key("x-amz-function-error") {
                    return Err(InterceptorError::Failed(
                        "the function raised an error".into(),
                    ));
                }
                res
            }
        };
        let status = response.status();
        if !status.is_success() {
            return Err(InterceptorError::Failed(format!("HTTP {status}")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| InterceptorError::Failed(crate::error::chain(&e.without_url())))?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|_| InterceptorError::Malformed("the answer is not JSON".into()))
    };
    match tokio::time::timeout(config.timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(InterceptorError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_lambda_arns_or_urls() {
        assert_eq!(
            Endpoint::parse("arn:aws:lambda:eu-west-1:123456789012:function:check").unwrap(),
            Endpoint::Lambda {
                arn: "arn:aws:lambda:eu-west-1:123456789012:function:check".into(),
                region: "eu-west-1".into()
            }
        );
        assert!(
            Endpoint::parse("arn:aws:lambda:eu-west-1:123456789012:function:check:live").is_ok()
        );
        assert!(matches!(
            Endpoint::parse("http://127.0.0.1:9000/check").unwrap(),
            Endpoint::Http(_)
        ));
        for bad in [
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:eu-west-1:123:layer:x",
            "ftp://x/y",
            "check",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_follow_the_contract_or_are_refused() {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let go = json!({"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayRequest": {"body": body}}});
        assert_eq!(
            read_request_output(&go).unwrap(),
            RequestOutcome::Continue(body.clone())
        );
        // A response wins, even beside a request.
        let deny = json!({"interceptorOutputVersion": "1.0", "mcp": {
            "transformedGatewayRequest": {"body": body},
            "transformedGatewayResponse": {"statusCode": 403, "body": {"jsonrpc": "2.0", "id": 1, "error": {"code": -32003, "message": "no"}}}}});
        assert!(matches!(
            read_request_output(&deny).unwrap(),
            RequestOutcome::Respond { status: 403, .. }
        ));
        for bad in [
            json!({}),
            json!({"interceptorOutputVersion": "2.0", "mcp": {"transformedGatewayRequest": {"body": body}}}),
            json!({"interceptorOutputVersion": "1.0"}),
            json!({"interceptorOutputVersion": "1.0", "mcp": {}}),
            json!({"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayRequest": {"body": "text"}}}),
            json!({"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayResponse": {"statusCode": 99, "body": {}}}}),
            json!({"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayResponse": {"statusCode": 200}}}),
        ] {
            assert!(read_request_output(&bad).is_err(), "{bad}");
        }
        let out = json!({"interceptorOutputVersion": "1.0", "mcp": {"transformedGatewayResponse": {"body": {"jsonrpc": "2.0", "id": 1, "result": {}}}}});
        assert_eq!(read_response_output(&out).unwrap().0, 200);
        assert!(read_response_output(&go).is_err());
    }
}
