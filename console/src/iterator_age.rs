//! The stream publisher's lag: its position in the DynamoDB stream lives inside Lambda's
//! event source mapping, which reports it only as the `IteratorAge` metric (the age of the
//! last record of each batch sent to the function, `AWS/Lambda`, per `FunctionName`). The
//! local stack's stream poller reports the same metric to the emulator's CloudWatch, so the
//! console reads it one way in both. One `GetMetricStatistics` per refresh.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use chrono::{DateTime, Duration as Span, Utc};

/// How recent a datapoint must be to count: a mapping with nothing to send reports nothing.
pub const RECENT: Span = Span::minutes(2);

/// The publisher's lag as the metric tells it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PublisherAge {
    /// No function name configured, or the metric could not be read.
    #[default]
    Unknown,
    /// No batch sent in the last [`RECENT`]: nothing waiting, or stopped entirely (its
    /// dead letters and failure notes tell which).
    Idle,
    /// The largest iterator age of the latest minute with a datapoint, in milliseconds,
    /// and that minute.
    Age {
        /// Milliseconds.
        ms: f64,
        /// The minute it was reported in.
        at: DateTime<Utc>,
    },
}

impl PublisherAge {
    /// The age of the oldest record waiting, as of the latest datapoint.
    pub fn oldest(self) -> Option<Span> {
        match self {
            Self::Age { ms, .. } => Some(Span::milliseconds(ms as i64)),
            _ => None,
        }
    }
}

/// Reads the latest `IteratorAge` of `function` as of `now`.
pub async fn read(client: &Client, function: &str, now: DateTime<Utc>) -> PublisherAge {
    let start = now - RECENT - Span::minutes(1);
    let out = client
        .get_metric_statistics()
        .namespace("AWS/Lambda")
        .metric_name("IteratorAge")
        .dimensions(
            Dimension::builder()
                .name("FunctionName")
                .value(function)
                .build(),
        )
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            start.timestamp(),
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            now.timestamp() + 60,
        ))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await;
    let points = match out {
        Ok(o) => o.datapoints.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(%function, error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "IteratorAge not readable");
            return PublisherAge::Unknown;
        }
    };
    latest(
        points
            .iter()
            .filter_map(|p| Some((p.timestamp?.secs(), p.maximum?))),
        now,
    )
}

/// The latest of `(epoch seconds, maximum)` datapoints, if recent enough at `now`.
pub fn latest(points: impl Iterator<Item = (i64, f64)>, now: DateTime<Utc>) -> PublisherAge {
    points
        .filter_map(|(secs, ms)| Some((DateTime::from_timestamp(secs, 0)?, ms)))
        .filter(|(at, _)| now - *at <= RECENT)
        .max_by_key(|(at, _)| *at)
        .map_or(PublisherAge::Idle, |(at, ms)| PublisherAge::Age { ms, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_recent_minute_counts_and_an_old_one_means_idle() {
        let now = Utc::now();
        let t = |ago: i64| (now - Span::seconds(ago)).timestamp();
        let age = latest([(t(170), 9_000.0), (t(50), 1_500.0)].into_iter(), now);
        assert!(matches!(age, PublisherAge::Age { ms, .. } if ms == 1_500.0));
        assert_eq!(age.oldest(), Some(Span::milliseconds(1_500)));
        assert_eq!(
            latest([(t(600), 9_000.0)].into_iter(), now),
            PublisherAge::Idle
        );
        assert_eq!(latest(std::iter::empty(), now), PublisherAge::Idle);
    }
}
