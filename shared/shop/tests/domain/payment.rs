//! Given/when/then for the `Payment` aggregate.

use crate::{TextId, rejected_at_parse};
use eventfold_testkit::given;
use serde_json::json;
use shop::payment::{
    self, AUTHORIZATION_LIMIT, DECLINE_AMOUNT_OVER_LIMIT, DECLINE_CARD_DECLINED, DECLINED_METHOD,
    PENDING_METHOD, Payment, PaymentCommand as C, PaymentEvent as E, PaymentStatus,
};

fn authorize(amount: i64, method: &str) -> C {
    C::AuthorizePayment {
        order_id: "o-1".id(),
        amount: amount.into(),
        method: method.into(),
    }
}

fn authorized(amount: i64) -> E {
    E::PaymentAuthorized {
        order_id: "o-1".id(),
        amount: amount.into(),
        method: "card".into(),
    }
}

fn declined(amount: i64, method: &str, reason: &str) -> E {
    E::PaymentDeclined {
        order_id: "o-1".id(),
        amount: amount.into(),
        method: method.into(),
        reason: reason.into(),
    }
}

fn refunded(amount: i64) -> E {
    E::PaymentRefunded {
        order_id: "o-1".id(),
        amount: amount.into(),
    }
}

fn pending(amount: i64) -> E {
    E::PaymentPending {
        order_id: "o-1".id(),
        amount: amount.into(),
        method: PENDING_METHOD.into(),
    }
}

fn received(amount: i64) -> E {
    E::PaymentReceived {
        order_id: "o-1".id(),
        amount: amount.into(),
    }
}

fn voided(amount: i64) -> E {
    E::PaymentVoided {
        order_id: "o-1".id(),
        amount: amount.into(),
    }
}

fn receive(amount: i64) -> C {
    C::ReceivePayment {
        amount: amount.into(),
    }
}

fn void() -> C {
    C::VoidPayment {
        order_id: "o-1".id(),
    }
}

// --- AuthorizePayment ----------------------------------------------------------------------

#[test]
fn authorize_a_payment() {
    let state = given::<Payment>([])
        .when(authorize(500, "card"))
        .then([authorized(500)]);
    assert_eq!(state.status, Some(PaymentStatus::Authorized));
    assert_eq!(state.amount, 500.into());
    assert_eq!(state.order_id.as_deref(), Some("o-1"));
    assert_eq!(state.method.as_deref(), Some("card"));
}

#[test]
fn the_limit_itself_is_authorized() {
    given::<Payment>([])
        .when(authorize(AUTHORIZATION_LIMIT.minor(), "card"))
        .then([authorized(AUTHORIZATION_LIMIT.minor())]);
}

#[test]
fn an_amount_over_the_limit_is_declined_not_rejected() {
    let state = given::<Payment>([])
        .when(authorize(1_000_001, "card"))
        .then([declined(1_000_001, "card", DECLINE_AMOUNT_OVER_LIMIT)]);
    assert_eq!(state.status, Some(PaymentStatus::Declined));
    assert_eq!(state.decline_reason.as_deref(), Some("amount-over-limit"));
}

#[test]
fn a_declined_card_is_declined_not_rejected() {
    assert_eq!(DECLINED_METHOD, "card_declined");
    given::<Payment>([])
        .when(authorize(500, "card_declined"))
        .then([declined(500, "card_declined", DECLINE_CARD_DECLINED)]);
}

#[test]
fn authorize_needs_a_positive_amount() {
    for amount in [0, -1] {
        given::<Payment>([])
            .when(authorize(amount, "card"))
            .then_rejected("amount-must-be-positive");
    }
}

#[test]
fn authorize_needs_an_order_id_and_a_method() {
    rejected_at_parse(
        payment::parse_command(
            "AuthorizePayment",
            json!({"order_id": "", "amount": 1, "method": "card"}),
        ),
        "order-id-required",
    );
    given::<Payment>([])
        .when(authorize(1, ""))
        .then_rejected("method-required");
}

#[test]
fn authorizing_again_with_the_same_amount_is_already_done() {
    given::<Payment>([authorized(500)])
        .when(authorize(500, "card"))
        .then_nothing();
}

#[test]
fn authorizing_again_with_another_amount_is_rejected() {
    given::<Payment>([authorized(500)])
        .when(authorize(600, "card"))
        .then_rejected("payment-already-authorized");
}

#[test]
fn authorizing_for_another_order_is_rejected() {
    given::<Payment>([authorized(500)])
        .when(C::AuthorizePayment {
            order_id: "o-2".id(),
            amount: 500.into(),
            method: "card".into(),
        })
        .then_rejected("order-id-mismatch");
}

#[test]
fn repeating_a_declined_attempt_is_already_done() {
    given::<Payment>([declined(500, "card_declined", DECLINE_CARD_DECLINED)])
        .when(authorize(500, "card_declined"))
        .then_nothing();
}

#[test]
fn a_declined_payment_can_be_attempted_again_differently() {
    let state = given::<Payment>([declined(500, "card_declined", DECLINE_CARD_DECLINED)])
        .when(authorize(500, "card"))
        .then([authorized(500)]);
    assert_eq!(state.decline_reason, None);
}

#[test]
fn a_refunded_payment_cannot_be_authorized_again() {
    given::<Payment>([authorized(500), refunded(500)])
        .when(authorize(500, "card"))
        .then_rejected("payment-already-refunded");
}

// --- RefundPayment -------------------------------------------------------------------------

#[test]
fn refund_an_authorized_payment() {
    let state = given::<Payment>([authorized(500)])
        .when(C::RefundPayment {})
        .then([refunded(500)]);
    assert_eq!(state.status, Some(PaymentStatus::Refunded));
}

#[test]
fn refunding_again_is_already_done() {
    given::<Payment>([authorized(500), refunded(500)])
        .when(C::RefundPayment {})
        .then_nothing();
}

#[test]
fn a_payment_that_was_never_authorized_cannot_be_refunded() {
    given::<Payment>([])
        .when(C::RefundPayment {})
        .then_rejected("payment-not-authorized");
    given::<Payment>([declined(2_000_000, "card", DECLINE_AMOUNT_OVER_LIMIT)])
        .when(C::RefundPayment {})
        .then_rejected("payment-not-authorized");
}

#[test]
fn a_pending_payment_cannot_be_refunded() {
    given::<Payment>([pending(500)])
        .when(C::RefundPayment {})
        .then_rejected("payment-not-authorized");
}

#[test]
fn refund_a_received_payment() {
    let state = given::<Payment>([pending(500), received(500)])
        .when(C::RefundPayment {})
        .then([refunded(500)]);
    assert_eq!(state.status, Some(PaymentStatus::Refunded));
}

#[test]
fn a_voided_payment_cannot_be_refunded() {
    given::<Payment>([authorized(500), voided(500)])
        .when(C::RefundPayment {})
        .then_rejected("payment-voided");
}

// --- bank transfer: pending until ReceivePayment ----------------------------------------------

#[test]
fn a_bank_transfer_is_pending_not_authorized() {
    assert_eq!(PENDING_METHOD, "bank_transfer");
    let state = given::<Payment>([])
        .when(authorize(500, "bank_transfer"))
        .then([pending(500)]);
    assert_eq!(state.status, Some(PaymentStatus::Pending));
    assert_eq!(state.amount, 500.into());
}

#[test]
fn a_bank_transfer_over_the_limit_is_declined() {
    given::<Payment>([])
        .when(authorize(1_000_001, "bank_transfer"))
        .then([declined(
            1_000_001,
            "bank_transfer",
            DECLINE_AMOUNT_OVER_LIMIT,
        )]);
}

#[test]
fn authorizing_a_pending_payment_again() {
    given::<Payment>([pending(500)])
        .when(authorize(500, "bank_transfer"))
        .then_nothing();
    given::<Payment>([pending(500)])
        .when(authorize(600, "bank_transfer"))
        .then_rejected("payment-pending");
    given::<Payment>([pending(500), received(500)])
        .when(authorize(500, "bank_transfer"))
        .then_nothing();
    given::<Payment>([pending(500), received(500)])
        .when(authorize(600, "card"))
        .then_rejected("payment-already-received");
}

#[test]
fn receive_the_pending_amount() {
    let state = given::<Payment>([pending(500)])
        .when(receive(500))
        .then([received(500)]);
    assert_eq!(state.status, Some(PaymentStatus::Received));
}

#[test]
fn receiving_again_is_already_done() {
    given::<Payment>([pending(500), received(500)])
        .when(receive(500))
        .then_nothing();
}

#[test]
fn receiving_another_amount_is_rejected() {
    for amount in [499, 501] {
        let rejection = given::<Payment>([pending(500)])
            .when(receive(amount))
            .then_rejected("payment-amount-mismatch");
        assert!(rejection.message.contains("500"), "{}", rejection.message);
        given::<Payment>([pending(500), received(500)])
            .when(receive(amount))
            .then_rejected("payment-amount-mismatch");
    }
}

#[test]
fn receive_needs_a_positive_amount() {
    given::<Payment>([pending(500)])
        .when(receive(0))
        .then_rejected("amount-must-be-positive");
}

#[test]
fn only_a_pending_payment_receives_money() {
    for history in [
        vec![],
        vec![authorized(500)],
        vec![declined(500, "card_declined", DECLINE_CARD_DECLINED)],
    ] {
        given::<Payment>(history)
            .when(receive(500))
            .then_rejected("payment-not-pending");
    }
    given::<Payment>([pending(500), received(500), refunded(500)])
        .when(receive(500))
        .then_rejected("payment-already-refunded");
}

// --- VoidPayment ---------------------------------------------------------------------------

#[test]
fn void_a_payment_whose_money_was_not_received() {
    for (history, amount) in [
        (vec![], 0),
        (vec![pending(500)], 500),
        (vec![authorized(500)], 500),
        (
            vec![declined(500, "card_declined", DECLINE_CARD_DECLINED)],
            500,
        ),
    ] {
        let state = given::<Payment>(history)
            .when(void())
            .then([voided(amount)]);
        assert_eq!(state.status, Some(PaymentStatus::Voided));
        assert_eq!(state.order_id.as_deref(), Some("o-1"));
    }
}

#[test]
fn voiding_again_or_after_a_refund_is_already_done() {
    given::<Payment>([pending(500), voided(500)])
        .when(void())
        .then_nothing();
    given::<Payment>([authorized(500), refunded(500)])
        .when(void())
        .then_nothing();
}

#[test]
fn received_money_is_refunded_not_voided() {
    given::<Payment>([pending(500), received(500)])
        .when(void())
        .then_rejected("payment-already-received");
}

#[test]
fn void_needs_the_orders_id() {
    rejected_at_parse(
        payment::parse_command("VoidPayment", json!({"order_id": " "})),
        "order-id-required",
    );
    given::<Payment>([pending(500)])
        .when(C::VoidPayment {
            order_id: "o-2".id(),
        })
        .then_rejected("order-id-mismatch");
}

/// The deadline passed and the payment was voided: the transfer that arrives now, or an
/// authorisation sent before the void, is refused, not taken.
#[test]
fn a_voided_payment_takes_no_money() {
    let rejection = given::<Payment>([pending(500), voided(500)])
        .when(receive(500))
        .then_rejected("payment-voided");
    assert!(
        rejection.message.contains("voided"),
        "{}",
        rejection.message
    );
    for method in ["card", "bank_transfer"] {
        given::<Payment>([voided(0)])
            .when(authorize(500, method))
            .then_rejected("payment-voided");
    }
}

#[test]
fn order_ids_and_methods_are_bounded_ids() {
    let long = "m".repeat(shop::MAX_KEY_LEN + 1);
    given::<Payment>([])
        .when(authorize(100, &long))
        .then_rejected("method-invalid");
    rejected_at_parse(
        payment::parse_command(
            "AuthorizePayment",
            json!({"order_id": "o 1", "amount": 100, "method": "card"}),
        ),
        "order-id-invalid",
    );
}
