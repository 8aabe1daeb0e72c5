//! Read-model tests of the shop views over real histories (commands through the
//! `CommandExecutor`, events in the memory store, views in the memory read-model store):
//! the documents of each view, the orders-by-customer index and chaotic delivery.

mod chaos;
mod customers;
mod daily_sales;
mod order_summary;
mod stock_levels;
mod support;
