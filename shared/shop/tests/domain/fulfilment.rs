//! Given/when/then for the `OrderFulfilment` saga: the happy paths (card, bank transfer, a
//! free order), each failure and the order of its compensation, refusals, deadlines,
//! redelivery, and the commands each state calls for.

use crate::{TextId, rejected_at_parse};
use chrono::{DateTime, Utc};
use eventfold::{Aggregate, Rejection};
use eventfold_consumers::{Pending, Saga, SagaCommandVisitor};
use eventfold_testkit::given;
use shop::fulfilment::{
    FulfilmentCommand, FulfilmentEvent as E, FulfilmentInput as I, FulfilmentLine,
    FulfilmentOutcome, FulfilmentState, ObservedOrder, ObservedPayment, ObservedStock,
    OrderFulfilment, OrderObservation, PAYMENT_TIMED_OUT, PaymentObservation, PaymentUndo,
    PlacedOrder, RESERVATION_TIMED_OUT, StockObservation, WaitingFor,
};
use shop::inventory::InventoryCommand;
use shop::order::OrderCommand;
use shop::payment::PaymentCommand;

pub fn at(minute: u32) -> DateTime<Utc> {
    format!("2024-03-01T09:{minute:02}:00Z")
        .parse()
        .expect("a time")
}

fn lines() -> Vec<FulfilmentLine> {
    ["apple", "pear"]
        .iter()
        .zip([2, 1])
        .map(|(sku, quantity)| FulfilmentLine {
            sku: (*sku).id(),
            quantity,
        })
        .collect()
}

fn place(total: i64, method: &str) -> I {
    I::OrderPlaced(PlacedOrder {
        order_id: "o-1".id(),
        customer_id: "alice".id(),
        lines: lines(),
        total: total.into(),
        payment_method: method.into(),
        placed_at: at(0),
    })
}

fn started(total: i64, method: &str) -> E {
    E::FulfilmentStarted(PlacedOrder {
        order_id: "o-1".id(),
        customer_id: "alice".id(),
        lines: lines(),
        total: total.into(),
        payment_method: method.into(),
        placed_at: at(0),
    })
}

fn stock(sku: &str, version: u64, stock: ObservedStock) -> (I, E) {
    (
        I::StockObserved(StockObservation {
            sku: sku.id(),
            version,
            stock: stock.clone(),
        }),
        E::StockObserved(StockObservation {
            sku: sku.id(),
            version,
            stock,
        }),
    )
}

fn reserved(sku: &str, version: u64, minute: u32) -> (I, E) {
    let quantity = if sku == "apple" { 2 } else { 1 };
    stock(
        sku,
        version,
        ObservedStock::Reserved {
            quantity,
            at: at(minute),
        },
    )
}

fn released(sku: &str, version: u64) -> (I, E) {
    stock(sku, version, ObservedStock::Released)
}

fn payment(version: u64, payment: ObservedPayment) -> (I, E) {
    (
        I::PaymentObserved(PaymentObservation {
            version,
            payment: payment.clone(),
        }),
        E::PaymentObserved(PaymentObservation { version, payment }),
    )
}

fn order(version: u64, order: ObservedOrder) -> (I, E) {
    (
        I::OrderObserved(OrderObservation {
            version,
            order: order.clone(),
        }),
        E::OrderObserved(OrderObservation { version, order }),
    )
}

fn cancelled(version: u64, reason: &str, by_saga: bool) -> (I, E) {
    order(
        version,
        ObservedOrder::Cancelled {
            reason: reason.into(),
            by_saga,
        },
    )
}

fn reserve_command(sku: &str) -> FulfilmentCommand {
    FulfilmentCommand::Inventory {
        sku: sku.id(),
        command: InventoryCommand::ReserveStock {
            order_id: "o-1".id(),
            quantity: if sku == "apple" { 2 } else { 1 },
            placed_at: Some(at(0)),
        },
    }
}

fn order_command(command: OrderCommand) -> FulfilmentCommand {
    FulfilmentCommand::Order {
        order_id: "o-1".id(),
        command,
    }
}

fn payment_command(command: PaymentCommand) -> FulfilmentCommand {
    FulfilmentCommand::Payment {
        order_id: "o-1".id(),
        command,
    }
}

fn refused(command: FulfilmentCommand, rule: &'static str) -> I {
    OrderFulfilment::refused(
        &Pending {
            step: "any".into(),
            command,
        },
        &Rejection::new(rule, format!("refused by {rule}")),
    )
}

fn refusal_event(rule: &str) -> (String, String) {
    (rule.to_owned(), format!("refused by {rule}"))
}

fn requested(amount: i64, method: &str, since: u32) -> E {
    E::PaymentRequested {
        amount: amount.into(),
        method: method.into(),
        since: at(since),
    }
}

fn completed(outcome: FulfilmentOutcome) -> E {
    E::FulfilmentCompleted { outcome }
}

fn release(sku: &str) -> E {
    E::ReleaseRequested { sku: sku.id() }
}

/// A saga instance driven one input at a time: each step asserts the events the input
/// produces and then that delivering it again produces none.
struct Run {
    history: Vec<E>,
}

impl Run {
    fn new() -> Self {
        Self { history: vec![] }
    }

    /// A run that has already reserved every line (apple at 09:01, pear at 09:02).
    fn all_reserved(total: i64, method: &str) -> Self {
        let mut run = Self::new();
        run.step(place(total, method), [started(total, method)]);
        run.step(reserved("apple", 3, 1).0, [reserved("apple", 3, 1).1]);
        run.step(
            reserved("pear", 7, 2).0,
            [reserved("pear", 7, 2).1, requested(total, method, 2)],
        );
        run
    }

    #[track_caller]
    fn step(&mut self, input: I, expected: impl IntoIterator<Item = E>) -> FulfilmentState {
        let expected: Vec<E> = expected.into_iter().collect();
        let state = given::<OrderFulfilment>(self.history.clone())
            .when(input.clone())
            .then(expected.clone());
        self.history.extend(expected);
        given::<OrderFulfilment>(self.history.clone())
            .when(input)
            .then_nothing();
        state
    }

    fn state(&self) -> FulfilmentState {
        OrderFulfilment::fold(OrderFulfilment::initial(), self.history.iter())
    }

    fn steps(&self) -> Vec<String> {
        OrderFulfilment::pending(&self.state())
            .into_iter()
            .map(|p| p.step)
            .collect()
    }

    fn commands(&self) -> Vec<FulfilmentCommand> {
        OrderFulfilment::pending(&self.state())
            .into_iter()
            .map(|p| p.command)
            .collect()
    }
}

// --- starting --------------------------------------------------------------------------------

#[test]
fn a_placed_order_starts_by_reserving_every_line() {
    let mut run = Run::new();
    let state = run.step(place(380, "card"), [started(380, "card")]);
    assert!(state.is_started());
    assert_eq!(run.steps(), ["reserve:apple", "reserve:pear"]);
    assert_eq!(
        run.commands(),
        [reserve_command("apple"), reserve_command("pear")]
    );
    assert_eq!(OrderFulfilment::waiting_since(&state), Some(at(0)));
    assert_eq!(state.waiting_for(), Some(WaitingFor::Stock));
}

#[test]
fn inputs_for_an_order_without_an_instance_are_ignored() {
    for input in [
        reserved("apple", 1, 1).0,
        payment(1, ObservedPayment::Authorized { amount: 5.into() }).0,
        cancelled(2, "why", false).0,
        refused(reserve_command("apple"), "insufficient-stock"),
        OrderFulfilment::timed_out(at(30)),
    ] {
        given::<OrderFulfilment>([]).when(input).then_nothing();
    }
    assert!(OrderFulfilment::pending(&FulfilmentState::default()).is_empty());
    assert_eq!(
        OrderFulfilment::waiting_since(&FulfilmentState::default()),
        None
    );
}

#[test]
fn the_same_order_placed_again_changes_nothing() {
    given::<OrderFulfilment>([started(380, "card")])
        .when(place(999, "bank_transfer"))
        .then_nothing();
}

/// A sku that cannot name an inventory stream is no `Sku`: no order line, saga input or
/// saga event carries one (the order refused it when it was added: `sku-invalid`), so the
/// saga never holds a line it cannot reserve. (Before skus had a type, the saga refused such
/// a line at once with `invalid-id` and compensated.)
#[test]
fn a_sku_that_names_no_stream_never_reaches_the_saga() {
    let data = serde_json::json!({
        "order_id": "o-1",
        "customer_id": "alice",
        "lines": [{"sku": "red apple", "quantity": 1}],
        "total": 5,
        "payment_method": "card",
        "placed_at": "2024-03-01T09:00:00Z",
    });
    let refused = rejected_at_parse(
        shop::fulfilment::parse_input("OrderPlaced", data),
        "sku-invalid",
    );
    assert!(refused.message.starts_with("sku must be"), "{refused}");
    assert_eq!(
        shop::Sku::new("red apple").map_err(|e| e.rule()),
        Err("sku-invalid")
    );
    let started = serde_json::json!({
        "order_id": "o-1",
        "customer_id": "alice",
        "lines": [{"sku": "red apple", "quantity": 1}],
        "total": 5,
        "payment_method": "card",
        "placed_at": "2024-03-01T09:00:00Z",
    });
    assert!(<E as eventfold::DomainEvent>::decode("FulfilmentStarted", &started).is_err());
}

// --- happy paths -----------------------------------------------------------------------------

#[test]
fn card_payment_happy_path() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    // The later reservation arrives first: the payment waits for both, and is asked for
    // as of the last one, whichever order they come in.
    run.step(reserved("pear", 7, 2).0, [reserved("pear", 7, 2).1]);
    assert_eq!(run.steps(), ["reserve:apple"]);
    let state = run.step(
        reserved("apple", 3, 1).0,
        [reserved("apple", 3, 1).1, requested(380, "card", 2)],
    );
    assert_eq!(run.steps(), ["authorize-payment"]);
    assert_eq!(
        run.commands(),
        [payment_command(PaymentCommand::AuthorizePayment {
            order_id: "o-1".id(),
            amount: 380.into(),
            method: "card".into(),
        })]
    );
    assert_eq!(OrderFulfilment::waiting_since(&state), Some(at(2)));
    let (authorized, seen) = payment(1, ObservedPayment::Authorized { amount: 380.into() });
    let state = run.step(authorized, [seen, E::ConfirmationRequested {}]);
    assert_eq!(run.steps(), ["confirm-order"]);
    assert_eq!(
        run.commands(),
        [order_command(OrderCommand::ConfirmOrder {})]
    );
    assert_eq!(OrderFulfilment::waiting_since(&state), None);
    let (confirmed, seen) = order(5, ObservedOrder::Confirmed);
    let state = run.step(confirmed, [seen, completed(FulfilmentOutcome::Confirmed)]);
    assert_eq!(state.outcome, Some(FulfilmentOutcome::Confirmed));
    assert!(run.steps().is_empty());
    assert_eq!(OrderFulfilment::waiting_since(&state), None);
    // Whatever else fails later (a refusal of a reservation long answered) changes nothing.
    given::<OrderFulfilment>(run.history.clone())
        .when(refused(reserve_command("apple"), "insufficient-stock"))
        .then_nothing();
}

#[test]
fn bank_transfer_waits_for_the_money() {
    let mut run = Run::all_reserved(380, "bank_transfer");
    let (pending, seen) = payment(1, ObservedPayment::Pending { amount: 380.into() });
    let state = run.step(pending, [seen]);
    assert!(run.steps().is_empty(), "nothing to send: the customer pays");
    assert_eq!(OrderFulfilment::waiting_since(&state), Some(at(2)));
    assert_eq!(state.waiting_for(), Some(WaitingFor::Payment));
    let (money, seen) = payment(2, ObservedPayment::Received { amount: 380.into() });
    run.step(money, [seen, E::ConfirmationRequested {}]);
    assert_eq!(run.steps(), ["confirm-order"]);
    run.step(
        order(5, ObservedOrder::Confirmed).0,
        [
            order(5, ObservedOrder::Confirmed).1,
            completed(FulfilmentOutcome::Confirmed),
        ],
    );
}

#[test]
fn a_free_order_needs_no_payment() {
    let mut run = Run::new();
    run.step(place(0, "card"), [started(0, "card")]);
    run.step(reserved("apple", 1, 1).0, [reserved("apple", 1, 1).1]);
    run.step(
        reserved("pear", 1, 2).0,
        [reserved("pear", 1, 2).1, E::ConfirmationRequested {}],
    );
    assert_eq!(run.steps(), ["confirm-order"]);
}

#[test]
fn an_order_confirmed_by_hand_completes_the_saga_when_it_gets_there() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    run.step(
        order(5, ObservedOrder::Confirmed).0,
        [order(5, ObservedOrder::Confirmed).1],
    );
    run.step(reserved("apple", 3, 1).0, [reserved("apple", 3, 1).1]);
    run.step(
        reserved("pear", 7, 2).0,
        [reserved("pear", 7, 2).1, requested(380, "card", 2)],
    );
    let (authorized, seen) = payment(1, ObservedPayment::Authorized { amount: 380.into() });
    run.step(
        authorized,
        [
            seen,
            E::ConfirmationRequested {},
            completed(FulfilmentOutcome::Confirmed),
        ],
    );
    assert!(run.steps().is_empty());
}

// --- failures and their compensation ---------------------------------------------------------

#[test]
fn a_refused_reservation_releases_the_reserved_lines_then_cancels() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    run.step(reserved("apple", 3, 1).0, [reserved("apple", 3, 1).1]);
    let (rule, message) = refusal_event("insufficient-stock");
    let state = run.step(
        refused(reserve_command("pear"), "insufficient-stock"),
        [
            E::ReservationRefused {
                sku: "pear".id(),
                rule,
                message,
            },
            release("apple"),
        ],
    );
    assert!(state.is_compensating());
    assert_eq!(OrderFulfilment::waiting_since(&state), None);
    assert_eq!(run.steps(), ["release:apple"]);
    let reason = "stock reservation refused for pear: insufficient-stock";
    run.step(
        released("apple", 4).0,
        [
            released("apple", 4).1,
            E::CancellationRequested {
                reason: reason.into(),
            },
        ],
    );
    assert_eq!(
        run.commands(),
        [order_command(OrderCommand::CancelOrder {
            reason: reason.into()
        })]
    );
    let state = run.step(
        cancelled(6, reason, true).0,
        [
            cancelled(6, reason, true).1,
            completed(FulfilmentOutcome::Cancelled),
        ],
    );
    assert_eq!(state.outcome, Some(FulfilmentOutcome::Cancelled));
    assert!(run.steps().is_empty());
}

/// The release of a line must not overtake its reservation: while a reservation is
/// unanswered, the saga asks for it again (the inventory answers "already done" or "no"),
/// and releases it once it is seen.
#[test]
fn a_reservation_in_flight_is_answered_before_anything_is_released() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    let (rule, message) = refusal_event("insufficient-stock");
    run.step(
        refused(reserve_command("pear"), "insufficient-stock"),
        [E::ReservationRefused {
            sku: "pear".id(),
            rule,
            message,
        }],
    );
    assert_eq!(run.steps(), ["reserve:apple"]);
    run.step(
        reserved("apple", 3, 1).0,
        [reserved("apple", 3, 1).1, release("apple")],
    );
    assert_eq!(run.steps(), ["release:apple"]);
}

#[test]
fn a_reservation_refused_with_nothing_reserved_cancels_at_once() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    let (rule, message) = refusal_event("insufficient-stock");
    run.step(
        refused(reserve_command("pear"), "insufficient-stock"),
        [E::ReservationRefused {
            sku: "pear".id(),
            rule,
            message,
        }],
    );
    let (rule, message) = refusal_event("insufficient-stock");
    run.step(
        refused(reserve_command("apple"), "insufficient-stock"),
        [
            E::ReservationRefused {
                sku: "apple".id(),
                rule,
                message,
            },
            E::CancellationRequested {
                reason: "stock reservation refused for apple: insufficient-stock; stock \
                         reservation refused for pear: insufficient-stock"
                    .into(),
            },
        ],
    );
    assert_eq!(run.steps(), ["cancel-order"]);
}

#[test]
fn a_declined_payment_releases_every_line_in_reverse_order_then_cancels() {
    for (payment_method, reason) in [
        ("card_declined", "card-declined"),
        ("card", "amount-over-limit"),
    ] {
        let mut run = Run::all_reserved(380, payment_method);
        let (declined, seen) = payment(
            1,
            ObservedPayment::Declined {
                reason: reason.into(),
            },
        );
        // Nothing to give back to a declined payment: the stock goes first.
        run.step(declined, [seen, release("pear"), release("apple")]);
        assert_eq!(run.steps(), ["release:pear", "release:apple"]);
        run.step(released("pear", 8).0, [released("pear", 8).1]);
        assert_eq!(run.steps(), ["release:apple"]);
        let why = format!("payment declined: {reason}");
        run.step(
            released("apple", 4).0,
            [
                released("apple", 4).1,
                E::CancellationRequested {
                    reason: why.clone(),
                },
            ],
        );
        run.step(
            cancelled(6, &why, true).0,
            [
                cancelled(6, &why, true).1,
                completed(FulfilmentOutcome::Cancelled),
            ],
        );
    }
}

#[test]
fn a_refused_authorisation_voids_the_payment_first() {
    let mut run = Run::all_reserved(380, "card");
    let (rule, message) = refusal_event("payment-already-authorized");
    let state = run.step(
        refused(
            payment_command(PaymentCommand::AuthorizePayment {
                order_id: "o-1".id(),
                amount: 380.into(),
                method: "card".into(),
            }),
            "payment-already-authorized",
        ),
        [
            E::PaymentRefused { rule, message },
            E::PaymentUndoRequested {
                undo: PaymentUndo::Void,
            },
        ],
    );
    assert!(state.is_compensating());
    assert_eq!(run.steps(), ["void-payment"]);
    assert_eq!(
        run.commands(),
        [payment_command(PaymentCommand::VoidPayment {
            order_id: "o-1".id()
        })]
    );
    let (voided, seen) = payment(2, ObservedPayment::Voided);
    run.step(voided, [seen, release("pear"), release("apple")]);
}

/// The customer cancels while the payment is authorised but not yet confirmed: the
/// payment is voided first, then the stock released; the order is already cancelled.
#[test]
fn the_customer_cancelling_undoes_payment_then_stock_in_that_order() {
    let mut run = Run::all_reserved(380, "card");
    let (authorized, seen) = payment(1, ObservedPayment::Authorized { amount: 380.into() });
    run.step(authorized, [seen, E::ConfirmationRequested {}]);
    let state = run.step(
        cancelled(6, "changed my mind", false).0,
        [
            cancelled(6, "changed my mind", false).1,
            E::PaymentUndoRequested {
                undo: PaymentUndo::Void,
            },
        ],
    );
    assert!(state.is_compensating() && state.order_is_cancelled());
    assert_eq!(
        run.steps(),
        ["void-payment"],
        "no confirmation, no release before the payment is undone"
    );
    let (voided, seen) = payment(2, ObservedPayment::Voided);
    run.step(voided, [seen, release("pear"), release("apple")]);
    run.step(released("apple", 4).0, [released("apple", 4).1]);
    let state = run.step(
        released("pear", 8).0,
        [
            released("pear", 8).1,
            completed(FulfilmentOutcome::Cancelled),
        ],
    );
    assert!(run.steps().is_empty(), "no CancelOrder: it is cancelled");
    assert_eq!(state.outcome, Some(FulfilmentOutcome::Cancelled));
}

#[test]
fn a_confirmation_refused_because_the_customer_cancelled_is_handled() {
    let mut run = Run::all_reserved(380, "card");
    let (authorized, seen) = payment(1, ObservedPayment::Authorized { amount: 380.into() });
    run.step(authorized, [seen, E::ConfirmationRequested {}]);
    let (rule, message) = refusal_event("order-cancelled");
    run.step(
        refused(
            order_command(OrderCommand::ConfirmOrder {}),
            "order-cancelled",
        ),
        [
            E::ConfirmationRefused { rule, message },
            E::PaymentUndoRequested {
                undo: PaymentUndo::Void,
            },
        ],
    );
    // The customer's cancellation itself arrives later and adds nothing.
    run.step(
        cancelled(6, "changed my mind", false).0,
        [cancelled(6, "changed my mind", false).1],
    );
    assert_eq!(run.steps(), ["void-payment"]);
}

#[test]
fn a_confirmation_refused_for_another_reason_cancels_the_order() {
    let mut run = Run::new();
    run.step(place(0, "card"), [started(0, "card")]);
    run.step(reserved("apple", 1, 1).0, [reserved("apple", 1, 1).1]);
    run.step(
        reserved("pear", 1, 2).0,
        [reserved("pear", 1, 2).1, E::ConfirmationRequested {}],
    );
    let (rule, message) = refusal_event("order-not-placed");
    run.step(
        refused(
            order_command(OrderCommand::ConfirmOrder {}),
            "order-not-placed",
        ),
        [
            E::ConfirmationRefused { rule, message },
            release("pear"),
            release("apple"),
        ],
    );
    run.step(released("pear", 2).0, [released("pear", 2).1]);
    run.step(
        released("apple", 2).0,
        [
            released("apple", 2).1,
            E::CancellationRequested {
                reason: "confirmation refused: order-not-placed".into(),
            },
        ],
    );
}

#[test]
fn a_cancelled_confirmed_order_gives_everything_back() {
    let mut run = Run::all_reserved(380, "bank_transfer");
    run.step(
        payment(1, ObservedPayment::Pending { amount: 380.into() }).0,
        [payment(1, ObservedPayment::Pending { amount: 380.into() }).1],
    );
    let (money, seen) = payment(2, ObservedPayment::Received { amount: 380.into() });
    run.step(money, [seen, E::ConfirmationRequested {}]);
    run.step(
        order(5, ObservedOrder::Confirmed).0,
        [
            order(5, ObservedOrder::Confirmed).1,
            completed(FulfilmentOutcome::Confirmed),
        ],
    );
    // Received money is refunded, not voided.
    run.step(
        cancelled(6, "changed my mind", false).0,
        [
            cancelled(6, "changed my mind", false).1,
            E::PaymentUndoRequested {
                undo: PaymentUndo::Refund,
            },
        ],
    );
    assert_eq!(
        run.commands(),
        [payment_command(PaymentCommand::RefundPayment {})]
    );
    let (refunded, seen) = payment(3, ObservedPayment::Refunded);
    run.step(refunded, [seen, release("pear"), release("apple")]);
    run.step(released("pear", 8).0, [released("pear", 8).1]);
    let state = run.step(
        released("apple", 4).0,
        [
            released("apple", 4).1,
            completed(FulfilmentOutcome::Cancelled),
        ],
    );
    assert_eq!(state.outcome, Some(FulfilmentOutcome::Cancelled));
}

#[test]
fn a_cancellation_the_order_refuses_ends_compensated() {
    let mut run = Run::all_reserved(380, "card_declined");
    run.step(
        payment(
            1,
            ObservedPayment::Declined {
                reason: "card-declined".into(),
            },
        )
        .0,
        [
            payment(
                1,
                ObservedPayment::Declined {
                    reason: "card-declined".into(),
                },
            )
            .1,
            release("pear"),
            release("apple"),
        ],
    );
    run.step(released("pear", 8).0, [released("pear", 8).1]);
    let why = "payment declined: card-declined";
    run.step(
        released("apple", 4).0,
        [
            released("apple", 4).1,
            E::CancellationRequested { reason: why.into() },
        ],
    );
    let cancel = order_command(OrderCommand::CancelOrder { reason: why.into() });
    // Cancelled meanwhile by the customer: done, cancelled.
    let mut raced = Run {
        history: run.history.clone(),
    };
    let (rule, message) = refusal_event("order-already-cancelled");
    raced.step(
        refused(cancel.clone(), "order-already-cancelled"),
        [
            E::CancellationRefused { rule, message },
            completed(FulfilmentOutcome::Cancelled),
        ],
    );
    // Shipped by hand meanwhile: it cannot be cancelled; undone, and said so.
    let (rule, message) = refusal_event("order-already-shipped");
    let state = run.step(
        refused(cancel, "order-already-shipped"),
        [
            E::CancellationRefused { rule, message },
            completed(FulfilmentOutcome::Compensated),
        ],
    );
    assert_eq!(
        state.order.cancel_refused.as_deref(),
        Some("order-already-shipped")
    );
    assert!(run.steps().is_empty());
}

// --- deadlines -------------------------------------------------------------------------------

#[test]
fn a_payment_that_times_out_is_voided_then_the_stock_released_then_the_order_cancelled() {
    let mut run = Run::all_reserved(380, "bank_transfer");
    run.step(
        payment(1, ObservedPayment::Pending { amount: 380.into() }).0,
        [payment(1, ObservedPayment::Pending { amount: 380.into() }).1],
    );
    let state = run.step(
        OrderFulfilment::timed_out(at(20)),
        [
            E::FulfilmentTimedOut {
                waiting_for: WaitingFor::Payment,
                at: at(20),
            },
            E::PaymentUndoRequested {
                undo: PaymentUndo::Void,
            },
        ],
    );
    assert_eq!(OrderFulfilment::waiting_since(&state), None);
    assert_eq!(run.steps(), ["void-payment"]);
    // Another tick changes nothing.
    given::<OrderFulfilment>(run.history.clone())
        .when(OrderFulfilment::timed_out(at(21)))
        .then_nothing();
    let (voided, seen) = payment(2, ObservedPayment::Voided);
    run.step(voided, [seen, release("pear"), release("apple")]);
    run.step(released("pear", 8).0, [released("pear", 8).1]);
    run.step(
        released("apple", 4).0,
        [
            released("apple", 4).1,
            E::CancellationRequested {
                reason: PAYMENT_TIMED_OUT.into(),
            },
        ],
    );
    assert_eq!(PAYMENT_TIMED_OUT, "payment timed out");
    assert_eq!(
        run.commands(),
        [order_command(OrderCommand::CancelOrder {
            reason: "payment timed out".into()
        })]
    );
}

/// The transfer arrived just before the void: the void is refused, the refusal waited out,
/// and the money refunded once the saga sees it.
#[test]
fn money_received_before_the_void_is_refunded() {
    let mut run = Run::all_reserved(380, "bank_transfer");
    run.step(
        payment(1, ObservedPayment::Pending { amount: 380.into() }).0,
        [payment(1, ObservedPayment::Pending { amount: 380.into() }).1],
    );
    run.step(
        OrderFulfilment::timed_out(at(20)),
        [
            E::FulfilmentTimedOut {
                waiting_for: WaitingFor::Payment,
                at: at(20),
            },
            E::PaymentUndoRequested {
                undo: PaymentUndo::Void,
            },
        ],
    );
    given::<OrderFulfilment>(run.history.clone())
        .when(refused(
            payment_command(PaymentCommand::VoidPayment {
                order_id: "o-1".id(),
            }),
            "payment-already-received",
        ))
        .then_nothing();
    let (money, seen) = payment(2, ObservedPayment::Received { amount: 380.into() });
    run.step(
        money,
        [
            seen,
            E::PaymentUndoRequested {
                undo: PaymentUndo::Refund,
            },
        ],
    );
    assert_eq!(run.steps(), ["refund-payment"]);
}

#[test]
fn reservations_have_a_deadline_too() {
    let mut run = Run::new();
    run.step(place(380, "card"), [started(380, "card")]);
    run.step(reserved("apple", 3, 1).0, [reserved("apple", 3, 1).1]);
    run.step(
        OrderFulfilment::timed_out(at(30)),
        [E::FulfilmentTimedOut {
            waiting_for: WaitingFor::Stock,
            at: at(30),
        }],
    );
    // pear is still unanswered: it is asked again before anything is released.
    assert_eq!(run.steps(), ["reserve:pear"]);
    let (rule, message) = refusal_event("insufficient-stock");
    run.step(
        refused(reserve_command("pear"), "insufficient-stock"),
        [
            E::ReservationRefused {
                sku: "pear".id(),
                rule,
                message,
            },
            release("apple"),
        ],
    );
    run.step(
        released("apple", 4).0,
        [
            released("apple", 4).1,
            E::CancellationRequested {
                reason: format!(
                    "stock reservation refused for pear: insufficient-stock; {RESERVATION_TIMED_OUT}"
                ),
            },
        ],
    );
}

#[test]
fn a_tick_when_nothing_waits_changes_nothing() {
    let mut run = Run::all_reserved(380, "card");
    let (authorized, seen) = payment(1, ObservedPayment::Authorized { amount: 380.into() });
    run.step(authorized, [seen, E::ConfirmationRequested {}]);
    given::<OrderFulfilment>(run.history.clone())
        .when(OrderFulfilment::timed_out(at(50)))
        .then_nothing();
}

// --- redelivery and stale observations ---------------------------------------------------------

#[test]
fn an_older_observation_than_the_one_recorded_is_ignored() {
    let mut run = Run::all_reserved(380, "bank_transfer");
    let (money, seen) = payment(2, ObservedPayment::Received { amount: 380.into() });
    run.step(money, [seen, E::ConfirmationRequested {}]);
    // The `PaymentPending` of version 1, delivered late, does not undo what version 2 said.
    given::<OrderFulfilment>(run.history.clone())
        .when(payment(1, ObservedPayment::Pending { amount: 380.into() }).0)
        .then_nothing();
    given::<OrderFulfilment>(run.history.clone())
        .when(reserved("apple", 2, 9).0)
        .then_nothing();
}

#[test]
fn stock_of_a_sku_not_in_the_order_is_ignored() {
    given::<OrderFulfilment>([started(380, "card")])
        .when(reserved("fig", 1, 1).0)
        .then_nothing();
}

// --- what it sends ---------------------------------------------------------------------------

/// Records where a command goes (whatever caches its targets have).
struct Target;

impl<T> SagaCommandVisitor<T> for Target {
    type Output = (&'static str, String, String);

    fn visit<A: Aggregate>(self, id: &str, command: A::Command) -> Self::Output {
        (A::CATEGORY, id.to_owned(), format!("{command:?}"))
    }
}

#[test]
fn each_command_reaches_its_target_aggregate() {
    use eventfold_consumers::SagaCommand;
    assert_eq!(
        reserve_command("apple").visit(Target),
        (
            "Inventory",
            "apple".into(),
            r#"ReserveStock { order_id: "o-1", quantity: 2, placed_at: Some(2024-03-01T09:00:00Z) }"#.into()
        )
    );
    assert_eq!(
        payment_command(PaymentCommand::RefundPayment {}).visit(Target),
        ("Payment", "o-1".into(), "RefundPayment".into())
    );
    assert_eq!(
        order_command(OrderCommand::ConfirmOrder {}).visit(Target),
        ("Order", "o-1".into(), "ConfirmOrder".into())
    );
    let pending = Pending {
        step: "reserve:apple".to_owned(),
        command: reserve_command("apple"),
    };
    assert_eq!(
        pending.command_id("acme/OrderFulfilment-o-1"),
        "acme/OrderFulfilment-o-1:reserve:apple"
    );
}

#[test]
fn a_refusal_names_the_refused_command() {
    let input = refused(reserve_command("apple"), "insufficient-stock");
    let json = serde_json::to_value(&input).expect("serializes");
    assert_eq!(json["type"], "Refused");
    assert_eq!(json["data"]["command"]["aggregate_type"], "Inventory");
    assert_eq!(json["data"]["command"]["command"]["type"], "ReserveStock");
    assert_eq!(json["data"]["rule"], "insufficient-stock");
    let back: I = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, input);
}
