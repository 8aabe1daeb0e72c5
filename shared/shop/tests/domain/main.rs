//! Domain tests of the shop aggregates and the order-fulfilment saga: given/when/then
//! scenarios for every rule, command parsing, type names, the registry, upcasting, and
//! properties (deterministic folds, replay equals live, idempotency, codec round trips,
//! saga commands harmless when repeated at their targets, saga inputs harmless when
//! duplicated or reordered).

mod bounded;
mod customer;
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
mod saga_storage;
mod upcast;

/// `"o-1".id()`: the id of the type the context asks for (`OrderId`, `Sku`, ..), from text
/// that keeps the id rule.
pub trait TextId {
    /// The id.
    fn id<T: std::str::FromStr<Err = shop::values::IdError>>(&self) -> T;
}

impl TextId for str {
    fn id<T: std::str::FromStr<Err = shop::values::IdError>>(&self) -> T {
        self.parse().expect("a valid id")
    }
}

/// The rejection of `rule` that parsing gave: a command carrying an id its type refuses is
/// never built, so the id's rule rejects it as the command is parsed, before any state.
#[track_caller]
pub fn rejected_at_parse<C: std::fmt::Debug>(
    parsed: Result<C, shop::CommandParseError>,
    rule: &str,
) -> shop::Rejection {
    match parsed {
        Err(shop::CommandParseError::Rejected(rejection)) => {
            assert_eq!(rejection.rule, rule, "{rejection}");
            rejection
        }
        other => panic!("expected the rejection {rule}, got {other:?}"),
    }
}
