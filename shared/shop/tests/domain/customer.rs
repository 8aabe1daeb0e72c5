//! The `Customer` aggregate: registration, changes, the forget, and the stream check.

use eventfold::{Personal, StreamId};
use eventfold_testkit::given;
use shop::customer::{Customer, CustomerCommand, CustomerEvent};
use shop::registry::RegisteredAggregate;
use shop::{Aggregate, CustomerId};

fn id(text: &str) -> CustomerId {
    CustomerId::new(text).expect("an id")
}

fn register(name: &str, email: &str) -> CustomerCommand {
    CustomerCommand::RegisterCustomer {
        customer_id: id("c-1"),
        name: name.into(),
        email: email.into(),
        shipping_address: "1 Main St".into(),
    }
}

fn p(value: &str) -> Personal<String> {
    Personal::new("c-1", value.to_owned())
}

fn registered() -> CustomerEvent {
    CustomerEvent::CustomerRegistered {
        customer_id: id("c-1"),
        name: p("Ada"),
        email: p("ada@example.com"),
        shipping_address: p("1 Main St"),
    }
}

fn change(email: Option<&str>) -> CustomerCommand {
    CustomerCommand::ChangeCustomerDetails {
        name: None,
        email: email.map(Into::into),
        shipping_address: None,
    }
}

#[test]
fn registering_seals_each_field_to_the_customer_as_subject() {
    given::<Customer>([])
        .when(register("Ada", "ada@example.com"))
        .then([registered()]);
    given::<Customer>([registered()])
        .when(register("Ada", "ada@example.com"))
        .then([]);
    given::<Customer>([registered()])
        .when(register("Bob", "ada@example.com"))
        .then_rejected("customer-already-registered");
}

#[test]
fn details_are_checked() {
    given::<Customer>([])
        .when(register(" ", "a@b"))
        .then_rejected("name-required");
    for bad in ["nope", "a@", "@b", "a@b@c", "a b@c"] {
        given::<Customer>([])
            .when(register("Ada", bad))
            .then_rejected("email-invalid");
    }
    given::<Customer>([])
        .when(register(&"x".repeat(501), "a@b"))
        .then_rejected("text-too-long");
    given::<Customer>([])
        .when(change(Some("a@b")))
        .then_rejected("customer-not-registered");
}

#[test]
fn a_change_records_only_what_changed() {
    given::<Customer>([registered()])
        .when(change(Some("ada@analytical.org")))
        .then([CustomerEvent::CustomerDetailsChanged {
            name: None,
            email: Some(p("ada@analytical.org")),
            shipping_address: None,
        }]);
    given::<Customer>([registered()])
        .when(change(Some("ada@example.com")))
        .then([]);
    given::<Customer>([registered()])
        .when(change(None))
        .then([]);
}

#[test]
fn forgetting_redacts_the_state_and_refuses_new_personal_data() {
    let forgotten = CustomerEvent::SubjectForgotten { subject: id("c-1") };
    given::<Customer>([registered()])
        .when(CustomerCommand::ForgetCustomer {})
        .then([forgotten.clone()]);
    given::<Customer>([registered(), forgotten.clone()])
        .when(CustomerCommand::ForgetCustomer {})
        .then([]);
    given::<Customer>([registered(), forgotten.clone()])
        .when(change(Some("x@y")))
        .then_rejected("customer-forgotten");
    given::<Customer>([registered(), forgotten.clone()])
        .when(register("Ada", "ada@example.com"))
        .then_rejected("customer-forgotten");
    given::<Customer>([])
        .when(CustomerCommand::ForgetCustomer {})
        .then_rejected("customer-not-registered");
    let state = Customer::fold(Customer::initial(), [registered(), forgotten].iter());
    assert!(state.forgotten);
    assert_eq!(
        state.name,
        Some(Personal::Redacted),
        "a warm cached state forgets too"
    );
    assert_eq!(state.email, Some(Personal::Redacted));
    assert_eq!(
        state.customer_id,
        Some(id("c-1")),
        "the pseudonymous id stays"
    );
}

#[test]
fn the_customer_id_is_the_streams_and_clients_cannot_send_the_forget() {
    let own = StreamId::new("acme", "Customer", "c-1").expect("id");
    let other = StreamId::new("acme", "Customer", "c-2").expect("id");
    assert!(Customer::check_stream(&own, &register("Ada", "a@b")).is_ok());
    let refused = Customer::check_stream(&other, &register("Ada", "a@b")).expect_err("mismatch");
    assert_eq!(refused.rule, "customer-id-mismatch");
    assert_eq!(Customer::INTERNAL_COMMANDS, ["ForgetCustomer"]);
}
