//! Domain tests of the shop aggregates: given/when/then scenarios for every rule, command
//! parsing, type names, the registry, and properties (deterministic folds, replay equals
//! live, idempotency, codec round trips).

mod inventory;
mod names;
mod order;
mod parse;
mod payment;
mod properties;
mod registry;
