//! The registry: aggregates by category (visitor), views by name. (How clients command the
//! aggregates and query the views is the APIs': their tests hold those assertions.)

use serde_json::json;
use shop::registry::{self, AggregateVisitor, CATEGORIES, RegisteredAggregate, VIEWS, ViewImpl};
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
        [
            "Order",
            "Inventory",
            "Payment",
            "OrderFulfilment",
            "Customer"
        ]
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

#[test]
fn the_saga_is_registered_but_takes_no_external_commands() {
    assert_eq!(
        registry::EXTERNAL_CATEGORIES,
        ["Order", "Inventory", "Payment", "Customer"]
    );
    assert_eq!(
        registry::aggregate("OrderFulfilment"),
        Ok("OrderFulfilment")
    );
    struct Accepts;
    impl AggregateVisitor for Accepts {
        type Output = bool;
        fn visit<A: RegisteredAggregate>(self) -> bool {
            A::ACCEPTS_EXTERNAL_COMMANDS
        }
    }
    assert_eq!(registry::visit("OrderFulfilment", Accepts), Ok(false));
    for category in registry::EXTERNAL_CATEGORIES {
        assert_eq!(registry::visit(category, Accepts), Ok(true), "{category}");
    }
    // The system can build its inputs (clients cannot: the command API refuses them).
    let timed_out = json!({"at": "2024-03-01T09:30:00Z"});
    let (_, internal) =
        registry::visit("OrderFulfilment", probe("TimedOut", timed_out)).expect("registered");
    assert!(internal.expect("parses").starts_with("TimedOut"));
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
                 OrderFulfilment, Customer"
            )
        );
        assert_eq!(registry::aggregate(unknown), Err(err));
    }
}

#[test]
fn views_are_found_by_name() {
    let names: Vec<&str> = VIEWS.iter().map(|v| v.name).collect();
    assert_eq!(
        names,
        [
            "order-summary",
            "orders-by-customer",
            "stock-levels",
            "daily-sales",
            "customers"
        ]
    );
    assert_eq!(
        registry::view_names(),
        "order-summary, orders-by-customer, stock-levels, daily-sales, customers"
    );
    let by_customer = registry::view(views::ORDERS_BY_CUSTOMER).expect("registered");
    assert_eq!(by_customer.stored(), views::ORDER_SUMMARY);
    assert_eq!(by_customer.category(), "Order");
    let sales = registry::view(views::DAILY_SALES).expect("registered");
    assert!(matches!(sales.view, ViewImpl::Counter(_)));
    let stock = registry::view(views::STOCK_LEVELS).expect("registered");
    assert_eq!(
        (stock.stored(), stock.category()),
        ("stock-levels", "Inventory")
    );
    assert!(registry::view("order_summary").is_none());
    assert!(registry::view("").is_none());
}

#[test]
fn every_stored_view_is_projected_once() {
    let stored: Vec<&str> = registry::stored_views().map(ViewImpl::name).collect();
    assert_eq!(
        stored,
        ["order-summary", "stock-levels", "daily-sales", "customers"]
    );
    let streams: Vec<String> = views::stream_views()
        .iter()
        .map(|v| v.name().to_owned())
        .collect();
    let counters: Vec<String> = views::counter_views()
        .iter()
        .map(|v| v.name().to_owned())
        .collect();
    assert_eq!(streams, ["order-summary", "stock-levels", "customers"]);
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
        assert!(views::parse_day(not_a_day).is_none(), "{not_a_day:?}");
    }
}
