//! Properties every aggregate must have: folding is deterministic (and snapshot-safe),
//! replaying a history gives the live state, idempotent commands are harmless when
//! redelivered, and events survive the storage codec unchanged.

use eventfold::{Aggregate, DomainEvent};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use shop::inventory::{Inventory, InventoryCommand, InventoryEvent, InventoryState};
use shop::order::{Order, OrderCommand, OrderEvent, OrderState, OrderStatus};
use shop::payment::{
    AUTHORIZATION_LIMIT, Payment, PaymentCommand, PaymentEvent, PaymentState, PaymentStatus,
};
use shop::values::IdError;
use shop::{Money, Sku};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::str::FromStr;

// --- generic checks ------------------------------------------------------------------------

/// Runs `commands` live (decide, then evolve the accepted events), checking `invariant`
/// after every step; returns the live state and the recorded history.
fn run_live<A: Aggregate>(
    commands: &[A::Command],
    invariant: fn(&A::State) -> bool,
) -> Result<(A::State, Vec<A::Event>), TestCaseError> {
    let mut state = A::initial();
    let mut history = Vec::new();
    for command in commands {
        if let Ok(events) = A::decide(&state, command) {
            state = A::fold(state, events.iter());
            history.extend(events);
        }
        prop_assert!(
            invariant(&state),
            "invariant broken after {command:?}: {state:?}"
        );
    }
    Ok((state, history))
}

fn check_replay<A: Aggregate>(
    commands: &[A::Command],
    invariant: fn(&A::State) -> bool,
) -> Result<(), TestCaseError> {
    let (live, history) = run_live::<A>(commands, invariant)?;
    let replayed = A::fold(A::initial(), history.iter());
    prop_assert_eq!(&replayed, &live);
    // The command path's replay hands each decoded event over (`evolve_owned`): same state.
    let handed_over = history.into_iter().fold(A::initial(), A::evolve_owned);
    prop_assert_eq!(handed_over, live);
    Ok(())
}

fn check_idempotent<A: Aggregate>(
    commands: &[A::Command],
    idempotent: fn(&A::Command) -> bool,
) -> Result<(), TestCaseError> {
    let mut state = A::initial();
    for command in commands {
        let Ok(events) = A::decide(&state, command) else {
            continue;
        };
        state = A::fold(state, events.iter());
        if idempotent(command) {
            prop_assert_eq!(
                A::decide(&state, command),
                Ok(vec![]),
                "redelivered {:?} was not a no-op",
                command
            );
        }
    }
    Ok(())
}

fn check_deterministic<A: Aggregate>(
    events: &[A::Event],
    split: usize,
) -> Result<(), TestCaseError> {
    let once = A::fold(A::initial(), events.iter());
    let twice = A::fold(A::initial(), events.iter());
    prop_assert_eq!(&once, &twice);
    let handed_over = events.iter().cloned().fold(A::initial(), A::evolve_owned);
    prop_assert_eq!(&handed_over, &once, "evolve_owned must fold as evolve does");
    // Folding from a snapshot (serialized state) of a prefix gives the same state.
    let split = split.min(events.len());
    let prefix = A::fold(A::initial(), events[..split].iter());
    let json = serde_json::to_string(&prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let snapshot: A::State =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&snapshot, &prefix);
    prop_assert_eq!(A::fold(snapshot, events[split..].iter()), once);
    Ok(())
}

fn check_codec<A: Aggregate>(events: &[A::Event]) -> Result<(), TestCaseError> {
    for event in events {
        let stored = event
            .encode()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(stored.schema_version, expected_schema(&stored.event_type));
        prop_assert!(stored.data.is_object(), "{:?} has no data object", stored);
        let decoded = A::Event::decode(&stored.event_type, &stored.data)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&decoded, event);
    }
    Ok(())
}

/// The schema each event type is written in (what upcasters lift older data to).
fn expected_schema(event_type: &str) -> u32 {
    match event_type {
        "OrderPlaced" => 2,
        _ => 1,
    }
}

/// The event types a strategy's command sequences reach when run live.
fn reached_event_types<A: Aggregate>(
    commands: impl Strategy<Value = Vec<A::Command>>,
) -> BTreeSet<String> {
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..256 {
        let Ok(tree) = commands.new_tree(&mut runner) else {
            continue;
        };
        let Ok((_, history)) = run_live::<A>(&tree.current(), |_| true) else {
            continue;
        };
        for event in history {
            if let Ok(stored) = event.encode() {
                seen.insert(stored.event_type);
            }
        }
    }
    seen
}

fn names(types: &[&str]) -> BTreeSet<String> {
    types.iter().map(|t| (*t).to_owned()).collect()
}

/// Short strings that collide often, or arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["a", "b", ""]).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// Short ids that collide often, or arbitrary ones of the id rule (an id that breaks it is
/// no value of an id type: no event or command can carry one).
fn id<T: FromStr<Err = IdError> + Debug>() -> impl Strategy<Value = T> {
    prop_oneof![
        3 => select(vec!["a", "b"]).prop_map(String::from),
        1 => "[A-Za-z0-9_.:-]{1,128}",
    ]
    .prop_map(|text| text.parse().expect("a valid id"))
}

/// [`number`] as money.
fn money() -> impl Strategy<Value = Money> {
    number().prop_map(Money::from)
}

/// Small numbers, or arbitrary ones (to reach the saturating paths of `evolve`).
fn number() -> impl Strategy<Value = i64> {
    prop_oneof![3 => -3i64..20, 1 => any::<i64>()]
}

/// Mostly plausible quantities and prices, with a few edge values.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -1i64..6,
        2 => 0i64..1_500_000,
        1 => select(vec![i64::MAX, i64::MAX / 2, i64::MIN]),
    ]
}

// --- Order ---------------------------------------------------------------------------------

fn order_command() -> impl Strategy<Value = OrderCommand> {
    let sku = || select(vec!["apple", "pear"]).prop_map(|s| Sku::new(s).expect("a sku"));
    prop_oneof![
        1 => select(vec!["alice", "bob"]).prop_map(|c| OrderCommand::CreateOrder { customer_id: c.parse().expect("an id") }),
        5 => (sku(), amount(), amount()).prop_map(|(sku, quantity, unit_price)| {
            OrderCommand::AddItem { sku, quantity, unit_price: unit_price.into() }
        }),
        1 => sku().prop_map(|sku| OrderCommand::RemoveItem { sku }),
        2 => select(vec![None, Some("card"), Some("bank_transfer"), Some("")])
            .prop_map(|m| OrderCommand::PlaceOrder { payment_method: m.map(String::from) }),
        2 => Just(OrderCommand::ConfirmOrder {}),
        2 => select(vec!["T-1", "T-2"]).prop_map(|t| OrderCommand::ShipOrder { tracking_id: t.parse().expect("an id") }),
        1 => select(vec!["why", ""]).prop_map(|r| OrderCommand::CancelOrder { reason: r.into() }),
    ]
}

fn order_commands() -> impl Strategy<Value = Vec<OrderCommand>> {
    let created_first = (
        select(vec!["alice", "bob"]),
        prop::collection::vec(order_command(), 0..30),
    )
        .prop_map(|(customer, rest)| {
            let mut commands = vec![OrderCommand::CreateOrder {
                customer_id: customer.parse().expect("an id"),
            }];
            commands.extend(rest);
            commands
        });
    prop_oneof![4 => created_first, 1 => prop::collection::vec(order_command(), 0..30)]
}

fn order_event() -> impl Strategy<Value = OrderEvent> {
    prop_oneof![
        id().prop_map(|customer_id| OrderEvent::OrderCreated { customer_id }),
        (id(), number(), money()).prop_map(|(sku, quantity, unit_price)| {
            OrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
            }
        }),
        id().prop_map(|sku| OrderEvent::ItemRemoved { sku }),
        (money(), text()).prop_map(|(total, payment_method)| OrderEvent::OrderPlaced {
            total,
            payment_method
        }),
        Just(OrderEvent::OrderConfirmed {}),
        id().prop_map(|tracking_id| OrderEvent::OrderShipped { tracking_id }),
        text().prop_map(|reason| OrderEvent::OrderCancelled { reason }),
    ]
}

fn order_invariant(state: &OrderState) -> bool {
    let created_or_blank =
        state.status.is_some() || (state.lines.is_empty() && state.customer_id.is_none());
    let lines_valid = state
        .lines
        .values()
        .all(|l| l.quantity > 0 && !l.unit_price.is_negative());
    let shipped_has_tracking =
        state.status != Some(OrderStatus::Shipped) || state.tracking_id.is_some();
    let placed_has_method = !matches!(
        state.status,
        Some(OrderStatus::Placed | OrderStatus::Confirmed | OrderStatus::Shipped)
    ) || state
        .payment_method
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty());
    created_or_blank
        && lines_valid
        && shipped_has_tracking
        && placed_has_method
        && state.checked_total().is_some()
}

fn order_idempotent(command: &OrderCommand) -> bool {
    matches!(
        command,
        OrderCommand::CreateOrder { .. }
            | OrderCommand::PlaceOrder { .. }
            | OrderCommand::ConfirmOrder {}
            | OrderCommand::ShipOrder { .. }
            | OrderCommand::CancelOrder { .. }
    )
}

// --- Inventory -----------------------------------------------------------------------------

fn inventory_command() -> impl Strategy<Value = InventoryCommand> {
    let order_id = || select(vec!["o-1", "o-2", "o-3"]).prop_map(|o| o.parse().expect("an id"));
    prop_oneof![
        2 => amount().prop_map(|quantity| InventoryCommand::ReceiveStock { quantity }),
        3 => (order_id(), amount()).prop_map(|(order_id, quantity)| {
            InventoryCommand::ReserveStock {
                order_id,
                quantity,
                placed_at: None,
            }
        }),
        2 => order_id().prop_map(|order_id| InventoryCommand::ReleaseStock { order_id }),
    ]
}

fn inventory_commands() -> impl Strategy<Value = Vec<InventoryCommand>> {
    prop::collection::vec(inventory_command(), 0..30)
}

fn inventory_event() -> impl Strategy<Value = InventoryEvent> {
    prop_oneof![
        number().prop_map(|quantity| InventoryEvent::StockReceived { quantity }),
        (id(), number()).prop_map(|(order_id, quantity)| InventoryEvent::StockReserved {
            order_id,
            quantity,
            placed_at: None,
        }),
        (id(), number())
            .prop_map(|(order_id, quantity)| InventoryEvent::StockReleased { order_id, quantity }),
    ]
}

fn inventory_invariant(state: &InventoryState) -> bool {
    state.on_hand >= 0
        && state.reservations.values().all(|r| r.quantity > 0)
        && state.reserved() <= state.on_hand
        && state.available() == state.on_hand - state.reserved()
}

fn inventory_idempotent(command: &InventoryCommand) -> bool {
    matches!(
        command,
        InventoryCommand::ReserveStock { .. } | InventoryCommand::ReleaseStock { .. }
    )
}

// --- Payment -------------------------------------------------------------------------------

fn payment_command() -> impl Strategy<Value = PaymentCommand> {
    prop_oneof![
        4 => (
            select(vec!["o-1", "o-1", "o-1", "o-2"]),
            prop_oneof![3 => select(vec![500i64, 700]), 1 => amount()],
            select(vec!["card", "card_declined", "bank_transfer", ""]),
        )
            .prop_map(|(order_id, amount, method)| PaymentCommand::AuthorizePayment {
                order_id: order_id.parse().expect("an id"),
                amount: amount.into(),
                method: method.into(),
            }),
        1 => Just(PaymentCommand::RefundPayment {}),
        2 => prop_oneof![3 => select(vec![500i64, 700]), 1 => amount()]
            .prop_map(|amount| PaymentCommand::ReceivePayment { amount: amount.into() }),
        1 => select(vec!["o-1", "o-1", "o-2"])
            .prop_map(|order_id| PaymentCommand::VoidPayment { order_id: order_id.parse().expect("an id") }),
    ]
}

fn payment_commands() -> impl Strategy<Value = Vec<PaymentCommand>> {
    prop::collection::vec(payment_command(), 0..20)
}

fn payment_event() -> impl Strategy<Value = PaymentEvent> {
    prop_oneof![
        (id(), money(), text()).prop_map(|(order_id, amount, method)| {
            PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                method,
            }
        }),
        (id(), money(), text(), text()).prop_map(|(order_id, amount, method, reason)| {
            PaymentEvent::PaymentDeclined {
                order_id,
                amount,
                method,
                reason,
            }
        }),
        (id(), money())
            .prop_map(|(order_id, amount)| PaymentEvent::PaymentRefunded { order_id, amount }),
        (id(), money(), text()).prop_map(|(order_id, amount, method)| {
            PaymentEvent::PaymentPending {
                order_id,
                amount,
                method,
            }
        }),
        (id(), money())
            .prop_map(|(order_id, amount)| PaymentEvent::PaymentReceived { order_id, amount }),
        (id(), money())
            .prop_map(|(order_id, amount)| PaymentEvent::PaymentVoided { order_id, amount }),
    ]
}

fn payment_invariant(state: &PaymentState) -> bool {
    match state.status {
        None => state.order_id.is_none() && state.amount == Money::ZERO,
        Some(
            PaymentStatus::Authorized
            | PaymentStatus::Refunded
            | PaymentStatus::Pending
            | PaymentStatus::Received,
        ) => {
            state.order_id.is_some()
                && (Money::from_minor(1)..=AUTHORIZATION_LIMIT).contains(&state.amount)
        }
        Some(PaymentStatus::Declined) => state.order_id.is_some() && state.decline_reason.is_some(),
        // A void may come before any attempt (amount 0) or after one, a declined one too.
        Some(PaymentStatus::Voided) => state.order_id.is_some() && !state.amount.is_negative(),
    }
}

fn payment_idempotent(command: &PaymentCommand) -> bool {
    matches!(
        command,
        PaymentCommand::AuthorizePayment { .. }
            | PaymentCommand::RefundPayment {}
            | PaymentCommand::ReceivePayment { .. }
            | PaymentCommand::VoidPayment { .. }
    )
}

// --- the properties ------------------------------------------------------------------------

proptest! {
    #[test]
    fn order_folding_is_deterministic(events in prop::collection::vec(order_event(), 0..40), split in any::<usize>()) {
        check_deterministic::<Order>(&events, split)?;
    }

    #[test]
    fn inventory_folding_is_deterministic(events in prop::collection::vec(inventory_event(), 0..40), split in any::<usize>()) {
        check_deterministic::<Inventory>(&events, split)?;
    }

    #[test]
    fn payment_folding_is_deterministic(events in prop::collection::vec(payment_event(), 0..40), split in any::<usize>()) {
        check_deterministic::<Payment>(&events, split)?;
    }

    #[test]
    fn order_replay_equals_live(commands in order_commands()) {
        check_replay::<Order>(&commands, order_invariant)?;
    }

    #[test]
    fn inventory_replay_equals_live(commands in inventory_commands()) {
        check_replay::<Inventory>(&commands, inventory_invariant)?;
    }

    #[test]
    fn payment_replay_equals_live(commands in payment_commands()) {
        check_replay::<Payment>(&commands, payment_invariant)?;
    }

    #[test]
    fn order_idempotent_commands_are_harmless_when_redelivered(commands in order_commands()) {
        check_idempotent::<Order>(&commands, order_idempotent)?;
    }

    #[test]
    fn inventory_idempotent_commands_are_harmless_when_redelivered(commands in inventory_commands()) {
        check_idempotent::<Inventory>(&commands, inventory_idempotent)?;
    }

    #[test]
    fn payment_idempotent_commands_are_harmless_when_redelivered(commands in payment_commands()) {
        check_idempotent::<Payment>(&commands, payment_idempotent)?;
    }

    #[test]
    fn order_events_round_trip_through_the_codec(events in prop::collection::vec(order_event(), 0..20)) {
        check_codec::<Order>(&events)?;
    }

    #[test]
    fn inventory_events_round_trip_through_the_codec(events in prop::collection::vec(inventory_event(), 0..20)) {
        check_codec::<Inventory>(&events)?;
    }

    #[test]
    fn payment_events_round_trip_through_the_codec(events in prop::collection::vec(payment_event(), 0..20)) {
        check_codec::<Payment>(&events)?;
    }
}

// --- the generators reach every event (so the properties above are not vacuous) ------------

#[test]
fn generated_order_commands_reach_every_event() {
    assert_eq!(
        reached_event_types::<Order>(order_commands()),
        names(&[
            "OrderCreated",
            "ItemAdded",
            "ItemRemoved",
            "OrderPlaced",
            "OrderConfirmed",
            "OrderShipped",
            "OrderCancelled",
        ])
    );
}

#[test]
fn generated_inventory_commands_reach_every_event() {
    assert_eq!(
        reached_event_types::<Inventory>(inventory_commands()),
        names(&["StockReceived", "StockReserved", "StockReleased"])
    );
}

#[test]
fn generated_payment_commands_reach_every_event() {
    assert_eq!(
        reached_event_types::<Payment>(payment_commands()),
        names(&[
            "PaymentAuthorized",
            "PaymentDeclined",
            "PaymentRefunded",
            "PaymentPending",
            "PaymentReceived",
            "PaymentVoided",
        ])
    );
}
