//! Eventfold's reference domain: a small shop with three aggregates, the saga that fulfils
//! its orders, and its read models.
//!
//! Owns the business rules of [`order`] (an order's lines and life cycle), [`inventory`]
//! (stock of one SKU and the reservations held against it), [`payment`] (authorising,
//! receiving, voiding and refunding the payment of one order) and [`fulfilment`] (the
//! order-fulfilment saga: reserve, pay, confirm, and compensate on failure, as an aggregate
//! whose commands are its inputs). Each module has the same shape: commands (serde enums,
//! parsed from a type name and JSON data by its `parse_command`, see [`command`]),
//! past-tense events (the storage format), a state folded from those events and a pure
//! `decide` that returns the events that carry a command out, no events when it was already
//! done, or the [`Rejection`] of the rule it breaks. [`views`] holds the read-model
//! projections.
//!
//! [`registry`] is the one list of the aggregates (and, through [`views`] and [`upcast`], of
//! the views and upcasters): the functions and the CLI find aggregates by category and views
//! by name there and never name a shop type themselves. The modules it lists never import it.
//! Nothing in `shop` knows HTTP: request parsing, query parameters and which commands
//! clients may send are the APIs' (functions/command-api, functions/query-api).
//!
//! Pure and synchronous. Must not import: any AWS crate, `lambda_*`, tokio or any other
//! async runtime, clocks, randomness, or anything else that does I/O. The only framework
//! it depends on is `eventfold` (for the [`Aggregate`] and [`DomainEvent`] traits).
//!
//! Money is always an integer amount of minor units (cents) in an `i64`; quantities are
//! `i64` too, so that a negative input reaches `decide` and becomes a rejection instead of
//! a parse error. All sums use checked arithmetic in `decide` (overflow is a rejection) and
//! saturating arithmetic in `evolve` (folding never panics).
//!
//! ```
//! use eventfold::testing::given;
//! use shop::order::{Order, OrderCommand, OrderEvent};
//!
//! let command = shop::order::parse_command(
//!     "AddItem",
//!     serde_json::json!({"sku": "apple", "quantity": 2, "unit_price": 150}),
//! )
//! .expect("valid command");
//! given::<Order>([OrderEvent::OrderCreated { customer_id: "c-1".into() }])
//!     .when(command)
//!     .then([OrderEvent::ItemAdded { sku: "apple".into(), quantity: 2, unit_price: 150 }]);
//! given::<Order>([])
//!     .when(OrderCommand::PlaceOrder { payment_method: None })
//!     .then_rejected("order-not-created");
//! ```
#![forbid(unsafe_code)]

pub mod command;
pub mod fulfilment;
pub mod inventory;
pub mod order;
pub mod payment;
pub mod registry;
pub mod upcast;
pub mod views;

pub use command::{CommandParseError, RegisteredAggregate};
pub use eventfold::{Aggregate, DomainEvent, Rejection};
pub use fulfilment::OrderFulfilment;
pub use inventory::Inventory;
pub use order::Order;
pub use payment::Payment;

/// Longest id-like field (a customer id, a sku, a tracking id, an order id, a payment
/// method): what stream ids, index keys and the query API's parameters take, so every view
/// can store and find what the write side accepts.
pub const MAX_KEY_LEN: usize = 128;

/// Longest free-text field (a cancel reason), well inside any read model's item.
pub const MAX_TEXT_LEN: usize = 500;

/// A rejection by `rule` unless `value` is 1 to [`MAX_KEY_LEN`] characters of
/// `A-Z a-z 0-9 _ . : -` (the characters of a stream id's id).
pub(crate) fn require_key(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    let ok = (1..=MAX_KEY_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Rejection::new(
            rule,
            format!("{what} must be 1-{MAX_KEY_LEN} characters of A-Z a-z 0-9 _ . : -"),
        ))
    }
}

/// A rejection by `rule` when `value` is longer than [`MAX_TEXT_LEN`] characters.
pub(crate) fn require_short(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    if value.chars().count() > MAX_TEXT_LEN {
        Err(Rejection::new(
            rule,
            format!("{what} must be at most {MAX_TEXT_LEN} characters"),
        ))
    } else {
        Ok(())
    }
}

/// A rejection unless `value` has at least one non-whitespace character.
pub(crate) fn require_text(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        Err(Rejection::new(rule, format!("{what} must not be empty")))
    } else {
        Ok(())
    }
}
