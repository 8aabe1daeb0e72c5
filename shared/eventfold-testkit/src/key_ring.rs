//! The contract every [`KeyRing`] adapter must pass (memory, the cached one, the AWS one):
//! one key per subject for life, racing creators agree, a forget is final and idempotent,
//! tenants are apart. Each run takes a unique `prefix` for its subjects so runs can share
//! a table; failures panic with the broken rule.

use eventfold::keyring::{KeyError, KeyRing, SubjectKey};

/// Runs every check of the contract.
pub async fn run_all(ring: &(impl KeyRing + ?Sized), prefix: &str) {
    one_key_per_subject(ring, prefix).await;
    racing_creators_agree(ring, prefix).await;
    forget_is_final(ring, prefix).await;
    tenants_are_apart(ring, prefix).await;
}

/// The same subject gets the same key; another subject another one; the key opens by id.
pub async fn one_key_per_subject(ring: &(impl KeyRing + ?Sized), prefix: &str) {
    let (a, b) = (format!("{prefix}-one-a"), format!("{prefix}-one-b"));
    assert_eq!(
        ring.status("t1", &a).await.expect("status"),
        SubjectKey::None
    );
    let first = ring.key_for_sealing("t1", &a).await.expect("a key");
    let again = ring.key_for_sealing("t1", &a).await.expect("the key");
    assert_eq!(first, again, "a subject has one key");
    let other = ring.key_for_sealing("t1", &b).await.expect("a key");
    assert_ne!(
        first.material(),
        other.material(),
        "each subject has its own key"
    );
    let opened = ring
        .key_for_opening("t1", &a, &first.id)
        .await
        .expect("open");
    assert_eq!(opened.as_ref(), Some(&first), "the key opens by its id");
    let wrong = ring
        .key_for_opening("t1", &a, "no-such-kid")
        .await
        .expect("open");
    assert!(wrong.is_none(), "an unknown key id opens nothing");
    assert_eq!(
        ring.status("t1", &a).await.expect("status"),
        SubjectKey::Active
    );
}

/// Two creators asking at once get one key.
pub async fn racing_creators_agree(ring: &(impl KeyRing + ?Sized), prefix: &str) {
    let s = format!("{prefix}-race");
    let (x, y) = futures_join(
        ring.key_for_sealing("t1", &s),
        ring.key_for_sealing("t1", &s),
    )
    .await;
    assert_eq!(
        x.expect("a key"),
        y.expect("a key"),
        "racing creators agree on one key"
    );
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    // Polled together (no runtime needed): both creators are in flight at once.
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("both futures completed"),
    }
}

/// After a forget the key opens nothing, no key is made again, and forgetting again is fine.
pub async fn forget_is_final(ring: &(impl KeyRing + ?Sized), prefix: &str) {
    let s = format!("{prefix}-forget");
    let key = ring.key_for_sealing("t1", &s).await.expect("a key");
    assert_eq!(
        ring.forget("t1", &s).await.expect("forget"),
        SubjectKey::Active
    );
    assert_eq!(
        ring.status("t1", &s).await.expect("status"),
        SubjectKey::Forgotten
    );
    let opened = ring.key_for_opening("t1", &s, &key.id).await.expect("open");
    assert!(opened.is_none(), "a forgotten key opens nothing");
    let refused = ring.key_for_sealing("t1", &s).await;
    assert!(
        matches!(refused, Err(KeyError::Forgotten { .. })),
        "no new key for a forgotten subject: {refused:?}"
    );
    assert_eq!(
        ring.forget("t1", &s).await.expect("again"),
        SubjectKey::Forgotten,
        "idempotent"
    );
    let never = format!("{prefix}-never");
    assert_eq!(
        ring.forget("t1", &never).await.expect("forget"),
        SubjectKey::None
    );
    assert!(
        ring.key_for_sealing("t1", &never).await.is_err(),
        "a tombstone even without a key"
    );
}

/// The same subject id in two tenants is two subjects; forgetting one leaves the other.
pub async fn tenants_are_apart(ring: &(impl KeyRing + ?Sized), prefix: &str) {
    let s = format!("{prefix}-tenants");
    let one = ring.key_for_sealing("t1", &s).await.expect("a key");
    let two = ring.key_for_sealing("t2", &s).await.expect("a key");
    assert_ne!(one.material(), two.material(), "keys are per tenant");
    ring.forget("t2", &s).await.expect("forget");
    assert_eq!(ring.key_for_sealing("t1", &s).await.expect("kept"), one);
    assert!(
        ring.key_for_opening("t2", &s, &one.id)
            .await
            .expect("open")
            .is_none()
    );
}
