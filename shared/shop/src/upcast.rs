//! The shop's upcasters: how events written under an old schema read in the current one.

use crate::order;
use eventfold::Upcasters;

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
