//! What `eventfold-bench e2e` measured, and its table: the IAM proxy's request counts (one
//! per request as sent: `PublishBatch`, `DeleteMessageBatch`, `TransactWriteItems` count once)
//! told apart into work (what the orders cost) and polling (what time costs), per hop,
//! resource and operation, per order and per API command.

use eventfold_local::iam::record::Request;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The event-source pollers' reads (operations as sent). In AWS, Lambda's pollers make them; how many there are
/// depends on time, the poll settings and the number of pollers, not on the orders, so they
/// are counted apart from the work (only the polls that found records are work: one per
/// invocation of a stream or queue source).
pub const POLL_OPERATIONS: &[&str] = &[
    "sqs:ReceiveMessage",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:DescribeStream",
    "dynamodb:ListStreams",
];

/// The function the bench itself calls to watch the orders reach the view (the query API):
/// its calls are the observer's, not the workload's.
pub const OBSERVER: &str = "QueryApiFunction";

/// One kind of request (function = hop, resources, operation) and how many the run made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The function's logical id: the hop.
    pub function: String,
    /// The table, index, stream, queue or topic, by logical id (`A+B` for a request on two).
    pub resource: String,
    /// `service:Operation` as sent.
    pub operation: String,
    /// Requests made during the run.
    pub count: u64,
}

/// The requests between two snapshots of the proxy's record, split into work, polling and
/// the observer's. Denied requests are kept in the work (a denial is a bug the table shows).
pub fn split_requests(
    before: &BTreeMap<Request, u64>,
    after: &BTreeMap<Request, u64>,
) -> (Vec<Row>, Vec<Row>, Vec<Row>) {
    let (mut work, mut polls, mut observer) = (Vec::new(), Vec::new(), Vec::new());
    for (call, n) in after {
        let count = n - before.get(call).copied().unwrap_or(0);
        if count == 0 {
            continue;
        }
        let row = Row {
            function: call.function.clone(),
            resource: call.resources.clone(),
            operation: call.operation.clone(),
            count,
        };
        if call.function == OBSERVER {
            observer.push(row);
        } else if POLL_OPERATIONS.contains(&call.operation.as_str()) {
            polls.push(row);
        } else {
            work.push(row);
        }
    }
    (work, polls, observer)
}

/// Everything one `e2e` run measured.
#[derive(Debug, Clone, Default)]
pub struct E2eReport {
    /// Orders run.
    pub orders: u64,
    /// Orders seen `Confirmed` in the `order-summary` view.
    pub confirmed: u64,
    /// Commands sent through the HTTP API (4 per order).
    pub api_commands: u64,
    /// Requests that are work (neither polling nor the observer's).
    pub work: Vec<Row>,
    /// The pollers' reads, idle or not.
    pub polls: Vec<Row>,
    /// The observer's requests (the bench polling the view).
    pub observer: Vec<Row>,
    /// Invocations per function made by its stream and queue sources during the run: the
    /// polls that found records.
    pub invocations: BTreeMap<String, u64>,
    /// Records per function its stream and queue sources delivered (stream records,
    /// messages; a redelivered message counts again).
    pub records: BTreeMap<String, u64>,
    /// Events the run appended, by stream category (`Order`, `Inventory`, ...).
    pub events: BTreeMap<String, u64>,
    /// Commits the run appended (distinct stream and command).
    pub commits: u64,
    /// `PlaceOrder` sent -> `OrderConfirmed` committed, per order, in ms.
    pub confirmed_ms: Vec<f64>,
    /// `PlaceOrder` sent -> `Confirmed` seen in `order-summary`, per order, in ms.
    pub view_ms: Vec<f64>,
    /// An order's way: for each event type its orders reached (`Category: Type`), when each
    /// order's last one of them happened, in ms after its `PlaceOrder` was sent.
    pub way: BTreeMap<String, Vec<f64>>,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Denied calls during the run.
    pub denials: usize,
    /// CPU seconds used during the run, per process: each emulator process (by what it
    /// serves) and the stack itself (gateway, functions, pollers, IAM proxy, the bench).
    pub cpu: Vec<(String, f64)>,
}

/// The `q` quantile of `samples` (nearest rank), 0 when there are none.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n as f64 - 1.0) * q).round() as usize],
    }
}

impl E2eReport {
    /// Requests of the work rows matching `function` (`None`: any), `resource` and
    /// `operation`.
    pub fn count(&self, function: Option<&str>, resource: &str, operation: &str) -> u64 {
        self.work
            .iter()
            .filter(|r| function.is_none_or(|f| r.function == f))
            .filter(|r| r.resource == resource && r.operation == operation)
            .map(|r| r.count)
            .sum()
    }

    /// Every poll request.
    pub fn poll_total(&self) -> u64 {
        self.polls.iter().map(|r| r.count).sum()
    }

    /// Polls that found records: one per invocation of a stream or queue source.
    pub fn productive_polls(&self) -> u64 {
        self.invocations
            .values()
            .sum::<u64>()
            .min(self.poll_total())
    }

    /// Work requests: every work request plus the polls that found records.
    pub fn work_total(&self) -> u64 {
        self.work.iter().map(|r| r.count).sum::<u64>() + self.productive_polls()
    }

    /// Events appended.
    pub fn event_total(&self) -> u64 {
        self.events.values().sum()
    }

    fn per_order(&self, n: u64) -> f64 {
        n as f64 / self.orders.max(1) as f64
    }

    fn per_command(&self, n: u64) -> f64 {
        n as f64 / self.api_commands.max(1) as f64
    }

    /// The table and the figures, as `eventfold-bench e2e` prints them.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "e2e: {} orders ({} confirmed and in order-summary), {} API commands, {:.1} s",
            self.orders, self.confirmed, self.api_commands, self.seconds
        );
        let _ = writeln!(
            w,
            "\nwork requests per hop (function) x resource x operation:\n{:<26} {:<28} {:<34} {:>8} {:>9} {:>9}",
            "function", "resource", "operation", "requests", "/order", "/command"
        );
        let mut rows = self.work.clone();
        for (function, n) in &self.invocations {
            rows.push(Row {
                function: function.clone(),
                resource: "(event source)".into(),
                operation: "polls that found records".into(),
                count: *n,
            });
        }
        rows.sort_by(|a, b| {
            (&a.function, &a.resource, &a.operation).cmp(&(&b.function, &b.resource, &b.operation))
        });
        for r in &rows {
            let _ = writeln!(
                w,
                "{:<26} {:<28} {:<34} {:>8} {:>9.2} {:>9.2}",
                r.function,
                r.resource,
                r.operation,
                r.count,
                self.per_order(r.count),
                self.per_command(r.count)
            );
        }
        let mut by_function: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_resource: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for r in &rows {
            *by_function.entry(&r.function).or_default() += r.count;
            *by_resource.entry((&r.resource, &r.operation)).or_default() += r.count;
        }
        let _ = writeln!(
            w,
            "\nper hop: requests/order, invocations/order, records in/order (stream records, messages)"
        );
        // An HTTP function's invocations are the API requests (4 per order), not a source's.
        let of = |m: &BTreeMap<String, u64>, f: &str| {
            m.get(f)
                .map_or("-".to_owned(), |n| format!("{:.2}", self.per_order(*n)))
        };
        for (f, n) in &by_function {
            let _ = writeln!(
                w,
                "  {f:<26} {:>8.2} {:>8} {:>8}",
                self.per_order(*n),
                of(&self.invocations, f),
                of(&self.records, f)
            );
        }
        let _ = writeln!(w, "\nper resource and operation, all hops: requests/order");
        for ((resource, operation), n) in &by_resource {
            let _ = writeln!(
                w,
                "  {resource:<28} {operation:<34} {:>8.2}",
                self.per_order(*n)
            );
        }
        let work = self.work_total();
        let _ = writeln!(
            w,
            "\ntotal work requests: {work} ({:.1}/order, {:.2}/API command)",
            self.per_order(work),
            self.per_command(work)
        );
        let (polls, productive) = (self.poll_total(), self.productive_polls());
        let _ = writeln!(
            w,
            "polling, apart: {polls} poller reads ({}), {productive} of them found records (counted above), {} idle ({:.1}/s over the run)",
            POLL_OPERATIONS.join(", "),
            polls - productive,
            (polls - productive) as f64 / self.seconds.max(0.001)
        );
        let observed: u64 = self.observer.iter().map(|r| r.count).sum();
        let _ = writeln!(
            w,
            "observer, apart: {observed} {OBSERVER} requests (the bench polling order-summary)"
        );
        let events = self.event_total();
        let categories: Vec<String> = self
            .events
            .iter()
            .map(|(c, n)| format!("{c} {:.2}", self.per_order(*n)))
            .collect();
        let _ = writeln!(
            w,
            "events per order: {:.2} ({}); commits per order: {:.2}",
            self.per_order(events),
            categories.join(", "),
            self.per_order(self.commits)
        );
        let _ = writeln!(
            w,
            "PlaceOrder -> OrderConfirmed committed: p50 {:.0} ms, p95 {:.0} ms; -> Confirmed in order-summary: p50 {:.0} ms, p95 {:.0} ms",
            quantile(&self.confirmed_ms, 0.5),
            quantile(&self.confirmed_ms, 0.95),
            quantile(&self.view_ms, 0.5),
            quantile(&self.view_ms, 0.95)
        );
        if !self.way.is_empty() {
            let _ = writeln!(
                w,
                "an order's way: its last event of each type, ms after PlaceOrder was sent (p50 / p95, orders):"
            );
            let mut steps: Vec<(&String, f64, f64, usize)> = self
                .way
                .iter()
                .map(|(label, ms)| (label, quantile(ms, 0.5), quantile(ms, 0.95), ms.len()))
                .collect();
            steps.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (label, p50, p95, n) in steps {
                let _ = writeln!(w, "  {label:<44} {p50:>8.0} {p95:>8.0} {n:>6}");
            }
        }
        if !self.cpu.is_empty() {
            let used: Vec<String> = self
                .cpu
                .iter()
                .map(|(process, secs)| {
                    format!(
                        "{process} {secs:.1} s ({:.0}%)",
                        100.0 * secs / self.seconds.max(0.001)
                    )
                })
                .collect();
            let _ = writeln!(
                w,
                "CPU during the run (share of one core over the run): {}",
                used.join(", ")
            );
        }
        if self.denials > 0 {
            let _ = writeln!(w, "DENIED calls during the run: {}", self.denials);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(function: &str, resources: &str, operation: &str) -> Request {
        Request {
            function: function.into(),
            operation: operation.into(),
            resources: resources.into(),
        }
    }

    #[test]
    fn requests_split_into_work_polling_and_the_observer() {
        let put = request("CommandApiFunction", "EventsTable", "dynamodb:PutItem");
        let receive = request("ProjectorFunction", "ProjectorQueue", "sqs:ReceiveMessage");
        let get = request(OBSERVER, "ReadModelsTable", "dynamodb:GetItem");
        let before = BTreeMap::from([(put.clone(), 3), (receive.clone(), 10)]);
        let after = BTreeMap::from([(put, 7), (receive, 25), (get, 2)]);
        let (work, polls, observer) = split_requests(&before, &after);
        assert_eq!(work.len(), 1);
        assert_eq!(
            (work[0].operation.as_str(), work[0].count),
            ("dynamodb:PutItem", 4)
        );
        assert_eq!(polls[0].count, 15);
        assert_eq!(observer[0].count, 2);
        let report = E2eReport {
            orders: 2,
            api_commands: 8,
            work,
            polls,
            invocations: BTreeMap::from([("ProjectorFunction".to_owned(), 5)]),
            seconds: 1.0,
            ..E2eReport::default()
        };
        assert_eq!(report.productive_polls(), 5);
        assert_eq!(
            report.work_total(),
            9,
            "4 puts + 5 polls that found records"
        );
        assert_eq!(report.count(None, "EventsTable", "dynamodb:PutItem"), 4);
        let table = report.render();
        assert!(table.contains("10 idle"), "{table}");
        assert!(
            table.contains("total work requests: 9 (4.5/order"),
            "{table}"
        );
    }

    #[test]
    fn an_orders_way_is_listed_by_median_and_cpu_as_a_share_of_the_run() {
        let report = E2eReport {
            orders: 2,
            seconds: 2.0,
            way: BTreeMap::from([
                ("Order: OrderConfirmed".to_owned(), vec![900.0, 1100.0]),
                ("Order: OrderPlaced".to_owned(), vec![10.0, 30.0]),
            ]),
            cpu: vec![("emulator (sns+sqs)".to_owned(), 1.5)],
            ..E2eReport::default()
        };
        let table = report.render();
        let placed = table.find("Order: OrderPlaced").expect("listed");
        let confirmed = table.find("Order: OrderConfirmed").expect("listed");
        assert!(placed < confirmed, "by median: {table}");
        assert!(table.contains("emulator (sns+sqs) 1.5 s (75%)"), "{table}");
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let samples = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&samples, 0.5), 3.0);
        assert_eq!(quantile(&samples, 0.95), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
