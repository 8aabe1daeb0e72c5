//! Fixtures: a [`World`] that runs real commands through the `CommandExecutor` and stores
//! their events with chosen times, in-order projection, and a small seeded RNG.

// Each test module uses a different subset of these fixtures.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use eventfold::{
    Aggregate, CommandExecutor, EventEnvelope, EventStore, ExecutorConfig, MemoryEventStore,
    Metadata, StreamId,
};
use eventfold_consumers::Notification;
use eventfold_consumers::projection::{MemoryReadModelStore, Projector};
use shop::inventory::{Inventory, InventoryCommand, InventoryState};
use shop::order::{Order, OrderCommand, OrderState};
use shop::registry::ShopCaches;
use shop::values::IdError;
use std::sync::Arc;

/// The tenant of most tests.
pub const TENANT: &str = "acme";

/// The event store every projector of a world reads from.
pub type Events = Arc<MemoryEventStore>;

/// `YYYY-MM-DD hh:mm` UTC.
pub fn at(day: &str, hour: u32, minute: u32) -> DateTime<Utc> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a YYYY-MM-DD day");
    Utc.from_utc_datetime(&date.and_hms_opt(hour, minute, 0).expect("a valid time"))
}

/// The view's text form of a time (RFC 3339, UTC, microseconds).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn ctx(tenant: &str) -> Metadata {
    Metadata::root(tenant, "tester", "cmd")
}

pub fn order_stream(tenant: &str, id: &str) -> StreamId {
    StreamId::new(tenant, Order::CATEGORY, id).expect("valid order stream")
}

pub fn inventory_stream(tenant: &str, sku: &str) -> StreamId {
    StreamId::new(tenant, Inventory::CATEGORY, sku).expect("valid inventory stream")
}

/// An id of the type the context asks for (`Sku`, `OrderId`, ..), from text that keeps the
/// id rule.
pub fn id<T: std::str::FromStr<Err = IdError>>(text: &str) -> T {
    text.parse().expect("a valid id")
}

pub fn create(customer: &str) -> OrderCommand {
    OrderCommand::CreateOrder {
        customer_id: id(customer),
    }
}

pub fn add(sku: &str, quantity: i64, unit_price: i64) -> OrderCommand {
    OrderCommand::AddItem {
        sku: id(sku),
        quantity,
        unit_price: unit_price.into(),
    }
}

pub fn remove(sku: &str) -> OrderCommand {
    OrderCommand::RemoveItem { sku: id(sku) }
}

pub fn place() -> OrderCommand {
    OrderCommand::PlaceOrder {
        payment_method: None,
    }
}

pub fn confirm() -> OrderCommand {
    OrderCommand::ConfirmOrder {}
}

pub fn ship(tracking_id: &str) -> OrderCommand {
    OrderCommand::ShipOrder {
        tracking_id: id(tracking_id),
    }
}

pub fn cancel(reason: &str) -> OrderCommand {
    OrderCommand::CancelOrder {
        reason: reason.into(),
    }
}

pub fn receive(quantity: i64) -> InventoryCommand {
    InventoryCommand::ReceiveStock { quantity }
}

pub fn reserve(order_id: &str, quantity: i64) -> InventoryCommand {
    InventoryCommand::ReserveStock {
        order_id: id(order_id),
        quantity,
        placed_at: None,
    }
}

pub fn release(order_id: &str) -> InventoryCommand {
    InventoryCommand::ReleaseStock {
        order_id: id(order_id),
    }
}

/// Real histories with chosen times: commands run through a `CommandExecutor` over a
/// staging store (which stamps "now"); their events are then copied to [`World::events`]
/// with `occurred_at` set to the time the test chose (one minute apart within a call).
pub struct World {
    staging: CommandExecutor<Arc<MemoryEventStore>, ShopCaches>,
    /// The store the projectors read (what the table would hold).
    pub events: Events,
    /// Every stream written, in order of first write.
    pub streams: Vec<String>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        Self {
            staging: CommandExecutor::new(
                Arc::new(MemoryEventStore::new()),
                ExecutorConfig::default(),
            )
            .caching(),
            events: Arc::new(MemoryEventStore::new()),
            streams: Vec::new(),
        }
    }

    /// Runs `commands` on order `id` of `tenant`, its events starting at `start`.
    pub async fn order(
        &mut self,
        tenant: &str,
        id: &str,
        start: DateTime<Utc>,
        commands: &[OrderCommand],
    ) -> Vec<EventEnvelope> {
        let stream = order_stream(tenant, id);
        for command in commands {
            self.staging
                .execute::<Order>(&stream, None, command, &ctx(tenant))
                .await
                .unwrap_or_else(|e| panic!("{command:?} on {stream} should succeed: {e}"));
        }
        self.publish(&stream, start).await
    }

    /// Runs `commands` on the inventory of `sku` of `tenant`, its events starting at `start`.
    pub async fn inventory(
        &mut self,
        tenant: &str,
        sku: &str,
        start: DateTime<Utc>,
        commands: &[InventoryCommand],
    ) -> Vec<EventEnvelope> {
        let stream = inventory_stream(tenant, sku);
        for command in commands {
            self.staging
                .execute::<Inventory>(&stream, None, command, &ctx(tenant))
                .await
                .unwrap_or_else(|e| panic!("{command:?} on {stream} should succeed: {e}"));
        }
        self.publish(&stream, start).await
    }

    /// Copies the staged events of `stream` not yet in [`Self::events`], retimed.
    async fn publish(&mut self, stream: &StreamId, start: DateTime<Utc>) -> Vec<EventEnvelope> {
        let key = stream.to_string();
        if !self.streams.contains(&key) {
            self.streams.push(key.clone());
        }
        let published = self.history(&key).await.len() as u64;
        let staged = self
            .staging
            .store()
            .load_range(&key, published + 1, None, None)
            .await
            .expect("staging store readable");
        let mut written = Vec::new();
        for (i, mut env) in staged.into_iter().enumerate() {
            env.occurred_at = start + Duration::minutes(i as i64);
            self.events
                .append(
                    &key,
                    eventfold::ExpectedVersion::assumed(env.version - 1),
                    vec![env.clone()],
                    None,
                )
                .await
                .expect("append to the world's store");
            written.push(env);
        }
        written
    }

    /// Every stored event of `stream`, in order.
    pub async fn history(&self, stream: &str) -> Vec<EventEnvelope> {
        self.events
            .load_range(stream, 1, None, None)
            .await
            .expect("world store readable")
    }

    /// Every notification of `stream`, one per event, in table order.
    pub async fn notifications(&self, stream: &str) -> Vec<Notification> {
        self.history(stream)
            .await
            .iter()
            .map(|e| Notification::of(e).expect("valid stream id"))
            .collect()
    }

    /// The aggregate's state of an order (what the command side knows).
    pub async fn order_state(&self, tenant: &str, id: &str) -> OrderState {
        self.staging
            .load::<Order>(&order_stream(tenant, id))
            .await
            .expect("order loads")
            .1
    }

    /// The aggregate's state of a SKU's inventory.
    pub async fn inventory_state(&self, tenant: &str, sku: &str) -> InventoryState {
        self.staging
            .load::<Inventory>(&inventory_stream(tenant, sku))
            .await
            .expect("inventory loads")
            .1
    }

    /// A fresh shop projector over this world's events and an empty read-model store.
    pub fn projector(&self) -> Projector<Events, MemoryReadModelStore> {
        shop::views::projector(self.events.clone(), MemoryReadModelStore::new())
    }

    /// A fresh projector fed every notification of every stream exactly once, in order.
    pub async fn rebuild(&self) -> Projector<Events, MemoryReadModelStore> {
        let projector = self.projector();
        for stream in &self.streams {
            for n in self.notifications(stream).await {
                projector
                    .handle(&n)
                    .await
                    .unwrap_or_else(|e| panic!("{} v{} applies: {e}", n.stream_id, n.version));
            }
        }
        projector
    }
}

/// SplitMix64: a tiny deterministic RNG for the chaos tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform index in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}
