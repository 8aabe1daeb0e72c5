//! Workloads shared by the comparison benchmarks (`cargo bench -p bench`). The package's
//! binary, `eventfold-bench` (`src/bin/eventfold-bench`, feature `stack`), measures on the
//! local stack instead.
//!
//! Owns the command streams both sides run, so the libraries compared decide exactly the same
//! commands. Must not import any other event-sourcing library: those are bench dependencies
//! of `benches/` only, and never reach a Lambda. With feature `stack`, also the binary's command
//! line ([`args`]), which the docs' test parses, and the end-to-end load run ([`e2e`]), which
//! an integration test runs small.
#![forbid(unsafe_code)]

#[cfg(feature = "stack")]
pub mod args;
#[cfg(feature = "stack")]
pub mod e2e;

use shop::order::OrderCommand;
use shop::{CustomerId, Money, Sku};

/// The commands of one order: one `CreateOrder`, then `items` `AddItem`s; `AddItem` number `i`
/// adds one unit of `sku-{i % skus}`, so the order ends with `min(items, skus)` lines.
pub fn order_commands(customer: u64, items: u64, skus: u64) -> impl Iterator<Item = OrderCommand> {
    let skus = skus.max(1);
    std::iter::once(OrderCommand::CreateOrder {
        customer_id: CustomerId::new(format!("c-{customer}")).expect("an id of the id rule"),
    })
    .chain((0..items).map(move |i| OrderCommand::AddItem {
        sku: Sku::new(format!("sku-{}", i % skus)).expect("an id of the id rule"),
        quantity: 1,
        unit_price: Money::from_minor(100 + (i % skus) as i64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_created_then_filled() {
        let commands: Vec<_> = order_commands(7, 3, 10).collect();
        assert_eq!(commands.len(), 4);
        assert!(
            matches!(&commands[0], OrderCommand::CreateOrder { customer_id } if customer_id == "c-7")
        );
        assert!(
            matches!(&commands[3], OrderCommand::AddItem { sku, .. } if sku == "sku-2"),
            "{commands:?}"
        );
    }
}
