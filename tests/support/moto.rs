//! moto_server, and a gateway (table, key set, `AppState`) on it, with a manual clock.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use aws_sdk_dynamodb::config::{Credentials, Region};
use gateway_shared::ports::Clock;
use gateway_shared::{AppState, Config};

use crate::*;

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto (`tests/python/moto_serial.py`: moto_server's application,
    /// one request at a time, so that conditional writes are atomic as in
    /// DynamoDB) on a free port, and waits until it listens. The Python is
    /// the project's venv (`scripts/tools.sh python`) or `MOTO_PYTHON`.
    pub fn start() -> Moto {
        let python = std::env::var_os("MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".tools/venv/bin/python"));
        let script = workspace_root().join("tests/python/moto_serial.py");
        let port = free_port();
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); run scripts/tools.sh python",
                    python.display()
                )
            });
        wait_for_port(port, &mut child, "moto_server");
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SDK configuration pointing at this server.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                Credentials::new("test", "test", None, None, "tests"),
            ))
            .build()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock tests can move.
#[derive(Debug, Default)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    /// Starts at the real time.
    pub fn now_real() -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(
            gateway_shared::ports::SystemClock.now(),
        )))
    }
    /// Moves time forward.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Key material for tests (not secret anywhere).
pub const KEY_1: &str = "test-key-one-0123456789abcdefghijklmnop";
/// A second key, for rotation.
pub const KEY_2: &str = "test-key-two-0123456789abcdefghijklmnop";

/// A gateway environment on moto: table, key-set secret, state.
pub struct Gateway {
    /// The moto server (dropped last).
    pub moto: Moto,
    /// Table name.
    pub table: String,
    /// Key-set secret ARN.
    pub keyset_arn: String,
    /// Raw DynamoDB client.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// Raw Secrets Manager client.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The clock `state` uses.
    pub clock: Arc<ManualClock>,
    /// The gateway state.
    pub state: AppState,
}

impl Gateway {
    /// Starts moto, creates the table and key set, builds the state.
    /// `extra` adds or overrides configuration variables.
    pub async fn start(extra: &[(&str, &str)]) -> Gateway {
        let moto = Moto::start();
        let sdk = moto.sdk_config();
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let table = "gateway-test".to_string();
        gateway_shared::adapters::dynamodb::create_table(&dynamo, &table)
            .await
            .expect("create table");
        let keyset_arn = secrets
            .create_secret()
            .name("gateway-keyset")
            .secret_string(serde_json::json!({"current": "k1", "k1": KEY_1}).to_string())
            .send()
            .await
            .expect("create key set")
            .arn
            .expect("secret ARN");
        let mut vars: HashMap<String, String> = [
            ("TABLE_NAME", table.as_str()),
            ("KEYSET_SECRET_ARN", keyset_arn.as_str()),
            ("INBOUND_AUTH_MODE", "dev"),
            ("PUBLIC_BASE_URL", "https://gateway.example.test"),
            ("REFRESH_SHARDS", "4"),
            // In-process gateways would write every request's metric line
            // and audit event to the test run's output; tests of them turn
            // them on.
            ("METRICS", "off"),
            ("AUDIT", "off"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test configuration");
        let clock = ManualClock::now_real();
        let state = AppState::with_sdk_config(config, &sdk)
            .await
            .expect("state")
            .with_clock(clock.clone());
        Gateway {
            moto,
            table,
            keyset_arn,
            dynamo,
            secrets,
            clock,
            state,
        }
    }

    /// The environment of a function binary run against this gateway's
    /// table and key set under a local Lambda Runtime API (the caller adds
    /// `AWS_LAMBDA_RUNTIME_API`): configuration, moto's endpoint and test
    /// credentials, and the variables the Lambda runtime requires.
    pub fn function_env(&self) -> Vec<(String, String)> {
        [
            ("TABLE_NAME", self.table.as_str()),
            ("KEYSET_SECRET_ARN", self.keyset_arn.as_str()),
            ("INBOUND_AUTH_MODE", "jwt"),
            ("INBOUND_ISSUER", "https://idp.example.com"),
            ("INBOUND_AUDIENCES", "gateway"),
            ("CONSENT_LOGIN_CLIENT_ID", "login"),
            ("PUBLIC_BASE_URL", "https://gateway.example.com"),
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "gateway"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "gateway"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "gateway"),
            ("RUST_LOG", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The raw item at (pk, sk), read consistently.
    pub async fn raw_item(
        &self,
        pk: &str,
        sk: &str,
    ) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item")
            .item
    }
}

impl Gateway {
    /// The environment a gateway process (`gateway-serve`, `gateway-admin`)
    /// needs to use this table and key set in `dev` mode.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("TABLE_NAME", self.table.clone()),
            ("KEYSET_SECRET_ARN", self.keyset_arn.clone()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("INBOUND_AUTH_MODE", "dev".into()),
            (
                "REFRESH_SHARDS",
                self.state.config.refresh_shards.to_string(),
            ),
        ]
    }

    /// Writes `item` as it is (a table writer's edit, no keys involved).
    pub async fn put_raw_item(
        &self,
        item: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) {
        self.dynamo
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put_item");
    }
}

/// Another Lambda instance of the gateway: its own SDK clients, caches and
/// HTTP pool over the same table and secrets, with its own clock.
pub async fn instance(gw: &Gateway, clock: Arc<dyn Clock>) -> AppState {
    AppState::with_sdk_config((*gw.state.config).clone(), &gw.moto.sdk_config())
        .await
        .expect("another instance")
        .with_clock(clock)
}

/// A CloudWatch Logs JSON API call to moto (unsigned, addressed the way
/// SigV4 names the service), for tests that read the audit trail.
pub async fn logs_api(moto: &str, action: &str, body: serde_json::Value) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(moto)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("Logs_20140328.{action}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .expect("moto answers");
    assert!(res.status().is_success(), "{action}: HTTP {}", res.status());
    res.json().await.unwrap_or(serde_json::Value::Null)
}
