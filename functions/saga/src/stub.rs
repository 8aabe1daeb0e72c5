//! A saga that reacts to nothing, for the tests of the function's own mechanics (dispatch,
//! batch responses) apart from any domain.

use chrono::{DateTime, Utc};
use eventfold::{Aggregate, DomainEvent, EventEnvelope, NoCache, Rejection};
use eventfold_consumers::saga::{Pending, Saga, SagaCommand, SagaCommandVisitor};
use serde::{Deserialize, Serialize};

/// Takes no event as input, so it never has an instance, a command or a deadline.
#[derive(Debug)]
pub struct ReactsToNothing;

/// It records nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Nothing {}

impl DomainEvent for Nothing {}

/// It sends nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum NoCommand {}

impl SagaCommand for NoCommand {
    /// No target, and the saga's own instances never exist: nothing to cache.
    type Targets = NoCache;

    fn visit<V: SagaCommandVisitor<NoCache>>(&self, _visitor: V) -> V::Output {
        match *self {}
    }
}

impl Aggregate for ReactsToNothing {
    const CATEGORY: &'static str = "ReactsToNothing";
    type Event = Nothing;
    type State = ();
    type Command = ();

    fn initial() {}

    fn evolve(_state: (), event: &Nothing) {
        match *event {}
    }

    fn decide(_state: &(), _input: &()) -> Result<Vec<Nothing>, Rejection> {
        Ok(Vec::new())
    }
}

impl Saga for ReactsToNothing {
    type Send = NoCommand;

    fn input(
        _event: &EventEnvelope,
        _history: &[EventEnvelope],
    ) -> Result<Option<(String, ())>, eventfold_consumers::InputError> {
        Ok(None)
    }

    fn pending(_state: &()) -> Vec<Pending<NoCommand>> {
        Vec::new()
    }

    fn refused(_command: &Pending<NoCommand>, _rejection: &Rejection) {}

    fn waiting_since(_state: &()) -> Option<DateTime<Utc>> {
        None
    }

    fn timed_out(_now: DateTime<Utc>) {}
}
