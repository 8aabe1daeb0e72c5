//! The one registry of the shop: which aggregates exist, which views are served, and the
//! upcasters every reader of stored events needs.
//!
//! Everything outside `shop` that needs to know the domain's names (the command API, the
//! query API, the projector, the CLI's rebuild, the saga) reads them here, so adding an
//! aggregate or a view touches `shop` and nothing else (a view's query parameters are the
//! query API's):
//!
//! - **aggregate**: write its module (an [`Aggregate`] whose command and event enums derive
//!   `strum::VariantNames` next to serde, implementing [`RegisteredAggregate`], with
//!   [`ACCEPTS_EXTERNAL_COMMANDS`](RegisteredAggregate::ACCEPTS_EXTERNAL_COMMANDS) false when
//!   only the system sends its commands, as a saga's inputs), and add its type to the
//!   `aggregates!` list below, with the name of its cache in [`ShopCaches`]. The registry
//!   imports the aggregates; they never import it. (A saga names the caches of its own
//!   executor beside its commands, e.g. [`FulfilmentCaches`](crate::fulfilment::FulfilmentCaches):
//!   the compiler asks for an entry there when the saga sends to a new target.)
//! - **event schema change**: bump the event's `DomainEvent::schema_version` and add the
//!   step from the old schema to [`upcasters`], which every reader of stored events uses.
//! - **view**: write its [`StreamView`](eventfold_consumers::projection::StreamView) or
//!   [`CounterView`](eventfold_consumers::projection::CounterView) in [`crate::views`], and add a
//!   [`ViewSpec`] row to [`VIEWS`] (one more row per extra query of the same stored view,
//!   e.g. an index).
//!
//! Aggregates are generic types, so callers reach one by category through a visitor, which
//! is monomorphised per aggregate: no boxing, no dynamic dispatch, no run-time type check.
//! [`visit`] runs an [`AggregateVisitor`] (synchronous work: parse a command, list names);
//! [`visit_async`] awaits an [`AsyncAggregateVisitor`] (an API handler that loads and
//! decides): its future is the one generic async function of the visitor, chosen by
//! category, and may use `A`'s cache in [`ShopCaches`] (the list gives each aggregate its
//! own, so a warm state is found by type, not by a run-time check).
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
//!     "unknown aggregate type 'Nope'; known: Order, Inventory, Payment, OrderFulfilment, Customer"
//! );
//! ```

use crate::customer::Customer;
use crate::fulfilment::OrderFulfilment;
use crate::{Inventory, Order, Payment};
use eventfold::{Aggregate, CacheFor};
use std::fmt;
use std::future::Future;

pub use crate::command::RegisteredAggregate;
pub use crate::upcast::upcasters;
pub use crate::views::{VIEWS, ViewImpl, ViewSpec, stored_view, stored_views, view, view_names};

/// Something to do with one aggregate type, chosen at run time by category ([`visit`]).
pub trait AggregateVisitor {
    /// What the visit yields.
    type Output;
    /// Does it with the aggregate `A`.
    fn visit<A: RegisteredAggregate>(self) -> Self::Output;
}

/// Something to do asynchronously with one aggregate type, chosen at run time by category
/// ([`visit_async`]). Implement it with an `async fn visit`. The visit may run `A`'s
/// commands on an executor over [`ShopCaches`], which keeps `A`'s warm states.
pub trait AsyncAggregateVisitor {
    /// What the visit yields.
    type Output;
    /// Does it with the aggregate `A`.
    fn visit<A: RegisteredAggregate>(self) -> impl Future<Output = Self::Output> + Send
    where
        ShopCaches: CacheFor<A>;
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

fn unknown(category: &str) -> UnknownAggregate {
    UnknownAggregate {
        category: category.to_owned(),
    }
}

/// The one list of aggregates: generates [`CATEGORIES`], [`ShopCaches`], [`visit`] and
/// [`visit_async`] from the same list, so they cannot drift apart. Each aggregate comes with
/// the name of its cache in [`ShopCaches`].
macro_rules! aggregates {
    ($($field:ident: $aggregate:ty),+ $(,)?) => {
        /// The category of every registered aggregate, in registration order.
        pub const CATEGORIES: &[&str] = &[$(<$aggregate as Aggregate>::CATEGORY),+];

        eventfold::state_caches! {
            /// The warm states of an executor that serves every registered aggregate (the
            /// command API's): one cache per aggregate type, so the compiler knows which
            /// state each holds.
            pub struct ShopCaches {
                $($field: $aggregate),+
            }
        }

        /// Whether each aggregate of [`CATEGORIES`] takes commands from outside the system.
        const ACCEPTS_EXTERNAL: &[bool] =
            &[$(<$aggregate as RegisteredAggregate>::ACCEPTS_EXTERNAL_COMMANDS),+];

        /// Runs `visitor` with the aggregate whose category is `category` (exact match).
        pub fn visit<V: AggregateVisitor>(
            category: &str,
            visitor: V,
        ) -> Result<V::Output, UnknownAggregate> {
            $(
                if category == <$aggregate as Aggregate>::CATEGORY {
                    return Ok(visitor.visit::<$aggregate>());
                }
            )+
            Err(unknown(category))
        }

        /// Awaits `visitor` with the aggregate whose category is `category` (exact match).
        pub async fn visit_async<V: AsyncAggregateVisitor>(
            category: &str,
            visitor: V,
        ) -> Result<V::Output, UnknownAggregate> {
            $(
                if category == <$aggregate as Aggregate>::CATEGORY {
                    return Ok(visitor.visit::<$aggregate>().await);
                }
            )+
            Err(unknown(category))
        }
    };
}

aggregates!(
    order: Order,
    inventory: Inventory,
    payment: Payment,
    fulfilment: OrderFulfilment,
    customer: Customer,
);

/// The category whose stream ids are the shop's data subjects (`Customer-{subject}`): where
/// the forget and export routes find a subject, and whose aggregate takes
/// [`FORGET_COMMAND`].
pub const SUBJECT_CATEGORY: &str = <Customer as Aggregate>::CATEGORY;

pub use crate::customer::FORGET_COMMAND;

const EXTERNAL_COUNT: usize = {
    let mut count = 0;
    let mut i = 0;
    while i < ACCEPTS_EXTERNAL.len() {
        if ACCEPTS_EXTERNAL[i] {
            count += 1;
        }
        i += 1;
    }
    count
};

/// The categories whose commands clients may submit
/// ([`RegisteredAggregate::ACCEPTS_EXTERNAL_COMMANDS`]), in registration order.
pub const EXTERNAL_CATEGORIES: &[&str] = &{
    let mut external = [""; EXTERNAL_COUNT];
    let (mut i, mut j) = (0, 0);
    while i < CATEGORIES.len() {
        if ACCEPTS_EXTERNAL[i] {
            external[j] = CATEGORIES[i];
            j += 1;
        }
        i += 1;
    }
    external
};

/// `category` itself when it is registered, else [`UnknownAggregate`].
pub fn aggregate(category: &str) -> Result<&'static str, UnknownAggregate> {
    CATEGORIES
        .iter()
        .find(|c| **c == category)
        .copied()
        .ok_or_else(|| unknown(category))
}
