//! Lambda entry point of the scheduled token refresh (EventBridge).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let state = gateway_shared::cold_start().await?;
    let concurrency = state.config.refresh_concurrency;
    let state = &state;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let remaining = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let (summary, record) = gateway_shared::observe::scope(
                state
                    .tokens
                    .handle_scheduled_event(&event.payload, remaining, concurrency),
            )
            .await;
            // RefreshOutcome by outcome, and an audit event per failure.
            gateway_shared::observe::scheduled_refreshes(state, record).await;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(summary?)?)
        },
    ))
    .await
}
