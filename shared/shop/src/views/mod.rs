//! Read models of the shop: pure projections of its events, no I/O.
//!
//! | view | kind | source | one document per | key |
//! |---|---|---|---|---|
//! | [`ORDER_SUMMARY`] | [`StreamView`] | `Order` | order | order id |
//! | [`STOCK_LEVELS`] | [`StreamView`] | `Inventory` | SKU | SKU |
//! | [`DAILY_SALES`] | [`CounterView`] | `Order` | UTC day | `YYYY-MM-DD` ([`DAY_FORMAT`]) |
//! | [`CUSTOMERS`] | [`StreamView`] | `Customer` | customer | customer id |
//!
//! `customers` is the only view that copies personal data; `order-summary` and
//! `orders-by-customer` show a customer's name and email by a query-time [`Join`] with it
//! (the `customers` module says why), so a forget scrubs one document.
//!
//! `order-summary` documents carry the list index [`ORDERS_BY_CUSTOMER`]: partition = the
//! customer id, sort = `{created_at}#{order_id}`, so a customer's orders list newest first.
//!
//! Every view decodes events into the shop's event enums. An event type the view does not
//! know (a newer event of the category) is ignored, so old views keep working while the
//! domain grows; a known event type whose data does not decode is an error (the
//! notification is not acknowledged and is retried until the data or the view is fixed).
//!
//! Times are the envelope's `occurred_at` in UTC, written as RFC 3339 with a fixed six
//! digit fraction (`2024-03-01T09:30:00.000000Z`) so that they also sort as text.
//!
//! Which views are served, by which name, is [`VIEWS`] (the registry's list of views; how a
//! view is queried over HTTP is the query API's); [`projector`] wires every stored view into
//! an [`eventfold_consumers::projection::Projector`].

use crate::command::RegisteredAggregate;
use crate::inventory::{Inventory, InventoryEvent};
use crate::order::{Order, OrderEvent, OrderStatus};
use crate::upcast::upcasters;
use crate::values::{CustomerId, Money, OrderId, Sku, TrackingId};
use chrono::NaiveDate;
use eventfold::{Aggregate, DomainEvent, EventEnvelope, EventStore, StreamId};
use eventfold_consumers::projection::{
    ApplyError, Contribution, CounterView, Projector, ReadModelStore, StreamView,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

mod customers;
pub use customers::{CUSTOMER_JOIN, CUSTOMERS, CustomerDoc, Customers, Join};

/// Name of the per-order summary view ([`OrderSummary`]).
pub const ORDER_SUMMARY: &str = "order-summary";

/// Name of the list index of [`ORDER_SUMMARY`]: partition = `customer_id`, sort =
/// `{created_at}#{order_id}`, listed newest first. It is not a view of its own: list it with
/// `ListQuery { index: Some(customer_id), .. }` over the `order-summary` view.
pub const ORDERS_BY_CUSTOMER: &str = "orders-by-customer";

/// Name of the per-SKU stock view ([`StockLevels`]).
pub const STOCK_LEVELS: &str = "stock-levels";

/// Name of the per-day sales counters ([`DailySales`]).
pub const DAILY_SALES: &str = "daily-sales";

/// Format of a `daily-sales` key: a UTC day, `YYYY-MM-DD`.
pub const DAY_FORMAT: &str = "%Y-%m-%d";

/// The calendar day `value` names, when it is exactly `YYYY-MM-DD` (ten characters, a real
/// date: `2024-02-30` is none). chrono alone would also take `2024-2-5` or a five-digit
/// year, which are not keys this view writes, so the day must format back to `value`.
pub fn parse_day(value: &str) -> Option<NaiveDate> {
    if value.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(value, DAY_FORMAT)
        .ok()
        .filter(|day| day.format(DAY_FORMAT).to_string() == value)
}

/// `occurred_at` as fixed-width RFC 3339 (UTC, microseconds), sortable as text.
fn timestamp(env: &EventEnvelope) -> String {
    env.occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The event of `env` when its type is one of `known`; `None` for other types; an error
/// when a known type's data does not decode.
fn decode_known<T: DomainEvent>(
    env: &EventEnvelope,
    known: &[&str],
) -> Result<Option<T>, ApplyError> {
    if !known.contains(&env.event_type.as_str()) {
        return Ok(None);
    }
    Ok(Some(T::decode(&env.event_type, &env.data)?))
}

/// Reads a stored document back into its typed form.
fn read_doc<T: for<'de> Deserialize<'de>>(view: &str, doc: Value) -> Result<T, ApplyError> {
    serde_json::from_value(doc).map_err(|source| ApplyError::Document {
        view: view.to_owned(),
        source,
    })
}

/// Writes a typed document.
fn write_doc<T: Serialize>(view: &str, doc: &T) -> Result<Value, ApplyError> {
    serde_json::to_value(doc).map_err(|source| ApplyError::Encode {
        view: view.to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// order-summary
// ---------------------------------------------------------------------------------------------

/// One line of an [`OrderSummaryDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummaryLine {
    /// The stock keeping unit.
    pub sku: Sku,
    /// Units ordered.
    pub quantity: i64,
    /// Price of one unit.
    pub unit_price: Money,
    /// `quantity × unit_price` (saturating).
    pub amount: Money,
}

/// The document of [`OrderSummary`] (one per order), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummaryDoc {
    /// The order id (the stream's id).
    pub order_id: OrderId,
    /// The customer the order belongs to.
    pub customer_id: CustomerId,
    /// `Draft`, `Placed`, `Confirmed`, `Shipped` or `Cancelled`.
    pub status: OrderStatus,
    /// The lines, sorted by sku.
    pub lines: Vec<OrderSummaryLine>,
    /// Sum of the line amounts while a draft; the placed total once placed.
    pub total: Money,
    /// The carrier's tracking id once shipped.
    pub tracking_id: Option<TrackingId>,
    /// Why the order was cancelled, once cancelled.
    pub cancel_reason: Option<String>,
    /// Version of the last event applied to the document.
    pub version: u64,
    /// When the order was created (RFC 3339, UTC).
    pub created_at: String,
    /// When the last applied event occurred (RFC 3339, UTC).
    pub updated_at: String,
    /// When the order was placed, once placed (RFC 3339, UTC).
    pub placed_at: Option<String>,
}

impl OrderSummaryDoc {
    fn recompute_total(&mut self) {
        self.total = self
            .lines
            .iter()
            .fold(Money::ZERO, |sum, line| sum.saturating_add(line.amount));
    }
}

/// `order-summary`: the current shape of each order (status, lines, total, tracking id,
/// cancel reason, timestamps), keyed by order id and indexed by customer
/// ([`ORDERS_BY_CUSTOMER`]).
///
/// The document is created by `OrderCreated`; any other order event on an order without a
/// document is an error (the history is not a valid order stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderSummary;

impl StreamView for OrderSummary {
    fn name(&self) -> &str {
        ORDER_SUMMARY
    }

    fn category(&self) -> &str {
        Order::CATEGORY
    }

    fn apply(&self, doc: Option<Value>, env: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        let Some(event) = decode_known::<OrderEvent>(env, Order::EVENT_TYPES)? else {
            return Ok(doc);
        };
        let now = timestamp(env);
        let mut summary = match (doc, &event) {
            (Some(doc), _) => read_doc::<OrderSummaryDoc>(ORDER_SUMMARY, doc)?,
            (None, OrderEvent::OrderCreated { customer_id }) => {
                let stream = StreamId::parse(&env.stream_id)?;
                OrderSummaryDoc {
                    order_id: OrderId::of_stream(&stream),
                    customer_id: customer_id.clone(),
                    status: OrderStatus::Draft,
                    lines: Vec::new(),
                    total: Money::ZERO,
                    tracking_id: None,
                    cancel_reason: None,
                    version: 0,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                    placed_at: None,
                }
            }
            (None, _) => {
                return Err(ApplyError::Invalid(format!(
                    "{} before OrderCreated",
                    env.event_type
                )));
            }
        };
        match event {
            OrderEvent::OrderCreated { customer_id } => {
                summary.customer_id = customer_id;
                summary.status = OrderStatus::Draft;
            }
            OrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
            } => {
                let at = summary.lines.binary_search_by(|line| line.sku.cmp(&sku));
                let line = match at {
                    Ok(i) => &mut summary.lines[i],
                    Err(i) => {
                        summary.lines.insert(
                            i,
                            OrderSummaryLine {
                                sku,
                                quantity: 0,
                                unit_price,
                                amount: Money::ZERO,
                            },
                        );
                        &mut summary.lines[i]
                    }
                };
                line.quantity = line.quantity.saturating_add(quantity);
                line.unit_price = unit_price;
                line.amount = line.unit_price.saturating_times(line.quantity);
                summary.recompute_total();
            }
            OrderEvent::ItemRemoved { sku } => {
                summary.lines.retain(|line| line.sku != sku);
                summary.recompute_total();
            }
            OrderEvent::OrderPlaced { total, .. } => {
                summary.status = OrderStatus::Placed;
                summary.total = total;
                summary.placed_at = Some(now.clone());
            }
            OrderEvent::OrderConfirmed {} => summary.status = OrderStatus::Confirmed,
            OrderEvent::OrderShipped { tracking_id } => {
                summary.status = OrderStatus::Shipped;
                summary.tracking_id = Some(tracking_id);
            }
            OrderEvent::OrderCancelled { reason } => {
                summary.status = OrderStatus::Cancelled;
                summary.cancel_reason = Some(reason);
            }
        }
        summary.version = env.version;
        summary.updated_at = now;
        write_doc(ORDER_SUMMARY, &summary).map(Some)
    }

    /// `(customer_id, "{created_at}#{order_id}")`: the [`ORDERS_BY_CUSTOMER`] index.
    fn index(&self, doc: &Value) -> Option<(String, String)> {
        let customer = doc.get("customer_id")?.as_str()?;
        let created_at = doc.get("created_at")?.as_str()?;
        let order_id = doc.get("order_id")?.as_str()?;
        Some((customer.to_owned(), format!("{created_at}#{order_id}")))
    }
}

// ---------------------------------------------------------------------------------------------
// stock-levels
// ---------------------------------------------------------------------------------------------

/// The document of [`StockLevels`] (one per SKU), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevelDoc {
    /// The SKU (the stream's id).
    pub sku: Sku,
    /// Units in stock, reserved or not.
    pub on_hand: i64,
    /// Units reserved by orders.
    pub reserved: i64,
    /// `on_hand − reserved`.
    pub available: i64,
    /// Version of the last event applied to the document.
    pub version: u64,
    /// When the last applied event occurred (RFC 3339, UTC).
    pub updated_at: String,
}

/// `stock-levels`: on hand, reserved and available units of each SKU, keyed by SKU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockLevels;

impl StreamView for StockLevels {
    fn name(&self) -> &str {
        STOCK_LEVELS
    }

    fn category(&self) -> &str {
        Inventory::CATEGORY
    }

    fn apply(&self, doc: Option<Value>, env: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        let Some(event) = decode_known::<InventoryEvent>(env, Inventory::EVENT_TYPES)? else {
            return Ok(doc);
        };
        let mut level = match doc {
            Some(doc) => read_doc::<StockLevelDoc>(STOCK_LEVELS, doc)?,
            None => {
                let stream = StreamId::parse(&env.stream_id)?;
                StockLevelDoc {
                    sku: Sku::of_stream(&stream),
                    on_hand: 0,
                    reserved: 0,
                    available: 0,
                    version: 0,
                    updated_at: String::new(),
                }
            }
        };
        match event {
            InventoryEvent::StockReceived { quantity } => {
                level.on_hand = level.on_hand.saturating_add(quantity);
            }
            InventoryEvent::StockReserved { quantity, .. } => {
                level.reserved = level.reserved.saturating_add(quantity);
            }
            InventoryEvent::StockReleased { quantity, .. } => {
                level.reserved = level.reserved.saturating_sub(quantity);
            }
        }
        level.available = level.on_hand.saturating_sub(level.reserved);
        level.version = env.version;
        level.updated_at = timestamp(env);
        write_doc(STOCK_LEVELS, &level).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// daily-sales
// ---------------------------------------------------------------------------------------------

/// `daily-sales`: per UTC day of `OrderPlaced` (`YYYY-MM-DD`), the counters
/// `{"orders": <orders placed>, "revenue": <sum of their totals>}`. Other order events
/// contribute nothing (a later cancellation does not un-count the sale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DailySales;

impl CounterView for DailySales {
    fn name(&self) -> &str {
        DAILY_SALES
    }

    fn category(&self) -> &str {
        Order::CATEGORY
    }

    fn contribution(&self, env: &EventEnvelope) -> Result<Contribution, ApplyError> {
        match decode_known::<OrderEvent>(env, Order::EVENT_TYPES)? {
            Some(OrderEvent::OrderPlaced { total, .. }) => {
                let day = env.occurred_at.format(DAY_FORMAT).to_string();
                let deltas = BTreeMap::from([
                    ("orders".to_owned(), 1),
                    ("revenue".to_owned(), total.minor()),
                ]);
                Ok(Some((day, deltas)))
            }
            _ => Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wiring
// ---------------------------------------------------------------------------------------------

/// A view's implementation: a document per stream, or counters summed over streams.
#[derive(Clone, Copy)]
pub enum ViewImpl {
    /// One document per source stream.
    Stream(&'static dyn StreamView),
    /// Counter documents that many streams add to.
    Counter(&'static dyn CounterView),
}

impl ViewImpl {
    /// The stored view's name (what the projector writes and the read-model store keys).
    pub fn name(self) -> &'static str {
        match self {
            Self::Stream(v) => v.name(),
            Self::Counter(v) => v.name(),
        }
    }

    /// The category of the streams the view is fed from.
    pub fn category(self) -> &'static str {
        match self {
            Self::Stream(v) => v.category(),
            Self::Counter(v) => v.category(),
        }
    }
}

impl fmt::Debug for ViewImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Stream(_) => "Stream",
            Self::Counter(_) => "Counter",
        };
        f.debug_tuple(kind).field(&self.name()).finish()
    }
}

/// A view as it is served (`GET /queries/{name}`). Several rows may read one stored view (an
/// index is a row of its own).
#[derive(Debug, Clone, Copy)]
pub struct ViewSpec {
    /// The name it is served under.
    pub name: &'static str,
    /// The view that builds the documents.
    pub view: ViewImpl,
    /// Another view's fields the answered documents gain at query time, if any.
    pub join: Option<Join>,
}

impl ViewSpec {
    /// The stored view it reads.
    pub fn stored(&self) -> &'static str {
        self.view.name()
    }

    /// The category of the streams its documents are built from.
    pub fn category(&self) -> &'static str {
        self.view.category()
    }
}

/// Every view the shop serves, in the order they are listed to callers.
pub const VIEWS: &[ViewSpec] = &[
    ViewSpec {
        name: ORDER_SUMMARY,
        view: ViewImpl::Stream(&OrderSummary),
        join: Some(CUSTOMER_JOIN),
    },
    ViewSpec {
        name: ORDERS_BY_CUSTOMER,
        view: ViewImpl::Stream(&OrderSummary),
        join: Some(CUSTOMER_JOIN),
    },
    ViewSpec {
        name: STOCK_LEVELS,
        view: ViewImpl::Stream(&StockLevels),
        join: None,
    },
    ViewSpec {
        name: DAILY_SALES,
        view: ViewImpl::Counter(&DailySales),
        join: None,
    },
    ViewSpec {
        name: CUSTOMERS,
        view: ViewImpl::Stream(&Customers),
        join: None,
    },
];

/// The view served as `name`.
pub fn view(name: &str) -> Option<&'static ViewSpec> {
    VIEWS.iter().find(|v| v.name == name)
}

/// The names of [`VIEWS`], comma separated (for "known: .." messages).
pub fn view_names() -> String {
    VIEWS.iter().map(|v| v.name).collect::<Vec<_>>().join(", ")
}

/// Every stored view once (the first row that reads it), in [`VIEWS`] order: what a
/// projector must maintain.
pub fn stored_views() -> impl Iterator<Item = ViewImpl> {
    VIEWS.iter().enumerate().filter_map(|(i, spec)| {
        let first = VIEWS[..i]
            .iter()
            .all(|earlier| earlier.stored() != spec.stored());
        first.then_some(spec.view)
    })
}

/// The stored view named `name` (not a served name: `orders-by-customer` is not stored).
pub fn stored_view(name: &str) -> Option<ViewImpl> {
    stored_views().find(|v| v.name() == name)
}

/// A registered view shared with a projector (which owns its views as `Arc`s): wrap a
/// [`ViewImpl`]'s `&'static` view to give it to one (e.g. behind a version's name).
pub struct Registered<V: ?Sized + 'static>(pub &'static V);

impl StreamView for Registered<dyn StreamView> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn category(&self) -> &str {
        self.0.category()
    }
    fn apply(&self, doc: Option<Value>, env: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        self.0.apply(doc, env)
    }
    fn index(&self, doc: &Value) -> Option<(String, String)> {
        self.0.index(doc)
    }
}

impl CounterView for Registered<dyn CounterView> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn category(&self) -> &str {
        self.0.category()
    }
    fn contribution(&self, env: &EventEnvelope) -> Result<Contribution, ApplyError> {
        self.0.contribution(env)
    }
}

/// The shop's per-stream views (the stream views of [`VIEWS`]).
pub fn stream_views() -> Vec<Arc<dyn StreamView>> {
    stored_views()
        .filter_map(|v| match v {
            ViewImpl::Stream(view) => Some(Arc::new(Registered(view)) as Arc<dyn StreamView>),
            ViewImpl::Counter(_) => None,
        })
        .collect()
}

/// The shop's counter views (the counter views of [`VIEWS`]).
pub fn counter_views() -> Vec<Arc<dyn CounterView>> {
    stored_views()
        .filter_map(|v| match v {
            ViewImpl::Counter(view) => Some(Arc::new(Registered(view)) as Arc<dyn CounterView>),
            ViewImpl::Stream(_) => None,
        })
        .collect()
}

/// A projector over `events` and `models` with every shop view registered, reading old event
/// schemas through the shop's [upcasters].
pub fn projector<E: EventStore, R: ReadModelStore>(events: E, models: R) -> Projector<E, R> {
    let projector = stream_views().into_iter().fold(
        Projector::new(events, models).with_upcasters(upcasters()),
        Projector::with_stream_view,
    );
    counter_views()
        .into_iter()
        .fold(projector, Projector::with_counter_view)
}
