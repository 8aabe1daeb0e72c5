//! Configuration read once at cold start.

use aws_config::{BehaviorVersion, SdkConfig};

/// A required setting was missing or malformed. Its `Debug` form is its message: a `main`
/// that returns it prints which variable to set, not a variant name.
#[derive(thiserror::Error)]
pub enum ConfigError {
    /// The variable is not set.
    #[error(
        "missing required setting {0}: set it in the function's environment (against the local \
         stack, `eventfold local --print-env <function>` prints every variable a function needs)"
    )]
    Missing(&'static str),
    /// The variable is set to something unusable.
    #[error("invalid setting {name}={value}: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// The value found.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Settings of the command path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Name of the events table (`EVENTS_TABLE`).
    pub events_table: String,
    /// Snapshot every this many events (`SNAPSHOT_EVERY`, default 100, 0 = off).
    pub snapshot_every: u64,
    /// `Idempotency-Key` support (`IDEMPOTENCY_TABLE` and friends); `None` without a table.
    pub idempotency: Option<crate::IdempotencySettings>,
}

impl StoreConfig {
    /// Reads the settings through `lookup` (the process environment in Lambda; a template's
    /// function environment in the local stack).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let events_table = lookup("EVENTS_TABLE")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing("EVENTS_TABLE"))?;
        let snapshot_every = match lookup("SNAPSHOT_EVERY") {
            None => 100,
            Some(v) => v
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                    name: "SNAPSHOT_EVERY",
                    value: v.clone(),
                    reason: e.to_string(),
                })?,
        };
        let idempotency = crate::IdempotencySettings::from_lookup(&lookup)?;
        Ok(Self {
            events_table,
            snapshot_every,
            idempotency,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Loads the shared AWS SDK configuration. `AWS_ENDPOINT_URL` (moto, LocalStack) and the
/// usual region and credential variables are honoured by the SDK itself.
///
/// Every client built from it shares one HTTPS client, so one connection pool per endpoint
/// and one load of the trusted certificates per process: without it each SDK client builds
/// its own, and a warm-up through one client ([`crate::warm_up`]) would leave the others
/// cold.
pub async fn sdk_config() -> SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

/// Structured JSON logs for Lambda (CloudWatch), level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (tests, local stack) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Jittered conflict back-off on the tokio timer (the Lambda runtime's).
pub fn tokio_backoff() -> eventfold::executor::Backoff {
    std::sync::Arc::new(|d| Box::pin(tokio::time::sleep(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_required_and_defaulted_settings() {
        let cfg = StoreConfig::from_lookup(|k| (k == "EVENTS_TABLE").then(|| "t".to_owned()))
            .expect("valid");
        assert_eq!(
            cfg,
            StoreConfig {
                events_table: "t".into(),
                snapshot_every: 100,
                idempotency: None,
            }
        );
        let with_idempotency = StoreConfig::from_lookup(|k| match k {
            "EVENTS_TABLE" => Some("t".into()),
            "IDEMPOTENCY_TABLE" => Some("i".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(
            with_idempotency.idempotency.map(|s| s.table),
            Some("i".to_owned())
        );
        assert!(matches!(
            StoreConfig::from_lookup(|_| None),
            Err(ConfigError::Missing(_))
        ));
        let bad = StoreConfig::from_lookup(|k| match k {
            "EVENTS_TABLE" => Some("t".into()),
            _ => Some("lots".into()),
        });
        assert!(matches!(bad, Err(ConfigError::Invalid { .. })));
        let missing = format!("{:?}", ConfigError::Missing("EVENTS_TABLE"));
        assert!(
            missing.starts_with("missing required setting EVENTS_TABLE:"),
            "{missing}"
        );
    }
}
