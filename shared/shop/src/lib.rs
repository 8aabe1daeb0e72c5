//! Eventfold's reference domain: a small shop with four aggregates, the saga that fulfils
//! its orders, and its read models.
//!
//! Owns the business rules of [`order`] (an order's lines and life cycle), [`inventory`]
//! (stock of one SKU and the reservations held against it), [`payment`] (authorising,
//! receiving, voiding and refunding the payment of one order) and [`fulfilment`] (the
//! order-fulfilment saga: reserve, pay, confirm, and compensate on failure, as an aggregate
//! whose commands are its inputs) and [`customer`] (who orders, with personal data that is
//! sealed per data subject and can be forgotten). Each module has the same shape: commands (serde enums,
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
//! Domain values have types ([`values`]): order, customer, SKU and tracking ids are checked
//! once, when they are made or read, against the one id rule of stream ids, so a command
//! that carries one is already valid (a bad one is refused when the command is parsed, with
//! the same rejection `decide` gave before); [`Money`] is an integer amount of minor units
//! (cents). They are stored as the bare string or integer, as before they had types. Money
//! and quantities take any integer, so that a negative input reaches `decide` and becomes
//! a rejection instead of a parse error. All sums use checked arithmetic in `decide`
//! (overflow is a rejection) and saturating arithmetic in `evolve` (folding never panics).
//!
//! ```
//! use eventfold_testkit::given;
//! use shop::order::{Order, OrderCommand, OrderEvent};
//! use shop::{CustomerId, Money, Sku};
//!
//! let command = shop::order::parse_command(
//!     "AddItem",
//!     serde_json::json!({"sku": "apple", "quantity": 2, "unit_price": 150}),
//! )
//! .expect("valid command");
//! let customer_id = CustomerId::new("c-1").expect("an id");
//! let sku = Sku::new("apple").expect("a sku");
//! given::<Order>([OrderEvent::OrderCreated { customer_id }])
//!     .when(command)
//!     .then([OrderEvent::ItemAdded { sku, quantity: 2, unit_price: Money::from_minor(150) }]);
//! given::<Order>([])
//!     .when(OrderCommand::PlaceOrder { payment_method: None })
//!     .then_rejected("order-not-created");
//! ```
#![forbid(unsafe_code)]

pub mod command;
pub mod customer;
pub mod fulfilment;
pub mod inventory;
pub mod order;
pub mod payment;
pub mod registry;
pub mod upcast;
pub mod values;
pub mod views;

pub use command::{CommandParseError, RegisteredAggregate};
pub use customer::Customer;
pub use eventfold::{Aggregate, DomainEvent, Rejection};
pub use fulfilment::OrderFulfilment;
pub use inventory::Inventory;
pub use order::Order;
pub use payment::Payment;
pub use values::{CustomerId, MAX_KEY_LEN, MAX_TEXT_LEN, Money, OrderId, Sku, TrackingId};
