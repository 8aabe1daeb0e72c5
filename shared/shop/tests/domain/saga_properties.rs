//! Exactly once, as properties.
//!
//! - **At the targets**: every command the saga sends, once accepted, changes nothing when
//!   it arrives again, at once (no events, no error) or later, after anything else the saga
//!   or a client did to that stream (no events). This is what makes a stale command (sent
//!   by a concurrent invocation from an older state) harmless.
//! - **At the saga**: a world (order, inventories, payment) is simulated with a runner that
//!   records each input, then sends the pending commands (feeding refusals back at once),
//!   with crashes between the two, a customer who cancels or pays, and deadlines passing.
//!   Its inputs, delivered again with duplicates (each 1 to 3 times) and reordered within
//!   what the infrastructure allows, give the same final state and the same pending
//!   commands, and every redelivery produces no events.
//!
//! What the infrastructure allows: inputs from one stream keep their order (the runner
//! checkpoints each source stream); the answer to a command (its target's event or its
//! refusal) comes after everything the saga had seen when it sent the command; an action
//! from outside (the customer's cancellation or transfer, a passed deadline) happens at a
//! point in time, so what the saga had seen before it is delivered before it and the rest
//! after. Everything else (answers to the commands of one step, from different streams,
//! arriving in any order; a duplicate at any later time) is shuffled.

use crate::TextId;
use chrono::{DateTime, Duration, Utc};
use eventfold::{Aggregate, DomainEvent, EventEnvelope, Metadata, Rejection, StreamId};
use eventfold_consumers::{Pending, Saga, SagaCommand, SagaCommandVisitor};
use proptest::prelude::*;
use proptest::sample::select;
use shop::fulfilment::{FulfilmentInput, FulfilmentState, OrderFulfilment};
use shop::inventory::{Inventory, InventoryCommand, InventoryState};
use shop::order::{Order, OrderCommand};
use shop::payment::{Payment, PaymentCommand};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

// --- at the targets ----------------------------------------------------------------------------

/// Runs `commands` (each marked whether the saga sends it) after `history`; checks that
/// every saga command, once accepted, is already done when repeated at once and produces
/// no events when repeated after any later step.
fn check_saga_commands_stay_done<A: Aggregate>(
    history: &[A::Event],
    commands: &[(A::Command, bool)],
    saga_sends: fn(&A::State, &A::Command) -> bool,
) -> Result<(), TestCaseError>
where
    A::Command: Clone,
{
    let mut state = A::fold(A::initial(), history.iter());
    let mut accepted: Vec<A::Command> = Vec::new();
    for (command, from_saga) in commands {
        if *from_saga && !saga_sends(&state, command) {
            continue;
        }
        if let Ok(events) = A::decide(&state, command) {
            state = A::fold(state, events.iter());
            if *from_saga {
                prop_assert_eq!(
                    A::decide(&state, command),
                    Ok(vec![]),
                    "{:?} repeated at once was not already done",
                    command
                );
                accepted.push(command.clone());
            }
        }
        for done in &accepted {
            let again = A::decide(&state, done).unwrap_or_default();
            prop_assert!(
                again.is_empty(),
                "{:?} repeated after {:?} produced {:?}",
                done,
                command,
                again
            );
        }
    }
    Ok(())
}

/// The saga releases a line only once it has seen the line reserved for the order: at the
/// inventory its release never comes before its reservation.
fn inventory_saga_sends(state: &InventoryState, command: &InventoryCommand) -> bool {
    match command {
        InventoryCommand::ReleaseStock { order_id } => {
            state.reservations.contains_key(order_id) || state.released.contains_key(order_id)
        }
        _ => true,
    }
}

fn always<S, C>(_: &S, _: &C) -> bool {
    true
}

fn inventory_case() -> impl Strategy<Value = Vec<(InventoryCommand, bool)>> {
    (1i64..4).prop_flat_map(|quantity| {
        let saga = prop_oneof![
            Just(InventoryCommand::ReserveStock {
                order_id: "o-1".id(),
                quantity,
                placed_at: None,
            }),
            Just(InventoryCommand::ReleaseStock {
                order_id: "o-1".id(),
            }),
        ]
        .prop_map(|c| (c, true));
        let others = prop_oneof![
            (1i64..4).prop_map(|quantity| InventoryCommand::ReceiveStock { quantity }),
            (1i64..4).prop_map(|quantity| InventoryCommand::ReserveStock {
                order_id: "o-2".id(),
                quantity,
                placed_at: None,
            }),
            Just(InventoryCommand::ReleaseStock {
                order_id: "o-2".id(),
            }),
        ]
        .prop_map(|c| (c, false));
        prop::collection::vec(prop_oneof![saga, others], 0..25)
    })
}

fn payment_case() -> impl Strategy<Value = Vec<(PaymentCommand, bool)>> {
    (
        select(vec![300i64, 2_000_000]),
        select(vec!["card", "card_declined", "bank_transfer"]),
    )
        .prop_flat_map(|(amount, method)| {
            let saga = prop_oneof![
                Just(PaymentCommand::AuthorizePayment {
                    order_id: "o-1".id(),
                    amount: amount.into(),
                    method: method.into(),
                }),
                Just(PaymentCommand::VoidPayment {
                    order_id: "o-1".id(),
                }),
                Just(PaymentCommand::RefundPayment {}),
            ]
            .prop_map(|c| (c, true));
            // The customer pays, right or wrong.
            let client = select(vec![amount, amount + 1]).prop_map(|amount| {
                (
                    PaymentCommand::ReceivePayment {
                        amount: amount.into(),
                    },
                    false,
                )
            });
            prop::collection::vec(prop_oneof![3 => saga, 1 => client], 0..20)
        })
}

fn order_case() -> impl Strategy<Value = Vec<(OrderCommand, bool)>> {
    let saga = prop_oneof![
        Just(OrderCommand::ConfirmOrder {}),
        Just(OrderCommand::CancelOrder {
            reason: "payment timed out".into(),
        }),
    ]
    .prop_map(|c| (c, true));
    let client = prop_oneof![
        Just(OrderCommand::CancelOrder {
            reason: "changed my mind".into(),
        }),
        Just(OrderCommand::ShipOrder {
            tracking_id: "T-1".id(),
        }),
    ]
    .prop_map(|c| (c, false));
    prop::collection::vec(prop_oneof![saga, client], 0..12)
}

fn placed_order() -> Vec<shop::order::OrderEvent> {
    use shop::order::OrderEvent as E;
    vec![
        E::OrderCreated {
            customer_id: "alice".id(),
        },
        E::ItemAdded {
            sku: "apple".id(),
            quantity: 2,
            unit_price: 150.into(),
        },
        E::OrderPlaced {
            total: 300.into(),
            payment_method: "card".into(),
        },
    ]
}

proptest! {
    #[test]
    fn saga_commands_stay_done_at_the_inventory(commands in inventory_case()) {
        check_saga_commands_stay_done::<Inventory>(&[], &commands, inventory_saga_sends)?;
    }

    #[test]
    fn saga_commands_stay_done_at_the_payment(commands in payment_case()) {
        check_saga_commands_stay_done::<Payment>(&[], &commands, always)?;
    }

    #[test]
    fn saga_commands_stay_done_at_the_order(commands in order_case()) {
        check_saga_commands_stay_done::<Order>(&placed_order(), &commands, always)?;
    }
}

// --- the simulated world -----------------------------------------------------------------------

const TENANT: &str = "acme";
const SAGA_STREAM: &str = "acme/OrderFulfilment-o-1";

fn base() -> DateTime<Utc> {
    "2024-03-01T09:00:00Z".parse().expect("a time")
}

/// Every stream of the world as stored envelopes.
#[derive(Default)]
struct World {
    streams: HashMap<String, Vec<EventEnvelope>>,
    clock: i64,
}

impl World {
    /// Runs `command` on `A`'s stream `id` the way the executor does: fold, decide, append.
    fn execute<A: Aggregate>(
        &mut self,
        id: &str,
        command: &A::Command,
        command_id: &str,
    ) -> Result<Vec<EventEnvelope>, Rejection> {
        let stream = StreamId::new(TENANT, A::CATEGORY, id).expect("valid stream");
        let history = self.streams.entry(stream.to_string()).or_default();
        let state = history.iter().fold(A::initial(), |state, e| {
            let event = A::Event::decode(&e.event_type, &e.data).expect("decodes");
            A::evolve(state, &event)
        });
        let events = A::decide(&state, command)?;
        self.clock += 1;
        let at = base() + Duration::seconds(self.clock);
        let history = self.streams.entry(stream.to_string()).or_default();
        let mut written = Vec::new();
        for event in events {
            let envelope = event.encode().expect("encodes").into_envelope(
                &stream,
                history.len() as u64 + 1,
                at,
                Metadata::root(TENANT, "sim", command_id),
            );
            history.push(envelope.clone());
            written.push(envelope);
        }
        Ok(written)
    }

    fn history(&self, stream: &str) -> &[EventEnvelope] {
        self.streams.get(stream).map_or(&[], Vec::as_slice)
    }
}

/// Sends a saga command to its target in the world.
struct Send<'a> {
    world: &'a mut World,
    command_id: String,
}

impl<T> SagaCommandVisitor<T> for Send<'_> {
    type Output = Result<Vec<EventEnvelope>, Rejection>;

    fn visit<A: Aggregate>(self, id: &str, command: A::Command) -> Self::Output {
        self.world.execute::<A>(id, &command, &self.command_id)
    }
}

/// Something from outside the saga, after a given delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// The customer cancels the order.
    Cancel,
    /// The customer's bank transfer arrives (the pending amount).
    Pay,
    /// The runner's tick finds the deadline passed.
    Tick,
}

#[derive(Debug, Clone)]
struct Scenario {
    /// (sku, quantity, unit price, stock on hand).
    lines: Vec<(&'static str, i64, i64, i64)>,
    method: &'static str,
    /// Actions, each after the delivery of that index.
    actions: Vec<(usize, Action)>,
    /// Deliveries after which the runner crashes before sending anything.
    crashes: BTreeSet<usize>,
}

/// One input as the ordered run delivered it.
#[derive(Debug, Clone)]
struct Delivery {
    input: FulfilmentInput,
    /// Inputs from one source keep their order (a stream; a refusal is its own source).
    source: String,
    /// The answer to a command sent after this delivery (`None`: nothing the saga sent).
    cause: Option<usize>,
    /// An action from outside: a point in time.
    external: bool,
}

/// The ordered run: every input delivered once, in the order it arises.
struct Ordered {
    deliveries: Vec<Delivery>,
    saga: FulfilmentState,
}

fn instance_input(world: &World, envelope: &EventEnvelope) -> Option<FulfilmentInput> {
    let history = if OrderFulfilment::needs_history(envelope) {
        world.history(&envelope.stream_id)
    } else {
        &[]
    };
    match OrderFulfilment::input(envelope, history).expect("a decodable input") {
        Some((id, input)) if id == "o-1" => Some(input),
        _ => None,
    }
}

struct Runner {
    world: World,
    saga: FulfilmentState,
    deliveries: Vec<Delivery>,
    queue: VecDeque<Delivery>,
}

impl Runner {
    fn deliver(&mut self, delivery: Delivery) -> usize {
        let events = OrderFulfilment::decide(&self.saga, &delivery.input).expect("never rejects");
        self.saga = OrderFulfilment::fold(self.saga.clone(), events.iter());
        self.deliveries.push(delivery);
        self.deliveries.len() - 1
    }

    fn enqueue(&mut self, envelopes: Vec<EventEnvelope>, cause: Option<usize>, external: bool) {
        for envelope in envelopes {
            if let Some(input) = instance_input(&self.world, &envelope) {
                self.queue.push_back(Delivery {
                    input,
                    source: envelope.stream_id.clone(),
                    cause,
                    external,
                });
            }
        }
    }

    /// Sends every pending command; a refusal is delivered at once and the commands sent
    /// again (what the runner does), a bounded number of times.
    fn send_pending(&mut self, mut last: usize) {
        for _ in 0..8 {
            let mut refused = false;
            for pending in OrderFulfilment::pending(&self.saga) {
                let command_id = pending.command_id(SAGA_STREAM);
                let sent = pending.command.visit(Send {
                    world: &mut self.world,
                    command_id,
                });
                match sent {
                    Ok(envelopes) => self.enqueue(envelopes, Some(last), false),
                    Err(rejection) => {
                        let input = OrderFulfilment::refused(&pending, &rejection);
                        let before = self.saga.clone();
                        let index = self.deliver(Delivery {
                            input,
                            source: format!("refusal-{}", self.deliveries.len()),
                            cause: Some(last),
                            external: false,
                        });
                        if self.saga != before {
                            last = index;
                            refused = true;
                            break;
                        }
                    }
                }
            }
            if !refused {
                return;
            }
        }
    }

    fn act(&mut self, action: Action, after: usize, scenario: &Scenario) {
        match action {
            Action::Cancel => {
                let cancel = OrderCommand::CancelOrder {
                    reason: "changed my mind".into(),
                };
                if let Ok(envelopes) = self.world.execute::<Order>("o-1", &cancel, "customer") {
                    self.enqueue(envelopes, None, true);
                }
            }
            Action::Pay => {
                let total: i64 = scenario.lines.iter().map(|(_, q, p, _)| q * p).sum();
                let pay = PaymentCommand::ReceivePayment {
                    amount: total.into(),
                };
                if let Ok(envelopes) = self.world.execute::<Payment>("o-1", &pay, "customer") {
                    self.enqueue(envelopes, None, true);
                }
            }
            Action::Tick => {
                if OrderFulfilment::waiting_since(&self.saga).is_some() {
                    let at = base() + Duration::hours(1) + Duration::seconds(after as i64);
                    let index = self.deliver(Delivery {
                        input: OrderFulfilment::timed_out(at),
                        source: format!("tick-{after}"),
                        cause: None,
                        external: true,
                    });
                    self.send_pending(index);
                }
            }
        }
    }
}

fn run_ordered(scenario: &Scenario) -> Ordered {
    let mut runner = Runner {
        world: World::default(),
        saga: OrderFulfilment::initial(),
        deliveries: Vec::new(),
        queue: VecDeque::new(),
    };
    for (sku, _, _, on_hand) in &scenario.lines {
        if *on_hand > 0 {
            let receive = InventoryCommand::ReceiveStock { quantity: *on_hand };
            runner
                .world
                .execute::<Inventory>(sku, &receive, "stock")
                .expect("stock arrives");
        }
    }
    let mut commands = vec![OrderCommand::CreateOrder {
        customer_id: "alice".id(),
    }];
    for (sku, quantity, unit_price, _) in &scenario.lines {
        commands.push(OrderCommand::AddItem {
            sku: (*sku).id(),
            quantity: *quantity,
            unit_price: (*unit_price).into(),
        });
    }
    commands.push(OrderCommand::PlaceOrder {
        payment_method: Some(scenario.method.into()),
    });
    for command in &commands {
        let envelopes = runner
            .world
            .execute::<Order>("o-1", command, "client")
            .expect("the customer places the order");
        runner.enqueue(envelopes, None, true);
    }
    let mut actions: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for (after, action) in &scenario.actions {
        actions.entry(*after).or_default().push(*action);
    }
    while let Some(delivery) = runner.queue.pop_front() {
        let index = runner.deliver(delivery);
        if !scenario.crashes.contains(&index) {
            runner.send_pending(index);
        }
        for action in actions.remove(&index).unwrap_or_default() {
            runner.act(action, index, scenario);
        }
        if runner.queue.is_empty() {
            // What a crash left unsent goes with the next delivery; at the end, with the
            // redelivery of the last one.
            runner.send_pending(runner.deliveries.len() - 1);
        }
    }
    Ordered {
        deliveries: runner.deliveries,
        saga: runner.saga,
    }
}

// --- delivering again --------------------------------------------------------------------------

/// A delivery order of the ordered run's inputs that the infrastructure allows, chosen by
/// `keys` (the lowest key among the deliverable inputs goes next), with each input
/// `copies` times (extra copies at later positions chosen by `spots`).
fn redelivery(
    deliveries: &[Delivery],
    keys: &[u32],
    copies: &[u8],
    spots: &[u32],
) -> Vec<(usize, bool)> {
    let n = deliveries.len();
    let pick = |values: &[u32], i: usize| values[i % values.len()];
    let mut delivered = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let previous_of_source = |k: usize| {
        (0..k)
            .rev()
            .find(|j| deliveries[*j].source == deliveries[k].source)
    };
    for _ in 0..n {
        let ready = |k: usize| {
            let d = &deliveries[k];
            !delivered[k]
                && d.cause.is_none_or(|c| delivered[..=c].iter().all(|x| *x))
                && previous_of_source(k).is_none_or(|j| delivered[j])
                && (!d.external || delivered[..k].iter().all(|x| *x))
                && (0..k).all(|e| !deliveries[e].external || delivered[e])
        };
        let next = (0..n)
            .filter(|k| ready(*k))
            .min_by_key(|k| (pick(keys, *k), *k))
            .expect("the ordered run itself is an allowed order");
        delivered[next] = true;
        order.push(next);
    }
    let mut sequence: Vec<(usize, bool)> = order.iter().map(|k| (*k, true)).collect();
    for k in 0..n {
        let extra = copies[k % copies.len()].saturating_sub(1);
        for c in 0..extra {
            let first = sequence
                .iter()
                .position(|(j, is_first)| *j == k && *is_first)
                .expect("delivered");
            let room = sequence.len() - first;
            let spot = first + 1 + (pick(spots, k * 3 + c as usize) as usize % room);
            sequence.insert(spot, (k, false));
        }
    }
    sequence
}

fn commands_of(state: &FulfilmentState) -> Vec<Pending<shop::fulfilment::FulfilmentCommand>> {
    OrderFulfilment::pending(state)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let line = (select(vec![0i64, 100, 400_000]), 1i64..4, 0i64..5);
    (
        prop::sample::subsequence(vec!["apple", "fig", "pear"], 1..=3),
        prop::collection::vec(line, 3),
        select(vec!["card", "card", "card_declined", "bank_transfer"]),
        prop::collection::vec(
            (
                0usize..14,
                select(vec![Action::Cancel, Action::Pay, Action::Tick]),
            ),
            0..4,
        ),
        prop::collection::btree_set(0usize..14, 0..3),
    )
        .prop_map(|(skus, lines, method, actions, crashes)| Scenario {
            lines: skus
                .into_iter()
                .zip(lines)
                .map(|(sku, (price, quantity, on_hand))| (sku, quantity, price, on_hand))
                .collect(),
            method,
            actions,
            crashes,
        })
}

fn check_redelivery(
    scenario: &Scenario,
    keys: &[u32],
    copies: &[u8],
    spots: &[u32],
) -> Result<(), TestCaseError> {
    let ordered = run_ordered(scenario);
    let sequence = redelivery(&ordered.deliveries, keys, copies, spots);
    let mut state = OrderFulfilment::initial();
    for (k, first) in &sequence {
        let input = &ordered.deliveries[*k].input;
        let events = OrderFulfilment::decide(&state, input)
            .map_err(|r| TestCaseError::fail(format!("{input:?} rejected: {r}")))?;
        if !first {
            prop_assert!(
                events.is_empty(),
                "redelivered {:?} produced {:?}",
                input,
                events
            );
        }
        state = OrderFulfilment::fold(state, events.iter());
    }
    prop_assert_eq!(
        &state,
        &ordered.saga,
        "delivered as {:?} of {:?}",
        sequence,
        ordered.deliveries
    );
    prop_assert_eq!(commands_of(&state), commands_of(&ordered.saga));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn saga_inputs_redelivered_and_reordered_give_the_same_saga(
        scenario in scenario(),
        keys in prop::collection::vec(any::<u32>(), 1..64),
        copies in prop::collection::vec(1u8..=3, 1..64),
        spots in prop::collection::vec(any::<u32>(), 1..64),
    ) {
        check_redelivery(&scenario, &keys, &copies, &spots)?;
    }
}

// --- the simulation is not vacuous -------------------------------------------------------------

/// Over many generated scenarios the ordered runs reach every way the saga ends and every
/// step of its log that the world can cause, and redelivery does reorder.
#[test]
fn generated_scenarios_reach_every_outcome_and_step() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut outcomes = BTreeSet::new();
    let mut logged = BTreeSet::new();
    let mut reordered = 0;
    for _ in 0..400 {
        let scenario = scenario().new_tree(&mut runner).expect("a tree").current();
        let ordered = run_ordered(&scenario);
        outcomes.insert(format!("{:?}", ordered.saga.outcome));
        let mut state = OrderFulfilment::initial();
        for d in &ordered.deliveries {
            for event in OrderFulfilment::decide(&state, &d.input).expect("decides") {
                logged.insert(event.encode().expect("encodes").event_type);
                state = OrderFulfilment::evolve(state, &event);
            }
        }
        let n = ordered.deliveries.len() as u32;
        let keys: Vec<u32> = (0..n).rev().collect();
        let order: Vec<usize> = redelivery(&ordered.deliveries, &keys, &[1], &[0])
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if order.windows(2).any(|w| w[0] > w[1]) {
            reordered += 1;
        }
    }
    for outcome in ["None", "Some(Confirmed)", "Some(Cancelled)"] {
        assert!(
            outcomes.contains(outcome),
            "{outcome} never reached: {outcomes:?}"
        );
    }
    for step in [
        "FulfilmentStarted",
        "StockObserved",
        "PaymentObserved",
        "OrderObserved",
        "ReservationRefused",
        "FulfilmentTimedOut",
        "PaymentRequested",
        "ConfirmationRequested",
        "PaymentUndoRequested",
        "ReleaseRequested",
        "CancellationRequested",
        "ConfirmationRefused",
        "FulfilmentCompleted",
    ] {
        assert!(logged.contains(step), "{step} never logged: {logged:?}");
    }
    assert!(reordered > 100, "only {reordered} runs were reordered");
}
