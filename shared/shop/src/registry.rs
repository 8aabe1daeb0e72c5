//! The one registry of the shop: which aggregates exist and which views are served.
//!
//! Everything outside `shop` that needs to know the domain's names (the command API, the
//! query API, the projector, the CLI's rebuild, the saga) reads them here, so adding an
//! aggregate or a view touches `shop` and nothing else:
//!
//! - **aggregate**: write its module (an [`Aggregate`] whose command and event enums derive
//!   `strum::VariantNames` next to serde), and add its type to the `aggregates!` list below:
//!   `http:` when clients submit its commands (`POST /commands`), `internal:` when only the
//!   system does (a saga, whose commands are its inputs): its streams are still served by
//!   the read routes, but [`RegisteredAggregate::parse_http_command`] refuses every command.
//! - **event schema change**: bump the event's `DomainEvent::schema_version` and add the
//!   step from the old schema to [`upcasters`], which every reader of stored events uses.
//! - **view**: write its [`StreamView`] or [`CounterView`] in [`crate::views`], and add a
//!   [`ViewSpec`] row to [`VIEWS`] (one more row per extra query of the same stored view,
//!   e.g. an index).
//!
//! Aggregates are generic types, so callers reach one by category through a visitor
//! ([`visit`] + [`AggregateVisitor`]): the visitor is monomorphised per aggregate, so there is
//! no boxing or dynamic dispatch here; a caller that needs one type for all arms (an HTTP
//! handler returning a boxed future) chooses that in its `Output`.
//!
//! ```
//! use shop::registry::{self, AggregateVisitor, RegisteredAggregate};
//!
//! /// How many command types an aggregate has.
//! struct CountCommands;
//!
//! impl AggregateVisitor for CountCommands {
//!     type Output = usize;
//!     fn visit<A: RegisteredAggregate>(self) -> usize {
//!         A::COMMAND_TYPES.len()
//!     }
//! }
//!
//! assert_eq!(registry::visit("Payment", CountCommands), Ok(4));
//! let unknown = registry::visit("Nope", CountCommands).unwrap_err();
//! assert_eq!(
//!     unknown.to_string(),
//!     "unknown aggregate type 'Nope'; known: Order, Inventory, Payment, OrderFulfilment"
//! );
//! ```

use crate::fulfilment::OrderFulfilment;
use crate::views::{self, DailySales, OrderSummary, StockLevels};
use crate::{CommandParseError, Inventory, Order, Payment, order};
use eventfold::{Aggregate, Upcasters};
use eventfold_consumers::projection::{CounterView, StreamView};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use strum::VariantNames;

// ---------------------------------------------------------------------------------------------
// aggregates
// ---------------------------------------------------------------------------------------------

/// An aggregate of the registry: its command and event type names come from its enums
/// (`strum::VariantNames`, which names variants as serde does: the shop's enums rename
/// nothing), and commands parse from a type name and JSON data.
pub trait RegisteredAggregate:
    Aggregate<Command: DeserializeOwned + VariantNames, Event: VariantNames>
{
    /// The command type names [`Self::parse_command`] accepts, in declaration order.
    const COMMAND_TYPES: &'static [&'static str] = <Self::Command as VariantNames>::VARIANTS;

    /// The event type names of the aggregate's streams, in declaration order.
    const EVENT_TYPES: &'static [&'static str] = <Self::Event as VariantNames>::VARIANTS;

    /// Whether clients may submit the aggregate's commands over HTTP (`POST /commands`).
    /// False for an aggregate only the system drives (a saga: its commands are its inputs).
    const ACCEPTS_HTTP_COMMANDS: bool = true;

    /// Builds a command from its type name and JSON data (`{"type": .., "data": ..}` split in
    /// two). `null` data means "no fields"; unknown fields are refused.
    fn parse_command(command_type: &str, data: Value) -> Result<Self::Command, CommandParseError> {
        crate::parse_tagged(Self::CATEGORY, Self::COMMAND_TYPES, command_type, data)
    }

    /// [`Self::parse_command`] for a command a client submitted over HTTP: an aggregate that
    /// does not [accept](Self::ACCEPTS_HTTP_COMMANDS) them knows no command type there
    /// ([`CommandParseError::UnknownType`], HTTP 400 `unknown-command-type`).
    fn parse_http_command(
        command_type: &str,
        data: Value,
    ) -> Result<Self::Command, CommandParseError> {
        if !Self::ACCEPTS_HTTP_COMMANDS {
            return Err(CommandParseError::UnknownType(format!(
                "'{command_type}': {} accepts no commands over HTTP (the system writes its \
                 streams; read them through the aggregates API)",
                Self::CATEGORY
            )));
        }
        Self::parse_command(command_type, data)
    }
}

/// Something to do with one aggregate type, chosen at run time by category ([`visit`]).
pub trait AggregateVisitor {
    /// What the visit yields.
    type Output;
    /// Does it with the aggregate `A`.
    fn visit<A: RegisteredAggregate>(self) -> Self::Output;
}

/// A category that is not one of the registry's aggregates (HTTP: 400
/// `unknown-aggregate-type`). The message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAggregate {
    /// The category asked for.
    pub category: String,
}

impl fmt::Display for UnknownAggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown aggregate type '{}'; known: {}",
            self.category,
            CATEGORIES.join(", ")
        )
    }
}

impl std::error::Error for UnknownAggregate {}

/// The one list of aggregates: registers each type and generates [`CATEGORIES`],
/// [`HTTP_CATEGORIES`] and [`visit`] from the same list, so they cannot drift apart.
macro_rules! aggregates {
    (http: $($http:ty),+ ; internal: $($internal:ty),+ $(,)?) => {
        $(impl RegisteredAggregate for $http {})+
        $(impl RegisteredAggregate for $internal {
            const ACCEPTS_HTTP_COMMANDS: bool = false;
        })+

        /// The category of every registered aggregate, in registration order.
        pub const CATEGORIES: &[&str] = &[
            $(<$http as Aggregate>::CATEGORY,)+
            $(<$internal as Aggregate>::CATEGORY,)+
        ];

        /// The categories whose commands clients submit over HTTP, in registration order.
        pub const HTTP_CATEGORIES: &[&str] = &[$(<$http as Aggregate>::CATEGORY),+];

        /// Runs `visitor` with the aggregate whose category is `category` (exact match).
        pub fn visit<V: AggregateVisitor>(
            category: &str,
            visitor: V,
        ) -> Result<V::Output, UnknownAggregate> {
            $(
                if category == <$http as Aggregate>::CATEGORY {
                    return Ok(visitor.visit::<$http>());
                }
            )+
            $(
                if category == <$internal as Aggregate>::CATEGORY {
                    return Ok(visitor.visit::<$internal>());
                }
            )+
            Err(UnknownAggregate {
                category: category.to_owned(),
            })
        }
    };
}

aggregates!(http: Order, Inventory, Payment; internal: OrderFulfilment);

/// Every upcaster of the shop's events: what each reader of stored events (the command
/// executor, the projector, a rebuild, the saga runner) must be given so that events written
/// under an old schema read in the current one.
///
/// | event | from | to | step |
/// |---|---|---|---|
/// | `OrderPlaced` | 1 | 2 | adds `payment_method` = `"card"` ([`order::upcast_order_placed_v1`]) |
pub fn upcasters() -> Upcasters {
    Upcasters::new().register("OrderPlaced", 1, order::upcast_order_placed_v1)
}

/// `category` itself when it is registered, else [`UnknownAggregate`].
pub fn aggregate(category: &str) -> Result<&'static str, UnknownAggregate> {
    CATEGORIES
        .iter()
        .find(|c| **c == category)
        .copied()
        .ok_or_else(|| UnknownAggregate {
            category: category.to_owned(),
        })
}

// ---------------------------------------------------------------------------------------------
// views
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

/// What a query parameter's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamFormat {
    /// An id: 1 to 128 of `A-Z a-z 0-9 _ . : -`.
    Id,
    /// A calendar day, exactly `YYYY-MM-DD` ([`views::parse_day`]).
    Day,
}

impl ParamFormat {
    /// Whether `value` has this format.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Self::Id => {
                (1..=128).contains(&value.len())
                    && value.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
                    })
            }
            Self::Day => views::parse_day(value).is_some(),
        }
    }
}

/// A query parameter of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the query string.
    pub name: &'static str,
    /// What its value must look like.
    pub format: ParamFormat,
}

/// A view as `GET /queries/{name}` serves it. Several rows may read one stored view (an
/// index is a row of its own with a `partition` parameter).
#[derive(Debug, Clone, Copy)]
pub struct ViewSpec {
    /// Its name in the URL.
    pub name: &'static str,
    /// The parameter naming one document (a lookup), if the view has lookups.
    pub key: Option<Param>,
    /// The parameter naming an index partition (a required list filter), if the view is an
    /// index.
    pub partition: Option<Param>,
    /// The field under which a document's key is shown when the document lacks it.
    pub key_field: &'static str,
    /// The view that builds the documents.
    pub view: ViewImpl,
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

const fn id(name: &'static str) -> Option<Param> {
    Some(Param {
        name,
        format: ParamFormat::Id,
    })
}

/// Every view the shop serves, in the order they are listed to callers.
pub const VIEWS: &[ViewSpec] = &[
    ViewSpec {
        name: views::ORDER_SUMMARY,
        key: id("order_id"),
        partition: None,
        key_field: "order_id",
        view: ViewImpl::Stream(&OrderSummary),
    },
    ViewSpec {
        name: views::ORDERS_BY_CUSTOMER,
        key: None,
        partition: id("customer_id"),
        key_field: "order_id",
        view: ViewImpl::Stream(&OrderSummary),
    },
    ViewSpec {
        name: views::STOCK_LEVELS,
        key: id("sku"),
        partition: None,
        key_field: "sku",
        view: ViewImpl::Stream(&StockLevels),
    },
    ViewSpec {
        name: views::DAILY_SALES,
        key: Some(Param {
            name: "day",
            format: ParamFormat::Day,
        }),
        partition: None,
        key_field: "day",
        view: ViewImpl::Counter(&DailySales),
    },
];

/// The view named `name` in the URL.
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

/// The stored view named `name` (not a URL name: `orders-by-customer` is not stored).
pub fn stored_view(name: &str) -> Option<ViewImpl> {
    stored_views().find(|v| v.name() == name)
}
