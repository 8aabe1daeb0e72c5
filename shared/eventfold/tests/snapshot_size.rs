//! The executor's guard on snapshot size: each snapshot's serialized size is reported
//! (`CommandOutcome::snapshot_bytes`, the `snapshot_bytes` histogram labelled by category),
//! and one past `SNAPSHOT_WARN_BYTES` is logged as a warning naming the stream.

use eventfold::executor::{SNAPSHOT_BYTES, SNAPSHOT_WARN_BYTES};
use eventfold::{
    Aggregate, CommandExecutor, DomainEvent, ExecutorConfig, MemoryEventStore, Metadata, Rejection,
    StreamId,
};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata as MetricMetadata, Recorder,
    SharedString, Unit,
};
use std::sync::{Arc, Mutex};

/// An aggregate whose state keeps every label it was given: a state that only grows.
struct Hoard;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "data")]
enum HoardEvent {
    Kept { label: String },
}

impl DomainEvent for HoardEvent {}

impl Aggregate for Hoard {
    const CATEGORY: &'static str = "Hoard";
    type Event = HoardEvent;
    type State = Vec<String>;
    type Command = String;

    fn initial() -> Vec<String> {
        Vec::new()
    }

    fn evolve(mut state: Vec<String>, event: &HoardEvent) -> Vec<String> {
        let HoardEvent::Kept { label } = event;
        state.push(label.clone());
        state
    }

    fn decide(_: &Vec<String>, label: &String) -> Result<Vec<HoardEvent>, Rejection> {
        Ok(vec![HoardEvent::Kept {
            label: label.clone(),
        }])
    }
}

/// The histogram values recorded, with their metric name and labels.
type Records = Arc<Mutex<Vec<(String, Vec<(String, String)>, f64)>>>;

/// A recorder keeping what histograms record (the only kind the executor emits).
#[derive(Default)]
struct Capture {
    records: Records,
}

struct Sink(Records, Key);

impl HistogramFn for Sink {
    fn record(&self, value: f64) {
        let labels = self
            .1
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let name = self.1.name().to_owned();
        self.0.lock().expect("lock").push((name, labels, value));
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &MetricMetadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &MetricMetadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &MetricMetadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Sink(self.records.clone(), key.clone())))
    }
}

/// What the log said, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `labels` as commands on one stream (a snapshot every 2 events), under a recorder and
/// a log of its own; gives back the snapshot sizes the outcomes reported, the histogram
/// records and the log.
fn run(labels: &[String]) -> (Vec<Option<usize>>, Records, String) {
    let capture = Capture::default();
    let records = capture.records.clone();
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let executor = CommandExecutor::new(
        MemoryEventStore::new(),
        ExecutorConfig {
            snapshot_every: 2,
            ..ExecutorConfig::default()
        },
    );
    let stream = StreamId::new("t1", Hoard::CATEGORY, "h-1").expect("valid");
    let sizes = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&capture, || {
            runtime.block_on(async {
                let mut sizes = Vec::new();
                for (i, label) in labels.iter().enumerate() {
                    let ctx = Metadata::root("t1", "tester", format!("c-{i}"));
                    let out = executor
                        .execute::<Hoard>(&stream, None, label, &ctx)
                        .await
                        .expect("kept");
                    sizes.push(out.snapshot_bytes);
                }
                sizes
            })
        })
    });
    let text = String::from_utf8(log.0.lock().expect("lock").clone()).expect("utf-8");
    (sizes, records, text)
}

#[test]
fn each_snapshot_size_is_reported_and_recorded_by_category() {
    let labels: Vec<String> = (0..4).map(|i| format!("label-{i}")).collect();
    let (sizes, records, log) = run(&labels);
    let at = |n: usize| serde_json::to_vec(&labels[..n]).expect("json").len();
    assert_eq!(sizes, [None, Some(at(2)), None, Some(at(4))]);
    let records = records.lock().expect("lock").clone();
    let hoard = vec![("category".to_owned(), "Hoard".to_owned())];
    assert_eq!(
        records,
        [
            (SNAPSHOT_BYTES.to_owned(), hoard.clone(), at(2) as f64),
            (SNAPSHOT_BYTES.to_owned(), hoard, at(4) as f64),
        ]
    );
    assert!(!log.contains("snapshot large"), "{log}");
}

#[test]
fn a_snapshot_past_the_threshold_is_a_warning_naming_the_stream() {
    // Two labels that together pass the threshold: the second commit's snapshot does.
    let half = "x".repeat(SNAPSHOT_WARN_BYTES / 2 + 1);
    let (sizes, _, log) = run(&[half.clone(), half]);
    let size = sizes[1].expect("a snapshot");
    assert!(size > SNAPSHOT_WARN_BYTES);
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("snapshot large"), "{log}");
    assert!(log.contains("t1/Hoard-h-1"), "{log}");
    assert!(log.contains(&format!("snapshot_bytes={size}")), "{log}");
}
