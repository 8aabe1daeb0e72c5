//! `customers`: the one view that copies personal data (a customer's name and email), and
//! the join through which `order-summary` and `orders-by-customer` show them ([`Join`]).
//!
//! **Why a join at query time, not a copy in every order's document.** A view document is
//! fed by the streams of one category (one document per order stream); a customer's name
//! comes from another stream. Copying it into each order's document would need the
//! projector to update many documents per customer event, and a forget to scrub them all.
//! Kept in one document per customer, the name is scrubbed in one write on
//! `SubjectForgotten`, and the query API joins it into the order documents it answers with
//! ([`crate::views::ViewSpec::join`]): one batched read per page.
//!
//! **Forgetting.** On `SubjectForgotten` the document keeps the customer id and the
//! versions, its personal fields become [`REDACTED_TEXT`] and `forgotten` true. A rebuild
//! after the forget reads the sealed events without their key: the personal fields read as
//! redacted, so it writes the same document.

use crate::customer::{Customer, CustomerEvent};
use crate::values::CustomerId;
use eventfold::{Aggregate, EventEnvelope, Personal, REDACTED_TEXT, StreamId};
use eventfold_consumers::projection::{ApplyError, StreamView};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{decode_known, read_doc, timestamp, write_doc};
use crate::command::RegisteredAggregate;

/// Name of the per-customer view ([`Customers`]).
pub const CUSTOMERS: &str = "customers";

/// The document of [`Customers`] (one per customer), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerDoc {
    /// The customer id (the stream's id).
    pub customer_id: CustomerId,
    /// Full name, or [`REDACTED_TEXT`].
    pub name: String,
    /// Email address, or [`REDACTED_TEXT`].
    pub email: String,
    /// Whether the customer was forgotten.
    pub forgotten: bool,
    /// Version of the last event applied.
    pub version: u64,
    /// When the last applied event occurred (RFC 3339, UTC).
    pub updated_at: String,
}

/// `customers`: name and email of each customer, keyed by customer id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Customers;

impl StreamView for Customers {
    fn name(&self) -> &str {
        CUSTOMERS
    }

    fn category(&self) -> &str {
        Customer::CATEGORY
    }

    fn apply(&self, doc: Option<Value>, env: &EventEnvelope) -> Result<Option<Value>, ApplyError> {
        let Some(event) = decode_known::<CustomerEvent>(env, Customer::EVENT_TYPES)? else {
            return Ok(doc);
        };
        let mut customer = match doc {
            Some(doc) => read_doc::<CustomerDoc>(CUSTOMERS, doc)?,
            None => CustomerDoc {
                customer_id: CustomerId::of_stream(&StreamId::parse(&env.stream_id)?),
                name: REDACTED_TEXT.to_owned(),
                email: REDACTED_TEXT.to_owned(),
                forgotten: false,
                version: 0,
                updated_at: String::new(),
            },
        };
        let shown = |p: &Personal<String>| p.shown().to_owned();
        match event {
            CustomerEvent::CustomerRegistered { name, email, .. } => {
                customer.name = shown(&name);
                customer.email = shown(&email);
            }
            CustomerEvent::CustomerDetailsChanged { name, email, .. } => {
                if let Some(name) = name {
                    customer.name = shown(&name);
                }
                if let Some(email) = email {
                    customer.email = shown(&email);
                }
            }
            CustomerEvent::SubjectForgotten { .. } => {
                customer.name = REDACTED_TEXT.to_owned();
                customer.email = REDACTED_TEXT.to_owned();
                customer.forgotten = true;
            }
        }
        if customer.forgotten {
            // A late-opened event (an instance whose cached key outlived the forget) never
            // writes the plaintext back into a scrubbed document.
            customer.name = REDACTED_TEXT.to_owned();
            customer.email = REDACTED_TEXT.to_owned();
        }
        customer.version = env.version;
        customer.updated_at = timestamp(env);
        write_doc(CUSTOMERS, &customer).map(Some)
    }
}

/// A query-time join: documents of one view gain an object `into` with the fields `copy`
/// of the document of view `view` whose key is their field `field` (`null` when there is
/// none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join {
    /// The field of the answered document that keys the joined one.
    pub field: &'static str,
    /// The stored view joined.
    pub view: &'static str,
    /// The fields copied from the joined document.
    pub copy: &'static [&'static str],
    /// The name of the object the fields are copied into.
    pub into: &'static str,
}

/// `order-summary` and `orders-by-customer` documents gain `"customer": {"name", "email"}`.
pub const CUSTOMER_JOIN: Join = Join {
    field: "customer_id",
    view: CUSTOMERS,
    copy: &["name", "email"],
    into: "customer",
};

impl Join {
    /// The key of the joined document for `doc`, when it has one.
    pub fn key_of<'d>(&self, doc: &'d Value) -> Option<&'d str> {
        doc.get(self.field)?.as_str()
    }

    /// `doc` with the join's object from `joined` (the joined document, if found).
    pub fn apply(&self, doc: &mut Value, joined: Option<&Value>) {
        let Value::Object(fields) = doc else { return };
        let copied = joined.map(|j| {
            Value::Object(
                self.copy
                    .iter()
                    .map(|f| ((*f).to_owned(), j.get(*f).cloned().unwrap_or(Value::Null)))
                    .collect(),
            )
        });
        fields.insert(self.into.to_owned(), copied.unwrap_or(Value::Null));
    }
}
