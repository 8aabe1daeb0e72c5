//! `parse_command` of each aggregate: valid data, unknown types, invalid data.

use crate::TextId;
use serde_json::{Value, json};
use shop::inventory::{self, InventoryCommand};
use shop::order::{self, OrderCommand};
use shop::payment::{self, PaymentCommand};
use shop::{CommandParseError, Inventory, Order, Payment, RegisteredAggregate};

fn unknown_type_message(result: Result<impl std::fmt::Debug, CommandParseError>) -> String {
    match result {
        Err(CommandParseError::UnknownType(message)) => message,
        other => panic!("expected UnknownType, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid_data(result: Result<impl std::fmt::Debug, CommandParseError>) {
    match result {
        Err(CommandParseError::InvalidData(message)) => assert!(!message.is_empty()),
        other => panic!("expected InvalidData, got {other:?}"),
    }
}

/// Every command serializes as `{"type", "data"}` with a listed type, and parses back; every
/// listed type is one of them: the registry's command type names are exactly serde's tags.
fn assert_round_trips<C>(
    commands: &[C],
    known: &[&str],
    parse: fn(&str, Value) -> Result<C, CommandParseError>,
) where
    C: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut seen = Vec::new();
    for command in commands {
        let value = serde_json::to_value(command).expect("commands serialize");
        let command_type = value["type"]
            .as_str()
            .expect("tagged with a type")
            .to_owned();
        assert!(
            known.contains(&command_type.as_str()),
            "{command_type} not listed"
        );
        assert_eq!(
            &parse(&command_type, value["data"].clone()).expect("parses"),
            command
        );
        assert_eq!(
            &serde_json::from_value::<C>(value).expect("deserializes"),
            command
        );
        seen.push(command_type);
    }
    seen.sort();
    let mut known: Vec<String> = known.iter().map(|t| (*t).to_owned()).collect();
    known.sort();
    assert_eq!(seen, known, "every listed type has a sample command");
}

// --- Order ---------------------------------------------------------------------------------

#[test]
fn order_commands_parse() {
    assert_eq!(
        order::parse_command("CreateOrder", json!({"customer_id": "alice"})),
        Ok(OrderCommand::CreateOrder {
            customer_id: "alice".id()
        })
    );
    assert_eq!(
        order::parse_command(
            "AddItem",
            json!({"sku": "apple", "quantity": 2, "unit_price": 150})
        ),
        Ok(OrderCommand::AddItem {
            sku: "apple".id(),
            quantity: 2,
            unit_price: 150.into()
        })
    );
    // Signs are business rules, not parse errors.
    assert_eq!(
        order::parse_command(
            "AddItem",
            json!({"sku": "apple", "quantity": -2, "unit_price": -1})
        ),
        Ok(OrderCommand::AddItem {
            sku: "apple".id(),
            quantity: -2,
            unit_price: (-1).into()
        })
    );
    assert_eq!(
        order::parse_command("ShipOrder", json!({"tracking_id": "T-1"})),
        Ok(OrderCommand::ShipOrder {
            tracking_id: "T-1".id()
        })
    );
}

#[test]
fn order_commands_without_fields_accept_null_or_empty_data() {
    for data in [Value::Null, json!({})] {
        assert_eq!(
            order::parse_command("PlaceOrder", data.clone()),
            Ok(OrderCommand::PlaceOrder {
                payment_method: None
            })
        );
        assert_eq!(
            order::parse_command("ConfirmOrder", data),
            Ok(OrderCommand::ConfirmOrder {})
        );
    }
}

#[test]
fn place_order_takes_an_optional_payment_method() {
    assert_eq!(
        order::parse_command("PlaceOrder", json!({"payment_method": "bank_transfer"})),
        Ok(OrderCommand::PlaceOrder {
            payment_method: Some("bank_transfer".into())
        })
    );
    let with_method = OrderCommand::PlaceOrder {
        payment_method: Some("card".into()),
    };
    let value = serde_json::to_value(&with_method).expect("serializes");
    assert_eq!(value["data"], json!({"payment_method": "card"}));
    // Absent, it is not written either (so old clients' `{}` and new ones' agree).
    let without = serde_json::to_value(OrderCommand::PlaceOrder {
        payment_method: None,
    })
    .expect("serializes");
    assert_eq!(without["data"], json!({}));
    assert_invalid_data(order::parse_command(
        "PlaceOrder",
        json!({"payment_method": 3}),
    ));
}

#[test]
fn order_commands_round_trip_through_json() {
    let commands = [
        OrderCommand::CreateOrder {
            customer_id: "c".id(),
        },
        OrderCommand::AddItem {
            sku: "s".id(),
            quantity: 1,
            unit_price: 2.into(),
        },
        OrderCommand::RemoveItem { sku: "s".id() },
        OrderCommand::PlaceOrder {
            payment_method: None,
        },
        OrderCommand::ConfirmOrder {},
        OrderCommand::ShipOrder {
            tracking_id: "t".id(),
        },
        OrderCommand::CancelOrder { reason: "r".into() },
    ];
    assert_round_trips(&commands, Order::COMMAND_TYPES, order::parse_command);
}

#[test]
fn unknown_order_command_types_list_the_known_ones() {
    let message = unknown_type_message(order::parse_command("DeleteOrder", json!({})));
    assert!(message.contains("DeleteOrder"), "{message}");
    for known in Order::COMMAND_TYPES {
        assert!(message.contains(known), "{message} should list {known}");
    }
    // Types are case-sensitive, and other aggregates' commands are not order commands.
    unknown_type_message(order::parse_command("placeorder", Value::Null));
    unknown_type_message(order::parse_command("ReserveStock", Value::Null));
    unknown_type_message(order::parse_command("", Value::Null));
}

#[test]
fn invalid_order_command_data_is_refused() {
    // Missing field.
    assert_invalid_data(order::parse_command(
        "AddItem",
        json!({"sku": "apple", "quantity": 2}),
    ));
    assert_invalid_data(order::parse_command("CreateOrder", Value::Null));
    assert_invalid_data(order::parse_command("CreateOrder", json!({})));
    // Wrong type.
    assert_invalid_data(order::parse_command(
        "AddItem",
        json!({"sku": "apple", "quantity": "two", "unit_price": 150}),
    ));
    assert_invalid_data(order::parse_command(
        "AddItem",
        json!({"sku": "apple", "quantity": 1.5, "unit_price": 150}),
    ));
    assert_invalid_data(order::parse_command(
        "CreateOrder",
        json!({"customer_id": 7}),
    ));
    // Unknown field.
    assert_invalid_data(order::parse_command(
        "CreateOrder",
        json!({"customer_id": "alice", "vip": true}),
    ));
    assert_invalid_data(order::parse_command("PlaceOrder", json!({"now": true})));
    // Not an object.
    assert_invalid_data(order::parse_command("PlaceOrder", json!([])));
    assert_invalid_data(order::parse_command("RemoveItem", json!(["apple"])));
    assert_invalid_data(order::parse_command("ShipOrder", json!("T-1")));
}

// --- Inventory -----------------------------------------------------------------------------

#[test]
fn inventory_commands_parse() {
    assert_eq!(
        inventory::parse_command("ReceiveStock", json!({"quantity": 5})),
        Ok(InventoryCommand::ReceiveStock { quantity: 5 })
    );
    assert_eq!(
        inventory::parse_command("ReserveStock", json!({"order_id": "o-1", "quantity": 2})),
        Ok(InventoryCommand::ReserveStock {
            order_id: "o-1".id(),
            quantity: 2,
            placed_at: None,
        })
    );
    // The saga's reservations say when the order was placed (inventory module docs).
    assert_eq!(
        inventory::parse_command(
            "ReserveStock",
            json!({"order_id": "o-1", "quantity": 2, "placed_at": "2024-03-01T09:00:00Z"})
        ),
        Ok(InventoryCommand::ReserveStock {
            order_id: "o-1".id(),
            quantity: 2,
            placed_at: Some("2024-03-01T09:00:00Z".parse().expect("a time")),
        })
    );
    assert_eq!(
        inventory::parse_command("ReleaseStock", json!({"order_id": "o-1"})),
        Ok(InventoryCommand::ReleaseStock {
            order_id: "o-1".id()
        })
    );
}

#[test]
fn inventory_commands_round_trip_through_json() {
    let commands = [
        InventoryCommand::ReceiveStock { quantity: 1 },
        InventoryCommand::ReserveStock {
            order_id: "o".id(),
            quantity: 1,
            placed_at: Some("2024-03-01T09:00:00Z".parse().expect("a time")),
        },
        InventoryCommand::ReleaseStock { order_id: "o".id() },
    ];
    assert_round_trips(
        &commands,
        Inventory::COMMAND_TYPES,
        inventory::parse_command,
    );
}

#[test]
fn unknown_inventory_command_types_list_the_known_ones() {
    let message = unknown_type_message(inventory::parse_command("AddItem", json!({})));
    assert!(message.contains("AddItem"), "{message}");
    for known in Inventory::COMMAND_TYPES {
        assert!(message.contains(known), "{message} should list {known}");
    }
}

#[test]
fn invalid_inventory_command_data_is_refused() {
    assert_invalid_data(inventory::parse_command("ReceiveStock", Value::Null));
    assert_invalid_data(inventory::parse_command(
        "ReserveStock",
        json!({"order_id": "o-1"}),
    ));
    assert_invalid_data(inventory::parse_command(
        "ReceiveStock",
        json!({"quantity": "5"}),
    ));
    assert_invalid_data(inventory::parse_command(
        "ReleaseStock",
        json!({"order_id": "o-1", "quantity": 1}),
    ));
    assert_invalid_data(inventory::parse_command("ReceiveStock", json!(5)));
}

// --- Payment -------------------------------------------------------------------------------

#[test]
fn payment_commands_parse() {
    assert_eq!(
        payment::parse_command(
            "AuthorizePayment",
            json!({"order_id": "o-1", "amount": 500, "method": "card"})
        ),
        Ok(PaymentCommand::AuthorizePayment {
            order_id: "o-1".id(),
            amount: 500.into(),
            method: "card".into()
        })
    );
    for data in [Value::Null, json!({})] {
        assert_eq!(
            payment::parse_command("RefundPayment", data),
            Ok(PaymentCommand::RefundPayment {})
        );
    }
    // What a client sends when the bank transfer arrives.
    assert_eq!(
        payment::parse_command("ReceivePayment", json!({"amount": 380})),
        Ok(PaymentCommand::ReceivePayment { amount: 380.into() })
    );
    assert_eq!(
        payment::parse_command("VoidPayment", json!({"order_id": "o-1"})),
        Ok(PaymentCommand::VoidPayment {
            order_id: "o-1".id()
        })
    );
    assert_invalid_data(payment::parse_command("ReceivePayment", json!({})));
    // An id of the wrong JSON type is invalid data, not an id that breaks the id rule.
    assert_invalid_data(payment::parse_command(
        "VoidPayment",
        json!({"order_id": 7}),
    ));
    assert_invalid_data(payment::parse_command(
        "ReceivePayment",
        json!({"amount": 380, "order_id": "o-1"}),
    ));
    assert_invalid_data(payment::parse_command("VoidPayment", Value::Null));
}

#[test]
fn payment_commands_round_trip_through_json() {
    let commands = [
        PaymentCommand::AuthorizePayment {
            order_id: "o".id(),
            amount: 1.into(),
            method: "card".into(),
        },
        PaymentCommand::RefundPayment {},
        PaymentCommand::ReceivePayment { amount: 5.into() },
        PaymentCommand::VoidPayment { order_id: "o".id() },
    ];
    assert_round_trips(&commands, Payment::COMMAND_TYPES, payment::parse_command);
}

#[test]
fn unknown_payment_command_types_list_the_known_ones() {
    let message = unknown_type_message(payment::parse_command("CapturePayment", Value::Null));
    assert!(message.contains("CapturePayment"), "{message}");
    for known in Payment::COMMAND_TYPES {
        assert!(message.contains(known), "{message} should list {known}");
    }
}

#[test]
fn invalid_payment_command_data_is_refused() {
    assert_invalid_data(payment::parse_command(
        "AuthorizePayment",
        json!({"order_id": "o-1", "amount": 500}),
    ));
    assert_invalid_data(payment::parse_command(
        "AuthorizePayment",
        json!({"order_id": "o-1", "amount": "500", "method": "card"}),
    ));
    assert_invalid_data(payment::parse_command(
        "RefundPayment",
        json!({"amount": 5}),
    ));
    assert_invalid_data(payment::parse_command("RefundPayment", json!(true)));
}

#[test]
fn parse_errors_display_their_kind() {
    let unknown = order::parse_command("Nope", Value::Null).expect_err("unknown");
    assert!(
        unknown.to_string().starts_with("unknown command type: "),
        "{unknown}"
    );
    let invalid = order::parse_command("AddItem", json!({})).expect_err("invalid");
    assert!(
        invalid.to_string().starts_with("invalid command data: "),
        "{invalid}"
    );
    let _: &dyn std::error::Error = &invalid;
}
