//! State size under unbounded history: every aggregate and the saga fold 100,000 events on one
//! stream (in memory, through `decide` so only what the rules allow), with the longest ids the
//! id rule allows; the snapshot (the state as JSON, what the executor writes) is measured every
//! 10,000 events and must stay under the bound stated next to the aggregate.
//!
//! The curve: `cargo test -p shop --test state_size -- --nocapture --test-threads 1`
//! (`docs/state-size.md` quotes it).

use chrono::{DateTime, Duration, Utc};
use eventfold::{Aggregate, Rejection};
use shop::fulfilment::{
    self, FulfilmentInput, FulfilmentLine, ObservedPayment, ObservedStock, OrderFulfilment,
    PaymentObservation, PlacedOrder, StockObservation,
};
use shop::inventory::{self, Inventory, InventoryCommand, MAX_REMEMBERED_RELEASES};
use shop::order::{self, MAX_ORDER_LINES, Order, OrderCommand};
use shop::payment::{self, DECLINED_METHOD, Payment, PaymentCommand};
use shop::{MAX_KEY_LEN, MAX_TEXT_LEN};

/// Events folded on the one stream of each case.
const EVENTS: u64 = 100_000;
/// Measure the snapshot every this many events.
const EVERY: u64 = 10_000;

/// An id of the maximum length, distinct per `i`.
fn long_id<T: std::str::FromStr<Err = shop::values::IdError>>(prefix: &str, i: u64) -> T {
    let head = format!("{prefix}-{i}-");
    format!("{head}{}", "x".repeat(MAX_KEY_LEN - head.len()))
        .parse()
        .expect("a valid id")
}

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().expect("a time")
}

/// What one case measured: the snapshot size at each multiple of [`EVERY`].
struct Curve {
    name: &'static str,
    bound: usize,
    points: Vec<(u64, usize)>,
}

/// Folds the events `next` decides, one command at a time, until [`EVENTS`] events; `next`
/// gets the events so far and the state, and may expect a rejection (`Err` passes through
/// to it as the second argument of the following call). Returns the measured curve.
fn drive<A: Aggregate>(
    name: &'static str,
    bound: usize,
    mut next: impl FnMut(u64, &A::State, Option<Rejection>) -> A::Command,
) -> (Curve, A::State) {
    let mut state = A::initial();
    let (mut events, mut idle, mut last) = (0u64, 0u32, None);
    let mut points = Vec::new();
    while events < EVENTS {
        let command = next(events, &state, last.take());
        match A::decide(&state, &command) {
            Ok(decided) => {
                idle = if decided.is_empty() { idle + 1 } else { 0 };
                assert!(idle < 1000, "{name}: the mix makes no progress");
                for event in &decided {
                    state = A::evolve(state, event);
                    events += 1;
                    if events.is_multiple_of(EVERY) {
                        let size = serde_json::to_vec(&state).expect("a state").len();
                        points.push((events, size));
                    }
                }
            }
            Err(rejection) => last = Some(rejection),
        }
    }
    (
        Curve {
            name,
            bound,
            points,
        },
        state,
    )
}

fn check(curve: &Curve) {
    println!("{} (bound {} bytes)", curve.name, curve.bound);
    println!("  events   snapshot bytes");
    for (events, size) in &curve.points {
        println!("  {events:>7}  {size:>8}");
    }
    assert_eq!(curve.points.len() as u64, EVENTS / EVERY, "{}", curve.name);
    for (events, size) in &curve.points {
        assert!(
            *size <= curve.bound,
            "{}: the snapshot after {events} events is {size} bytes, over the bound of {}",
            curve.name,
            curve.bound
        );
    }
}

/// A hot SKU: reserve/release cycles of distinct orders (max-length ids, placed one second
/// apart, 20 held at a time), restocked as it goes, with late (stale) `ReserveStock`s of
/// released orders mixed in: the race the bounded memory is for, at scale. Each stale one
/// is already done (remembered) or refused (`reservation-expired`, forgotten): never taken.
#[test]
fn inventory_state_is_bounded() {
    const HELD: u64 = 20;
    let placed = |i: u64| t0() + Duration::seconds(i as i64);
    let reserve = |i: u64| InventoryCommand::ReserveStock {
        order_id: long_id("order", i),
        quantity: 1 + (i % 3) as i64,
        placed_at: Some(placed(i)),
    };
    // The commands of the cycle in progress, each with whether it is a stale reservation.
    let mut plan: std::collections::VecDeque<(InventoryCommand, bool)> = Default::default();
    let (mut cycle, mut stale_sent, mut stale_answered) = (0u64, false, 0u64);
    let (curve, state) = drive::<Inventory>(
        "Inventory",
        inventory::STATE_BOUND_BYTES,
        |_, state, rejection| {
            match (std::mem::take(&mut stale_sent), rejection) {
                // A stale reservation is answered without stock: already done (no events,
                // which `drive` would count as no progress) or refused as expired.
                (true, Some(r)) => {
                    assert_eq!(r.rule, "reservation-expired", "{r}");
                    stale_answered += 1;
                }
                (true, None) => stale_answered += 1,
                (false, Some(r)) => panic!("the mix was refused: {r}"),
                (false, None) => {}
            }
            if plan.is_empty() {
                cycle += 1;
                if state.available() < 10 {
                    plan.push_back((InventoryCommand::ReceiveStock { quantity: 1_000 }, false));
                }
                plan.push_back((reserve(cycle), false));
                if cycle > HELD {
                    let order_id = long_id("order", cycle - HELD);
                    plan.push_back((InventoryCommand::ReleaseStock { order_id }, false));
                }
                if cycle > 2_100 && cycle.is_multiple_of(4) {
                    // A late ReserveStock of an order released recently (remembered) or
                    // long ago (forgotten), alternately.
                    let back = if cycle.is_multiple_of(8) {
                        HELD + 2
                    } else {
                        HELD + 2_000
                    };
                    plan.push_back((reserve(cycle - back), true));
                }
            }
            let (command, stale) = plan.pop_front().expect("a planned command");
            stale_sent = stale;
            command
        },
    );
    check(&curve);
    assert!(stale_answered > 1_000, "the race was exercised");
    assert_eq!(state.released.len(), MAX_REMEMBERED_RELEASES);
    assert!(state.horizon.is_some());
    assert!(state.reservations.len() as u64 <= HELD + 1);
}

/// One draft edited for ever: lines of distinct max-length skus added and removed (at most
/// [`MAX_ORDER_LINES`] at a time), some added to again; then placed, confirmed and shipped.
#[test]
fn order_state_is_bounded() {
    let mut step = 0u64;
    let (curve, state) = drive::<Order>("Order", order::STATE_BOUND_BYTES, |events, s, r| {
        assert!(r.is_none(), "the mix was refused: {r:?}");
        step += 1;
        if s.status.is_none() {
            return OrderCommand::CreateOrder {
                customer_id: long_id("customer", 0),
            };
        }
        match EVENTS - events {
            3 => OrderCommand::PlaceOrder {
                payment_method: Some("p".repeat(MAX_KEY_LEN)),
            },
            2 => OrderCommand::ConfirmOrder {},
            1 => OrderCommand::ShipOrder {
                tracking_id: long_id("tracking", 0),
            },
            _ if s.lines.len() >= MAX_ORDER_LINES => OrderCommand::RemoveItem {
                sku: s.lines.keys().next().cloned().expect("a line"),
            },
            _ if step.is_multiple_of(5) => OrderCommand::AddItem {
                sku: s.lines.keys().next_back().cloned().expect("a line"),
                quantity: 1,
                unit_price: 100.into(),
            },
            _ => OrderCommand::AddItem {
                sku: long_id("sku", step),
                quantity: 1,
                unit_price: 100.into(),
            },
        }
    });
    check(&curve);
    // The cap was reached (the last cycle may have just removed a line).
    assert!(state.lines.len() >= MAX_ORDER_LINES - 1);
}

/// One payment declined over and over (another attempt may follow a decline), with the longest
/// order id; then authorised and refunded.
#[test]
fn payment_state_is_bounded() {
    let mut step = 0i64;
    let (curve, _) = drive::<Payment>("Payment", payment::STATE_BOUND_BYTES, |events, _, r| {
        assert!(r.is_none(), "the mix was refused: {r:?}");
        step += 1;
        match EVENTS - events {
            1 => PaymentCommand::RefundPayment {},
            2 => PaymentCommand::AuthorizePayment {
                order_id: long_id("order", 0),
                amount: 100.into(),
                method: "card".into(),
            },
            _ => PaymentCommand::AuthorizePayment {
                order_id: long_id("order", 0),
                amount: (1 + step % 1000).into(),
                method: DECLINED_METHOD.into(),
            },
        }
    });
    check(&curve);
}

/// One instance with [`MAX_ORDER_LINES`] lines of max-length skus, then observations of its
/// streams at ever newer versions (reservations and releases of its lines, payment attempts
/// pending and declined): every input a new fact, so each is one event on its log.
#[test]
fn saga_state_is_bounded() {
    let skus: Vec<shop::Sku> = (0..MAX_ORDER_LINES as u64)
        .map(|i| long_id("sku", i))
        .collect();
    let mut version = 0u64;
    let (curve, state) = drive::<OrderFulfilment>(
        "OrderFulfilment",
        fulfilment::STATE_BOUND_BYTES,
        |events, _, r| {
            assert!(r.is_none(), "the mix was refused: {r:?}");
            version += 1;
            if events == 0 {
                return FulfilmentInput::OrderPlaced(PlacedOrder {
                    order_id: long_id("order", 0),
                    customer_id: long_id("customer", 0),
                    lines: skus
                        .iter()
                        .map(|sku| FulfilmentLine {
                            sku: sku.clone(),
                            quantity: 1,
                        })
                        .collect(),
                    total: 1_000.into(),
                    payment_method: "card".into(),
                    placed_at: t0(),
                });
            }
            let sku = &skus[(version % skus.len() as u64) as usize];
            match version % 4 {
                0 => FulfilmentInput::PaymentObserved(PaymentObservation {
                    version,
                    payment: ObservedPayment::Declined {
                        reason: "r".repeat(MAX_TEXT_LEN),
                    },
                }),
                1 => FulfilmentInput::PaymentObserved(PaymentObservation {
                    version,
                    payment: ObservedPayment::Pending {
                        amount: 1_000.into(),
                    },
                }),
                2 => FulfilmentInput::StockObserved(StockObservation {
                    sku: sku.clone(),
                    version,
                    stock: ObservedStock::Reserved {
                        quantity: 1,
                        at: t0() + Duration::seconds(version as i64),
                    },
                }),
                _ => FulfilmentInput::StockObserved(StockObservation {
                    sku: sku.clone(),
                    version,
                    stock: ObservedStock::Released,
                }),
            }
        },
    );
    check(&curve);
    assert_eq!(state.lines.len(), MAX_ORDER_LINES);
}
