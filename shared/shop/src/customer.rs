//! The `Customer` aggregate: a person who orders, with personal data (name, email, shipping
//! address) that can be forgotten (GDPR Art. 17).
//!
//! Stream: `{tenant}/Customer-{customer_id}`. The customer id is the **data subject** of
//! every personal field ([`Personal`]): the storage boundary seals each one with the
//! subject's data key (`eventfold::sealing`), and forgetting the subject deletes that key.
//! Orders reference the customer by id only (`OrderCreated.customer_id`), so no order holds
//! personal data; views show the name and email from the `customers` view.
//!
//! Rules (the `rule` of each [`Rejection`]):
//!
//! | rule | when |
//! |---|---|
//! | `customer-not-registered` | `ChangeCustomerDetails` / `ForgetCustomer` before `RegisterCustomer` |
//! | `customer-already-registered` | `RegisterCustomer` again with other details |
//! | `customer-id-mismatch` | `RegisterCustomer` whose `customer_id` is not the stream's id ([`check_stream`](RegisteredAggregate::check_stream)) |
//! | `customer-forgotten` | any command but `ForgetCustomer` once forgotten |
//! | `name-required`, `address-required` | an empty name or shipping address |
//! | `email-invalid` | an email without exactly one `@` with text on both sides |
//! | `text-too-long` | a field over 500 characters ([`crate::MAX_TEXT_LEN`]) |
//!
//! Already done (no events): `RegisterCustomer` again with the same details;
//! `ChangeCustomerDetails` that changes nothing; `ForgetCustomer` of a forgotten customer.
//!
//! `ForgetCustomer` appends `SubjectForgotten`, after which every personal field of the
//! state reads [`Personal::Redacted`] (so a warm cached state forgets too) and the
//! projector scrubs what views copied. Clients do not send it through `POST /commands`
//! ([`RegisteredAggregate::INTERNAL_COMMANDS`]): the forget route deletes the subject's key
//! first and then sends it, so the event never claims a forget that did not happen.

use crate::command::{CommandParseError, RegisteredAggregate};
use crate::values::{CustomerId, MAX_TEXT_LEN};
use eventfold::{Aggregate, DomainEvent, Personal, Rejection, StreamId};
use serde::{Deserialize, Serialize};
use strum::VariantNames;

/// The customer aggregate (stream category `Customer`, one stream per customer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Customer;

/// What callers ask of a customer. Adjacently tagged: `{"type": .., "data": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum CustomerCommand {
    /// Registers a customer with their personal details.
    RegisterCustomer {
        /// The customer's id: the stream's id (checked) and the data subject.
        customer_id: CustomerId,
        /// Full name.
        name: String,
        /// Email address.
        email: String,
        /// Where orders ship to.
        shipping_address: String,
    },
    /// Changes some of the details (absent fields stay).
    ChangeCustomerDetails {
        /// New full name.
        #[serde(default)]
        name: Option<String>,
        /// New email address.
        #[serde(default)]
        email: Option<String>,
        /// New shipping address.
        #[serde(default)]
        shipping_address: Option<String>,
    },
    /// Records that the customer's personal data was forgotten (sent by the forget flow).
    ForgetCustomer {},
}

/// What happened to a customer; the storage format. Personal fields are [`Personal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum CustomerEvent {
    /// A customer was registered.
    CustomerRegistered {
        /// The customer's id (not personal: a pseudonym that stays).
        customer_id: CustomerId,
        /// Full name.
        name: Personal<String>,
        /// Email address.
        email: Personal<String>,
        /// Shipping address.
        shipping_address: Personal<String>,
    },
    /// Some details changed (absent: unchanged).
    CustomerDetailsChanged {
        /// New full name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Personal<String>>,
        /// New email address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<Personal<String>>,
        /// New shipping address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping_address: Option<Personal<String>>,
    },
    /// The subject's key was deleted: their personal data is gone for good.
    SubjectForgotten {
        /// The forgotten data subject (the customer id).
        subject: CustomerId,
    },
}

impl DomainEvent for CustomerEvent {}

/// What a customer's stream knows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CustomerState {
    /// `None` until registered.
    pub customer_id: Option<CustomerId>,
    /// Full name (redacted once forgotten).
    pub name: Option<Personal<String>>,
    /// Email address (redacted once forgotten).
    pub email: Option<Personal<String>>,
    /// Shipping address (redacted once forgotten).
    pub shipping_address: Option<Personal<String>>,
    /// Whether `SubjectForgotten` happened.
    pub forgotten: bool,
}

impl RegisteredAggregate for Customer {
    const INTERNAL_COMMANDS: &'static [&'static str] = &["ForgetCustomer"];

    fn check_stream(stream: &StreamId, command: &CustomerCommand) -> Result<(), Rejection> {
        match command {
            CustomerCommand::RegisterCustomer { customer_id, .. }
                if customer_id.as_str() != stream.id() =>
            {
                Err(Rejection::new(
                    "customer-id-mismatch",
                    format!(
                        "customer_id '{customer_id}' is not the stream's id '{}'",
                        stream.id()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Builds a customer command from its type name and JSON data.
pub fn parse_command(
    command_type: &str,
    data: serde_json::Value,
) -> Result<CustomerCommand, CommandParseError> {
    <Customer as RegisteredAggregate>::parse_command(command_type, data)
}

/// The command the forget flow sends (`ForgetCustomer`), by name.
pub const FORGET_COMMAND: &str = "ForgetCustomer";

impl Aggregate for Customer {
    const CATEGORY: &'static str = "Customer";

    type Event = CustomerEvent;
    type State = CustomerState;
    type Command = CustomerCommand;

    fn initial() -> CustomerState {
        CustomerState::default()
    }

    fn evolve(mut state: CustomerState, event: &CustomerEvent) -> CustomerState {
        match event {
            CustomerEvent::CustomerRegistered {
                customer_id,
                name,
                email,
                shipping_address,
            } => {
                state.customer_id = Some(customer_id.clone());
                state.name = Some(name.clone());
                state.email = Some(email.clone());
                state.shipping_address = Some(shipping_address.clone());
            }
            CustomerEvent::CustomerDetailsChanged {
                name,
                email,
                shipping_address,
            } => {
                let keep = |new: &Option<Personal<String>>, old: &mut Option<Personal<String>>| {
                    if let Some(new) = new {
                        *old = Some(new.clone());
                    }
                };
                keep(name, &mut state.name);
                keep(email, &mut state.email);
                keep(shipping_address, &mut state.shipping_address);
            }
            CustomerEvent::SubjectForgotten { .. } => {
                // The state forgets too: a warm cached state must not outlive the key.
                state.forgotten = true;
                for field in [
                    &mut state.name,
                    &mut state.email,
                    &mut state.shipping_address,
                ] {
                    if field.is_some() {
                        *field = Some(Personal::Redacted);
                    }
                }
            }
        }
        state
    }

    fn decide(
        state: &CustomerState,
        command: &CustomerCommand,
    ) -> Result<Vec<CustomerEvent>, Rejection> {
        if let CustomerCommand::ForgetCustomer {} = command {
            let id = registered(state)?;
            return Ok(if state.forgotten {
                vec![]
            } else {
                vec![CustomerEvent::SubjectForgotten {
                    subject: id.clone(),
                }]
            });
        }
        if state.forgotten {
            return Err(Rejection::new(
                "customer-forgotten",
                "the customer's personal data was forgotten",
            ));
        }
        match command {
            CustomerCommand::RegisterCustomer {
                customer_id,
                name,
                email,
                shipping_address,
            } => decide_register(state, customer_id, name, email, shipping_address),
            CustomerCommand::ChangeCustomerDetails {
                name,
                email,
                shipping_address,
            } => decide_change(state, name, email, shipping_address),
            CustomerCommand::ForgetCustomer {} => Ok(vec![]),
        }
    }
}

fn registered(state: &CustomerState) -> Result<&CustomerId, Rejection> {
    state.customer_id.as_ref().ok_or_else(|| {
        Rejection::new(
            "customer-not-registered",
            "the customer has not been registered",
        )
    })
}

fn check_text(rule: &'static str, what: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::new(rule, format!("{what} must not be empty")));
    }
    if value.chars().count() > MAX_TEXT_LEN {
        return Err(Rejection::new(
            "text-too-long",
            format!("{what} is longer than {MAX_TEXT_LEN} characters"),
        ));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), Rejection> {
    let valid = matches!(email.split_once('@'), Some((user, domain))
        if !user.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !valid || email.chars().any(char::is_whitespace) {
        return Err(Rejection::new(
            "email-invalid",
            "email must be one address: text@domain",
        ));
    }
    check_text("email-invalid", "email", email)
}

fn decide_register(
    state: &CustomerState,
    customer_id: &CustomerId,
    name: &str,
    email: &str,
    shipping_address: &str,
) -> Result<Vec<CustomerEvent>, Rejection> {
    check_text("name-required", "name", name)?;
    check_email(email)?;
    check_text("address-required", "shipping address", shipping_address)?;
    if state.customer_id.is_some() {
        let same = state.customer_id.as_ref() == Some(customer_id)
            && shown(&state.name) == Some(name)
            && shown(&state.email) == Some(email)
            && shown(&state.shipping_address) == Some(shipping_address);
        return if same {
            Ok(vec![])
        } else {
            Err(Rejection::new(
                "customer-already-registered",
                "the customer is registered with other details",
            ))
        };
    }
    let personal = |v: &str| Personal::new(customer_id.as_str(), v.to_owned());
    Ok(vec![CustomerEvent::CustomerRegistered {
        customer_id: customer_id.clone(),
        name: personal(name),
        email: personal(email),
        shipping_address: personal(shipping_address),
    }])
}

fn shown(field: &Option<Personal<String>>) -> Option<&str> {
    field.as_ref().and_then(Personal::value).map(String::as_str)
}

fn decide_change(
    state: &CustomerState,
    name: &Option<String>,
    email: &Option<String>,
    shipping_address: &Option<String>,
) -> Result<Vec<CustomerEvent>, Rejection> {
    let id = registered(state)?;
    if let Some(name) = name {
        check_text("name-required", "name", name)?;
    }
    if let Some(email) = email {
        check_email(email)?;
    }
    if let Some(address) = shipping_address {
        check_text("address-required", "shipping address", address)?;
    }
    let changed = |new: &Option<String>, old: &Option<Personal<String>>| {
        new.as_deref()
            .filter(|n| shown(old) != Some(n))
            .map(|n| Personal::new(id.as_str(), n.to_owned()))
    };
    let event = CustomerEvent::CustomerDetailsChanged {
        name: changed(name, &state.name),
        email: changed(email, &state.email),
        shipping_address: changed(shipping_address, &state.shipping_address),
    };
    Ok(match &event {
        CustomerEvent::CustomerDetailsChanged {
            name: None,
            email: None,
            shipping_address: None,
        } => vec![],
        _ => vec![event],
    })
}
