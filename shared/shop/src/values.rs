//! The shop's domain values: the ids of orders, customers, SKUs and shipments, and money.
//!
//! An id is checked once, when it is made ([`OrderId::new`], ..) or read (serde goes through
//! the same check, `#[serde(try_from = "String")]`), so a value of one of these types always
//! keeps the id rule: 1 to [`MAX_KEY_LEN`] characters of `A-Z a-z 0-9 _ . : -`, the rule of
//! a stream id's id ([`eventfold::envelope::valid_id`], the one place it is written). Every
//! id the write side accepts therefore names a stream and fits every key downstream (a
//! read model's key, an index partition, a query parameter).
//!
//! The types are transparent in storage: an id serializes as its bare string and [`Money`]
//! as its bare integer, exactly as the `String` and `i64` fields they replaced, so stored
//! events, snapshots and documents read as before.
//!
//! When a command's data is parsed, an id that breaks the rule is the [`Rejection`] of its
//! kind's rule ([`IdError::rejection`]): `{kind}-required` for an empty (or blank) one,
//! `{kind}-invalid` for any other, e.g. `customer-id-invalid`, as `decide` gave them before
//! the types existed.

use eventfold::Rejection;
use eventfold::envelope::{StreamId, valid_id};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Longest id ([`OrderId`], [`CustomerId`], [`Sku`], [`TrackingId`]) or other key-like field
/// (a payment method): what stream ids, index keys and the query API's parameters take, so
/// every view can store and find what the write side accepts.
pub const MAX_KEY_LEN: usize = eventfold::envelope::MAX_ID_LEN;

/// Longest free-text field (a cancel reason), well inside any read model's item.
pub const MAX_TEXT_LEN: usize = 500;

/// Which id an [`IdError`] is about: names the id in messages and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// [`OrderId`].
    Order,
    /// [`CustomerId`].
    Customer,
    /// [`Sku`].
    Sku,
    /// [`TrackingId`].
    Tracking,
}

impl IdKind {
    const ALL: [Self; 4] = [Self::Order, Self::Customer, Self::Sku, Self::Tracking];

    /// The id in words, e.g. `customer id`.
    pub fn what(self) -> &'static str {
        match self {
            Self::Order => "order id",
            Self::Customer => "customer id",
            Self::Sku => "sku",
            Self::Tracking => "tracking id",
        }
    }
}

/// What is wrong with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdProblem {
    /// Empty, or only whitespace.
    Blank,
    /// Too long, or a character outside `A-Z a-z 0-9 _ . : -`.
    Invalid,
}

/// A text that is not an id of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdError {
    /// The id it was to be.
    pub kind: IdKind,
    /// What is wrong with it.
    pub problem: IdProblem,
}

impl IdError {
    /// The rule it breaks, e.g. `customer-id-required` or `sku-invalid`.
    pub fn rule(self) -> &'static str {
        match (self.kind, self.problem) {
            (IdKind::Order, IdProblem::Blank) => "order-id-required",
            (IdKind::Order, IdProblem::Invalid) => "order-id-invalid",
            (IdKind::Customer, IdProblem::Blank) => "customer-id-required",
            (IdKind::Customer, IdProblem::Invalid) => "customer-id-invalid",
            (IdKind::Sku, IdProblem::Blank) => "sku-required",
            (IdKind::Sku, IdProblem::Invalid) => "sku-invalid",
            (IdKind::Tracking, IdProblem::Blank) => "tracking-id-required",
            (IdKind::Tracking, IdProblem::Invalid) => "tracking-id-invalid",
        }
    }

    /// The rejection of a command carrying the text (HTTP: 422 with [`Self::rule`]).
    pub fn rejection(self) -> Rejection {
        Rejection::new(self.rule(), self.to_string())
    }

    /// The error whose message is `message`, if `message` is one: how a command's parse
    /// recognises, in serde's error, the check of an id field (serde keeps only the text).
    pub(crate) fn from_message(message: &str) -> Option<Self> {
        IdKind::ALL
            .into_iter()
            .flat_map(|kind| {
                [IdProblem::Blank, IdProblem::Invalid].map(|problem| Self { kind, problem })
            })
            .find(|e| e.to_string() == message)
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.kind.what();
        match self.problem {
            IdProblem::Blank => write!(f, "{what} must not be empty"),
            IdProblem::Invalid => write!(
                f,
                "{what} must be 1-{MAX_KEY_LEN} characters of A-Z a-z 0-9 _ . : -"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// `value` as an id of `kind`: not blank, and of the id rule.
fn check(kind: IdKind, value: &str) -> Result<(), IdError> {
    let problem = if value.trim().is_empty() {
        IdProblem::Blank
    } else if !valid_id(value) {
        IdProblem::Invalid
    } else {
        return Ok(());
    };
    Err(IdError { kind, problem })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// `value`, if it keeps the id rule.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            /// The id part of `stream`, which keeps the id rule (a stream id is checked by
            /// the same rule).
            pub fn of_stream(stream: &StreamId) -> Self {
                Self(stream.id().to_owned())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id's text, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Shown as its text (`"o-1"`), like the string it is stored as.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of an order: the id of its `Order` stream, and of its `Payment` and
    /// `OrderFulfilment` streams.
    OrderId,
    IdKind::Order
);

id_type!(
    /// The id of the customer an order belongs to (the partition of `orders-by-customer`).
    CustomerId,
    IdKind::Customer
);

id_type!(
    /// A stock keeping unit: the id of its `Inventory` stream, and the key of an order's line.
    Sku,
    IdKind::Sku
);

id_type!(
    /// The carrier's id of a shipment.
    TrackingId,
    IdKind::Tracking
);

/// An amount of money in minor units (cents). Serializes as the bare integer.
///
/// Any amount can be written down, so that a negative price in a command reaches `decide`
/// and is refused by the rule of its field (`unit-price-must-not-be-negative`,
/// `amount-must-be-positive`) like a negative quantity; where the domain says an amount is
/// never negative, `decide` checks it ([`Self::is_negative`], [`Self::is_positive`]) and
/// every amount in an event keeps it. Arithmetic is checked (`None` on overflow, which
/// `decide` refuses) or saturating (for folds, which never fail).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// No money.
    pub const ZERO: Self = Self(0);

    /// `minor` minor units (cents).
    pub const fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    /// The amount in minor units (cents).
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// Whether it is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whether it is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    /// `self × quantity` (the amount of `quantity` units at this price), or `None` on
    /// overflow.
    pub fn checked_times(self, quantity: i64) -> Option<Self> {
        self.0.checked_mul(quantity).map(Self)
    }

    /// `self + other`, saturating.
    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self × quantity`, saturating.
    pub fn saturating_times(self, quantity: i64) -> Self {
        Self(self.0.saturating_mul(quantity))
    }
}

impl From<i64> for Money {
    fn from(minor: i64) -> Self {
        Self(minor)
    }
}

/// Shown as its number of minor units (`150`), like the integer it is stored as.
impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A rejection by `rule` unless `value` is 1 to [`MAX_KEY_LEN`] characters of
/// `A-Z a-z 0-9 _ . : -` (the id rule, for a key-like field that has no type of its own, such
/// as a payment method).
pub(crate) fn require_key(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    if valid_id(value) {
        Ok(())
    } else {
        Err(Rejection::new(
            rule,
            format!("{what} must be 1-{MAX_KEY_LEN} characters of A-Z a-z 0-9 _ . : -"),
        ))
    }
}

/// A rejection by `rule` when `value` is longer than [`MAX_TEXT_LEN`] characters.
pub(crate) fn require_short(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    if value.chars().count() > MAX_TEXT_LEN {
        Err(Rejection::new(
            rule,
            format!("{what} must be at most {MAX_TEXT_LEN} characters"),
        ))
    } else {
        Ok(())
    }
}

/// A rejection unless `value` has at least one non-whitespace character.
pub(crate) fn require_text(value: &str, rule: &'static str, what: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        Err(Rejection::new(rule, format!("{what} must not be empty")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_error_is_recognised_by_its_message_alone() {
        for kind in IdKind::ALL {
            for problem in [IdProblem::Blank, IdProblem::Invalid] {
                let e = IdError { kind, problem };
                assert_eq!(IdError::from_message(&e.to_string()), Some(e));
            }
        }
        assert_eq!(IdError::from_message("invalid type: integer `7`"), None);
    }

    #[test]
    fn ids_are_not_blank_and_keep_the_stream_id_rule() {
        assert_eq!(
            Sku::new("sku-1.a:b_C").map(String::from),
            Ok("sku-1.a:b_C".into())
        );
        let long = "x".repeat(MAX_KEY_LEN);
        assert!(OrderId::new(long.clone()).is_ok());
        for (bad, problem) in [
            ("", IdProblem::Blank),
            ("  ", IdProblem::Blank),
            ("a b", IdProblem::Invalid),
            ("a/b", IdProblem::Invalid),
            ("ünï", IdProblem::Invalid),
            (&format!("{long}x"), IdProblem::Invalid),
        ] {
            assert_eq!(
                CustomerId::new(bad),
                Err(IdError {
                    kind: IdKind::Customer,
                    problem
                }),
                "{bad:?}"
            );
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn values_are_stored_as_the_bare_string_or_integer() {
        let sku = Sku::new("apple").expect("a sku");
        assert_eq!(
            serde_json::to_value(&sku).ok(),
            Some(serde_json::json!("apple"))
        );
        assert_eq!(
            serde_json::from_value::<Sku>(serde_json::json!("apple")).ok(),
            Some(sku.clone())
        );
        let refused = serde_json::from_value::<Sku>(serde_json::json!("red apple"))
            .expect_err("not a sku")
            .to_string();
        assert_eq!(
            refused,
            "sku must be 1-128 characters of A-Z a-z 0-9 _ . : -"
        );
        let price = Money::from_minor(150);
        assert_eq!(
            serde_json::to_value(price).ok(),
            Some(serde_json::json!(150))
        );
        assert_eq!(format!("{price:?} {sku:?}"), r#"150 "apple""#);
    }

    #[test]
    fn money_arithmetic_is_checked_or_saturating() {
        let max = Money::from_minor(i64::MAX);
        assert_eq!(max.checked_add(Money::from_minor(1)), None);
        assert_eq!(max.saturating_add(Money::from_minor(1)), max);
        assert_eq!(
            Money::from_minor(150).checked_times(3),
            Some(Money::from_minor(450))
        );
        assert_eq!(max.checked_times(2), None);
        assert_eq!(max.saturating_times(2), max);
        assert!(Money::from_minor(-1).is_negative() && !Money::ZERO.is_positive());
    }
}
