//! What `eventfold local` prints, and the `--demo` walk through a real order.

use anyhow::{Result, bail};
use eventfold_local::LocalStack;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Prints where everything is and how to call it.
pub fn banner(stack: &LocalStack) {
    println!("eventfold local stack is up");
    println!("  AWS endpoint : {}", stack.endpoint);
    match &stack.iam {
        Some(iam) => println!(
            "  IAM          : enforced per function (each function's calls checked through {})",
            iam.endpoint()
        ),
        None => println!("  IAM          : NOT enforced (--no-iam)"),
    }
    for (name, created) in &stack.tables {
        println!(
            "  table        : {name}{}",
            if *created { " (created)" } else { " (exists)" }
        );
    }
    let parameters: Vec<String> = stack
        .template
        .parameter_names()
        .into_iter()
        .filter_map(|name| {
            let value = stack.template.parameter(&name)?;
            Some(format!("{name}={value}"))
        })
        .collect();
    println!("  parameters   : {}", parameters.join(" "));
    for source in stack.esm().sources() {
        println!(
            "  event source : {} {} ({})",
            source.function, source.source, source.kind
        );
    }
    println!("  HTTP API     : {}", stack.api_url());
    for route in stack.gateway.describe() {
        println!("    {route}");
    }
    let token = stack
        .gateway
        .auth()
        .issue("acme", "dev", "events:read events:write", 3600);
    println!("\nTry it (token valid 1 h; `eventfold token --help` makes others):");
    println!("  TOKEN={token}");
    println!(
        "  curl -s -X POST {}/api/v1/events/commands -H \"authorization: Bearer $TOKEN\" \\\n    -d '{{\"aggregate_type\":\"Order\",\"aggregate_id\":\"o-1\",\"type\":\"CreateOrder\",\"data\":{{\"customer_id\":\"c-1\"}}}}'",
        stack.api_url()
    );
    println!(
        "  curl -s {}/api/v1/events/aggregates/Order/o-1 -H \"authorization: Bearer $TOKEN\"",
        stack.api_url()
    );
    println!(
        "  curl -s '{}/api/v1/events/queries/order-summary?order_id=o-1' -H \"authorization: Bearer $TOKEN\"",
        stack.api_url()
    );
    println!(
        "  curl -s -X POST {}/api/v1/events/publish -H \"authorization: Bearer $TOKEN\" \\\n    -d '{{\"topic\":\"user-events\",\"event_type\":\"user.created\",\"data\":{{\"user_id\":\"u-1\"}}}}'",
        stack.api_url()
    );
    println!(
        "  curl -s '{}/api/v1/events/consume?topic=user-events&group_id=g1' -H \"authorization: Bearer $TOKEN\"",
        stack.api_url()
    );
}

const COMMANDS: &str = "/api/v1/events/commands";

/// The demo's HTTP client and token.
struct Client {
    http: Http,
    token: String,
}

impl Client {
    /// Sends a command; fails the demo unless it is accepted. Prints it with its events.
    async fn send(&self, aggregate: &str, id: &str, command: &str, data: Value) -> Result<()> {
        let body =
            json!({"aggregate_type": aggregate, "aggregate_id": id, "type": command, "data": data});
        let reply = self.http.post(COMMANDS, Some(&self.token), &body).await?;
        let types: Vec<&str> = reply.json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["type"].as_str())
            .collect();
        println!(
            "  POST {aggregate}/{id} {command:<16} -> {} version {} {types:?}",
            reply.status, reply.json["version"]
        );
        if !(200..300).contains(&reply.status) {
            bail!(
                "demo step {command} failed: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<eventfold_local::httpc::Reply> {
        self.http.get(path, Some(&self.token)).await
    }

    /// Polls `path` until `done` accepts the JSON, for at most `limit`.
    async fn until(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            let r = self.get(path).await?;
            if r.status == 200 && done(&r.json) {
                return Ok(r.json);
            }
            if start.elapsed() > limit {
                bail!(
                    "{path} did not get there within {limit:?}: {} {}",
                    r.status,
                    r.json
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates and places order `id` with `lines` (sku, quantity, unit price).
    async fn place(&self, id: &str, lines: &[(&str, i64, i64)], method: &str) -> Result<()> {
        self.send("Order", id, "CreateOrder", json!({"customer_id": "c-42"}))
            .await?;
        for (sku, quantity, unit_price) in lines {
            let data = json!({"sku": sku, "quantity": quantity, "unit_price": unit_price});
            self.send("Order", id, "AddItem", data).await?;
        }
        self.send("Order", id, "PlaceOrder", json!({"payment_method": method}))
            .await
    }

    /// Waits for order `id`'s saga to end, then prints its outcome and its log.
    async fn saga(&self, id: &str, limit: Duration) -> Result<String> {
        let done = self
            .until(
                &format!("/api/v1/events/aggregates/OrderFulfilment/{id}"),
                limit,
                |j| j["state"]["outcome"].is_string(),
            )
            .await?;
        let outcome = done["state"]["outcome"].as_str().unwrap_or("?").to_owned();
        let log = self
            .get(&format!(
                "/api/v1/events/aggregates/OrderFulfilment/{id}/events?limit=1000"
            ))
            .await?;
        let steps: Vec<&str> = log.json["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["type"].as_str())
            .collect();
        let order = self
            .get(&format!("/api/v1/events/aggregates/Order/{id}"))
            .await?;
        println!(
            "  saga OrderFulfilment/{id}: {outcome}; order {} {}",
            order.json["state"]["status"], order.json["state"]["cancel_reason"]
        );
        println!("    log: {}", steps.join(" > "));
        Ok(outcome)
    }
}

/// Places real orders through the HTTP API and lets the order-fulfilment saga take them to
/// their outcome (confirmed; cancelled for short stock; declined; payment timed out),
/// printing every step and each saga's log; then ships the confirmed one and reads the views.
/// Fails if anything does not behave.
pub async fn run(stack: &LocalStack) -> Result<()> {
    let client = Client {
        http: Http::new(&stack.api_url()),
        token: stack
            .gateway
            .auth()
            .issue("demo", "demo-user", "events:read events:write", 600),
    };
    let c = &client;
    let run = chrono::Utc::now().timestamp_millis();
    let (book, pen) = (format!("book-{run}"), format!("pen-{run}"));
    let timeout: u64 = stack
        .template
        .parameter("PaymentTimeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(900);
    println!(
        "\nDemo: stock, then four orders through {}",
        stack.api_url()
    );
    c.send("Inventory", &book, "ReceiveStock", json!({"quantity": 10}))
        .await?;
    c.send("Inventory", &pen, "ReceiveStock", json!({"quantity": 1}))
        .await?;
    let (ok, short, declined, late) = (
        format!("o-{run}-ok"),
        format!("o-{run}-short"),
        format!("o-{run}-declined"),
        format!("o-{run}-late"),
    );
    c.place(&ok, &[(&book, 2, 1250)], "card").await?;
    c.place(&short, &[(&book, 1, 1250), (&pen, 5, 300)], "card")
        .await?;
    c.place(&declined, &[(&book, 1, 1250)], "card_declined")
        .await?;
    c.place(&late, &[(&book, 1, 1250)], "bank_transfer").await?;

    println!("\nThe saga reserves stock, takes payment and confirms, or undoes what it did:");
    let quick = Duration::from_secs(60);
    let outcomes = [
        c.saga(&ok, quick).await?,
        c.saga(&short, quick).await?,
        c.saga(&declined, quick).await?,
    ];
    println!(
        "  waiting for {late}'s bank transfer: it times out after PaymentTimeoutSeconds={timeout} s, at the next tick of the saga's schedule"
    );
    let late_outcome = c.saga(&late, Duration::from_secs(timeout + 90)).await?;
    let paid_late = client
        .http
        .post(
            COMMANDS,
            Some(&client.token),
            &json!({"aggregate_type": "Payment", "aggregate_id": late, "type": "ReceivePayment", "data": {"amount": 1250}}),
        )
        .await?;
    println!(
        "  POST Payment/{late} ReceivePayment (too late) -> {} {}",
        paid_late.status, paid_late.json["rule"]
    );
    if outcomes != ["Confirmed", "Cancelled", "Cancelled"]
        || late_outcome != "Cancelled"
        || paid_late.status != 422
    {
        bail!("the sagas did not end as expected: {outcomes:?} {late_outcome}");
    }

    println!("\nShipping the confirmed order; the views follow:");
    c.send("Order", &ok, "ShipOrder", json!({"tracking_id": "TRK-1"}))
        .await?;
    let bad = client
        .http
        .post(COMMANDS, Some(&client.token), &json!({"aggregate_type": "Order", "aggregate_id": ok, "type": "AddItem", "data": {"sku": "x", "quantity": 1, "unit_price": 1}}))
        .await?;
    println!(
        "  POST AddItem after shipping        -> {} {}",
        bad.status, bad.json["type"]
    );
    if bad.status != 422 {
        bail!("an item was added to a shipped order");
    }
    // The read side: stream -> SNS FIFO -> SQS FIFO -> projector -> read models -> query API.
    let start = Instant::now();
    let view = c
        .until(
            &format!("/api/v1/events/queries/order-summary?order_id={ok}"),
            quick,
            |j| j["item"]["status"] == "Shipped",
        )
        .await?;
    println!(
        "  GET  queries/order-summary        -> status {} total {} ({} ms after the last command)",
        view["item"]["status"],
        view["item"]["total"],
        start.elapsed().as_millis()
    );
    // Compensation left nothing reserved: only the confirmed order's 2 books.
    let stock = c
        .until(
            &format!("/api/v1/events/queries/stock-levels?sku={book}"),
            quick,
            |j| j["item"]["reserved"] == 2,
        )
        .await?;
    println!("  GET  queries/stock-levels         -> {}", stock["item"]);
    let day = chrono::Utc::now().format("%Y-%m-%d");
    let sales = c
        .get(&format!("/api/v1/events/queries/daily-sales?day={day}"))
        .await?;
    println!(
        "  GET  queries/daily-sales          -> {}",
        sales.json["item"]
    );
    streaming(c).await?;
    println!("Demo done: four orders went to their outcome through the saga, one was shipped,");
    println!("and the views followed through the stream, SNS FIFO, SQS FIFO and the projector.");
    Ok(())
}

/// The streaming API: a record published to a default topic, consumed by a group (long poll,
/// auto-commit) and found in the history.
async fn streaming(c: &Client) -> Result<()> {
    println!("\nStreaming: publish, consume with a consumer group, history:");
    let run = chrono::Utc::now().timestamp_millis();
    let body = json!({"topic": "user-events", "event_type": "user.created", "key": format!("u-{run}"), "data": {"user_id": format!("u-{run}")}});
    let published = c
        .http
        .post("/api/v1/events/publish", Some(&c.token), &body)
        .await?;
    println!(
        "  POST publish user-events           -> {} partition {} offset {}",
        published.status, published.json["partition"], published.json["offset"]
    );
    let group = format!("demo-{run}");
    let consume = format!(
        "/api/v1/events/consume?topic=user-events&group_id={group}&max=100&wait_ms=2000&auto_commit=true"
    );
    let consumed = c.get(&consume).await?;
    let found = consumed.json["records"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["key"] == body["key"]);
    println!(
        "  GET  consume (group {group}) -> {} {} records",
        consumed.status,
        consumed.json["records"].as_array().map_or(0, Vec::len)
    );
    let history = c
        .get(&format!(
            "/api/v1/events/history?topic=user-events&key=u-{run}"
        ))
        .await?;
    println!(
        "  GET  history key=u-{run}     -> {} {} record",
        history.status,
        history.json["records"].as_array().map_or(0, Vec::len)
    );
    if published.status != 201
        || !found
        || history.json["records"].as_array().map(Vec::len) != Some(1)
    {
        bail!("the streaming API did not round-trip the record");
    }
    Ok(())
}
