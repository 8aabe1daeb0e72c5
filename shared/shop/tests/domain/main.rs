//! Domain tests of the shop aggregates and the order-fulfilment saga: given/when/then
//! scenarios for every rule, command parsing, type names, the registry, upcasting, and
//! properties (deterministic folds, replay equals live, idempotency, codec round trips,
//! saga commands harmless when repeated at their targets, saga inputs harmless when
//! duplicated or reordered).

mod fulfilment;
mod inventory;
mod names;
mod order;
mod parse;
mod payment;
mod properties;
mod registry;
mod saga_input;
mod saga_properties;
mod upcast;
