//! What `eventfold local` prints, and the `--demo` walk through a real order.

use anyhow::{Result, bail};
use eventfold_local::LocalStack;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};

/// Prints where everything is and how to call it.
pub fn banner(stack: &LocalStack) {
    println!("eventfold local stack is up");
    println!("  AWS endpoint : {}", stack.endpoint);
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
}

/// Places a real order through the HTTP API, printing every step; fails if any step does.
pub async fn run(stack: &LocalStack) -> Result<()> {
    let http = Http::new(&stack.api_url());
    let token = stack
        .gateway
        .auth()
        .issue("demo", "demo-user", "events:read events:write", 600);
    let order = format!("o-{}", chrono::Utc::now().timestamp_millis());
    let sku = format!("sku-{order}");
    let steps: Vec<(&str, &str, &str, Value)> = vec![
        ("Inventory", &sku, "ReceiveStock", json!({"quantity": 10})),
        (
            "Order",
            &order,
            "CreateOrder",
            json!({"customer_id": "c-42"}),
        ),
        (
            "Order",
            &order,
            "AddItem",
            json!({"sku": sku, "quantity": 2, "unit_price": 1250}),
        ),
        (
            "Inventory",
            &sku,
            "ReserveStock",
            json!({"order_id": order, "quantity": 2}),
        ),
        ("Order", &order, "PlaceOrder", json!({})),
        (
            "Payment",
            &order,
            "AuthorizePayment",
            json!({"order_id": order, "amount": 2500, "method": "card"}),
        ),
        ("Order", &order, "ConfirmOrder", json!({})),
        (
            "Order",
            &order,
            "ShipOrder",
            json!({"tracking_id": "TRK-1"}),
        ),
    ];
    println!("\nDemo: placing order {order} through {}", stack.api_url());
    for (aggregate, id, command, data) in steps {
        let body =
            json!({"aggregate_type": aggregate, "aggregate_id": id, "type": command, "data": data});
        let reply = http
            .post("/api/v1/events/commands", Some(&token), &body)
            .await?;
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
    }
    let state = http
        .get(
            &format!("/api/v1/events/aggregates/Order/{order}"),
            Some(&token),
        )
        .await?;
    println!(
        "  GET  Order/{order} -> {} {}",
        state.status, state.json["state"]
    );
    let bad = http
        .post("/api/v1/events/commands", Some(&token), &json!({"aggregate_type": "Order", "aggregate_id": order, "type": "AddItem", "data": {"sku": "x", "quantity": 1, "unit_price": 1}}))
        .await?;
    println!(
        "  POST AddItem after shipping        -> {} {}",
        bad.status, bad.json["type"]
    );
    if state.status != 200 || bad.status != 422 {
        bail!("demo did not behave as expected");
    }
    // The read side: stream -> SNS FIFO -> SQS FIFO -> projector -> read models -> query API.
    let start = std::time::Instant::now();
    let view = loop {
        let q = http
            .get(
                &format!("/api/v1/events/queries/order-summary?order_id={order}"),
                Some(&token),
            )
            .await?;
        if q.status == 200 && q.json["item"]["status"] == "Shipped" {
            break q.json;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            bail!(
                "the order-summary view did not catch up within 60 s: {} {}",
                q.status,
                q.json
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    println!(
        "  GET  queries/order-summary        -> status {} total {} ({} ms after the last command)",
        view["item"]["status"],
        view["item"]["total"],
        start.elapsed().as_millis()
    );
    let stock = http
        .get(
            &format!("/api/v1/events/queries/stock-levels?sku={sku}"),
            Some(&token),
        )
        .await?;
    println!(
        "  GET  queries/stock-levels         -> {}",
        stock.json["item"]
    );
    let day = chrono::Utc::now().format("%Y-%m-%d");
    let sales = http
        .get(
            &format!("/api/v1/events/queries/daily-sales?day={day}"),
            Some(&token),
        )
        .await?;
    println!(
        "  GET  queries/daily-sales          -> {}",
        sales.json["item"]
    );
    println!("Demo done: the order went through create, items, stock, payment, confirm and ship,");
    println!("and the views followed through the stream, SNS FIFO, SQS FIFO and the projector.");
    Ok(())
}
