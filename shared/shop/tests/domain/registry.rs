//! The registry: aggregates by category (visitor), views by name, parameter formats.

use serde_json::json;
use shop::registry::{
    self, AggregateVisitor, CATEGORIES, ParamFormat, RegisteredAggregate, VIEWS, ViewImpl,
};
use shop::views;

/// Reports which aggregate it was run with, and parses a command there.
struct Probe<'a> {
    command_type: &'a str,
    data: serde_json::Value,
}

impl AggregateVisitor for Probe<'_> {
    type Output = (&'static str, Result<String, shop::CommandParseError>);

    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        let parsed = A::parse_command(self.command_type, self.data).map(|c| format!("{c:?}"));
        (A::CATEGORY, parsed)
    }
}

fn probe(command_type: &str, data: serde_json::Value) -> Probe<'_> {
    Probe { command_type, data }
}

#[test]
fn every_category_visits_its_own_aggregate() {
    assert_eq!(
        CATEGORIES,
        ["Order", "Inventory", "Payment", "OrderFulfilment"]
    );
    for category in CATEGORIES {
        let (visited, _) = registry::visit(category, probe("x", json!({}))).expect("registered");
        assert_eq!(visited, *category);
        assert_eq!(registry::aggregate(category), Ok(*category));
    }
}

#[test]
fn a_visit_parses_the_command_of_that_aggregate() {
    let (_, order) = registry::visit("Order", probe("CreateOrder", json!({"customer_id": "c"})))
        .expect("registered");
    assert_eq!(
        order.expect("parses"),
        r#"CreateOrder { customer_id: "c" }"#
    );
    let (_, stock) = registry::visit("Inventory", probe("ReceiveStock", json!({"quantity": 3})))
        .expect("registered");
    assert_eq!(stock.expect("parses"), "ReceiveStock { quantity: 3 }");
    let (_, wrong) = registry::visit("Payment", probe("CreateOrder", json!({"customer_id": "c"})))
        .expect("registered");
    match wrong {
        Err(shop::CommandParseError::UnknownType(m)) => {
            assert!(m.contains("not a Payment command"), "{m}");
            assert!(m.contains("AuthorizePayment, RefundPayment"), "{m}");
        }
        other => panic!("expected an unknown type, got {other:?}"),
    }
}

/// Parses a command as `POST /commands` does.
struct HttpProbe<'a> {
    command_type: &'a str,
    data: serde_json::Value,
}

impl AggregateVisitor for HttpProbe<'_> {
    type Output = (bool, Result<String, shop::CommandParseError>);

    fn visit<A: RegisteredAggregate>(self) -> Self::Output {
        let parsed = A::parse_http_command(self.command_type, self.data).map(|c| format!("{c:?}"));
        (A::ACCEPTS_HTTP_COMMANDS, parsed)
    }
}

#[test]
fn the_saga_is_registered_but_takes_no_commands_over_http() {
    assert_eq!(registry::HTTP_CATEGORIES, ["Order", "Inventory", "Payment"]);
    assert_eq!(
        registry::aggregate("OrderFulfilment"),
        Ok("OrderFulfilment")
    );
    let timed_out = json!({"at": "2024-03-01T09:30:00Z"});
    // The system can build its inputs ...
    let (_, internal) = registry::visit("OrderFulfilment", probe("TimedOut", timed_out.clone()))
        .expect("registered");
    assert!(internal.expect("parses").starts_with("TimedOut"));
    // ... clients cannot, whatever the type.
    for command_type in ["TimedOut", "OrderPlaced", "Nope"] {
        let http = HttpProbe {
            command_type,
            data: timed_out.clone(),
        };
        let (accepts, parsed) = registry::visit("OrderFulfilment", http).expect("registered");
        assert!(!accepts);
        match parsed {
            Err(shop::CommandParseError::UnknownType(m)) => {
                assert!(
                    m.contains("OrderFulfilment accepts no commands over HTTP"),
                    "{m}"
                );
                assert!(m.contains(command_type), "{m}");
            }
            other => panic!("expected an unknown type, got {other:?}"),
        }
    }
    // Every other aggregate parses over HTTP exactly as it does inside.
    for category in registry::HTTP_CATEGORIES {
        let http = HttpProbe {
            command_type: "ReceiveStock",
            data: json!({"quantity": 3}),
        };
        let (accepts, parsed) = registry::visit(category, http).expect("registered");
        let (_, inside) = registry::visit(category, probe("ReceiveStock", json!({"quantity": 3})))
            .expect("registered");
        assert!(accepts);
        assert_eq!(parsed, inside);
    }
}

#[test]
fn unknown_categories_are_refused_with_the_known_list() {
    for unknown in ["Nope", "order", "", "Order "] {
        let err = registry::visit(unknown, probe("x", json!({}))).expect_err("not registered");
        assert_eq!(err.category, unknown);
        assert_eq!(
            err.to_string(),
            format!(
                "unknown aggregate type '{unknown}'; known: Order, Inventory, Payment, \
                 OrderFulfilment"
            )
        );
        assert_eq!(registry::aggregate(unknown), Err(err));
    }
}

#[test]
fn views_are_found_by_url_name_with_their_query_shape() {
    let names: Vec<&str> = VIEWS.iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        [
            "order-summary",
            "orders-by-customer",
            "stock-levels",
            "daily-sales"
        ]
    );
    assert_eq!(
        registry::view_names(),
        "order-summary, orders-by-customer, stock-levels, daily-sales"
    );
    let by_customer = registry::view(views::ORDERS_BY_CUSTOMER).expect("registered");
    assert_eq!(by_customer.stored(), views::ORDER_SUMMARY);
    assert_eq!(by_customer.category(), "Order");
    assert_eq!(by_customer.key, None);
    assert_eq!(by_customer.partition.map(|p| p.name), Some("customer_id"));
    assert_eq!(by_customer.key_field, "order_id");
    let sales = registry::view(views::DAILY_SALES).expect("registered");
    assert_eq!(
        sales.key.map(|p| (p.name, p.format)),
        Some(("day", ParamFormat::Day))
    );
    assert!(matches!(sales.view, ViewImpl::Counter(_)));
    let stock = registry::view(views::STOCK_LEVELS).expect("registered");
    assert_eq!(
        (stock.stored(), stock.category()),
        ("stock-levels", "Inventory")
    );
    assert_eq!(
        stock.key.map(|p| (p.name, p.format)),
        Some(("sku", ParamFormat::Id))
    );
    assert!(registry::view("order_summary").is_none());
    assert!(registry::view("").is_none());
}

#[test]
fn every_stored_view_is_projected_once() {
    let stored: Vec<&str> = registry::stored_views().map(ViewImpl::name).collect();
    assert_eq!(stored, ["order-summary", "stock-levels", "daily-sales"]);
    let streams: Vec<String> = views::stream_views()
        .iter()
        .map(|v| v.name().to_owned())
        .collect();
    let counters: Vec<String> = views::counter_views()
        .iter()
        .map(|v| v.name().to_owned())
        .collect();
    assert_eq!(streams, ["order-summary", "stock-levels"]);
    assert_eq!(counters, ["daily-sales"]);
    for spec in VIEWS {
        assert!(
            registry::stored_view(spec.stored()).is_some(),
            "{}",
            spec.name
        );
        assert!(
            CATEGORIES.contains(&spec.category()),
            "{} reads an unregistered category",
            spec.name
        );
        assert!(
            spec.key.is_some() != spec.partition.is_some(),
            "{}: a lookup or an index, not both",
            spec.name
        );
    }
    assert!(registry::stored_view(views::ORDERS_BY_CUSTOMER).is_none());
    assert_eq!(
        registry::stored_view(views::DAILY_SALES).map(ViewImpl::category),
        Some("Order")
    );
}

#[test]
fn days_are_real_calendar_dates_written_exactly() {
    for day in ["2024-02-29", "2023-12-31", "0001-01-01", "9999-12-31"] {
        assert!(ParamFormat::Day.accepts(day), "{day}");
        assert_eq!(
            views::parse_day(day).map(|d| d.format(views::DAY_FORMAT).to_string()),
            Some(day.to_owned())
        );
    }
    for not_a_day in [
        "2024-02-31",
        "2023-02-29",
        "2024-04-31",
        "2024-13-01",
        "2024-00-10",
        "2024-01-00",
        "2024-1-05",
        "2024-01-5",
        "02024-1-01",
        "+2024-1-01",
        "2024/01/05",
        "20240105",
        " 2024-01-05",
        "2024-01-05 ",
        "yesterday",
        "",
    ] {
        assert!(!ParamFormat::Day.accepts(not_a_day), "{not_a_day:?}");
        assert!(views::parse_day(not_a_day).is_none(), "{not_a_day:?}");
    }
}

#[test]
fn ids_are_short_and_plain() {
    for id in ["o-1", "sku.2:a_b", &"x".repeat(128)] {
        assert!(ParamFormat::Id.accepts(id), "{id}");
    }
    for not_an_id in ["", "bad id", "a/b", "ü", &"x".repeat(129)] {
        assert!(!ParamFormat::Id.accepts(not_an_id), "{not_an_id:?}");
    }
}
