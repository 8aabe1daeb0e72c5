//! Given/when/then for aggregates: domain tests that read like the spec's examples.
//!
//! ```
//! # use eventfold::{Aggregate, DomainEvent, Rejection};
//! # use serde::{Serialize, Deserialize};
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum Ev { Opened {} }
//! # impl DomainEvent for Ev {}
//! # struct Door;
//! # impl Aggregate for Door {
//! #     const CATEGORY: &'static str = "Door";
//! #     type Event = Ev; type State = bool; type Command = ();
//! #     fn initial() -> bool { false }
//! #     fn evolve(_: bool, _: &Ev) -> bool { true }
//! #     fn decide(open: &bool, _: &()) -> Result<Vec<Ev>, Rejection> {
//! #         if *open { Ok(vec![]) } else { Ok(vec![Ev::Opened {}]) }
//! #     }
//! # }
//! use eventfold_testkit::given;
//! given::<Door>([]).when(()).then([Ev::Opened {}]);
//! given::<Door>([Ev::Opened {}]).when(()).then_nothing();
//! ```

use eventfold::aggregate::{Aggregate, Rejection};

/// A history to decide against.
pub struct Given<A: Aggregate> {
    state: A::State,
}

/// A command decided against a history.
pub struct When<A: Aggregate> {
    state: A::State,
    command: A::Command,
    result: Result<Vec<A::Event>, Rejection>,
}

/// Starts a scenario from `history`.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<A::Event> = history.into_iter().collect();
    Given {
        state: A::fold(A::initial(), events.iter()),
    }
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the history.
    pub fn when(self, command: A::Command) -> When<A> {
        let result = A::decide(&self.state, &command);
        When {
            state: self.state,
            command,
            result,
        }
    }

    /// The state the history folds to.
    pub fn state(&self) -> &A::State {
        &self.state
    }
}

impl<A: Aggregate> When<A> {
    /// Asserts the decision produced exactly `expected`; returns the state after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A::State {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "command {:?} produced other events",
                    self.command
                );
                A::fold(self.state, events.iter())
            }
            Err(r) => panic!(
                "command {:?} was rejected ({}: {}), expected events {expected:?}",
                self.command, r.rule, r.message
            ),
        }
    }

    /// Asserts the decision was "already done": no events.
    #[track_caller]
    pub fn then_nothing(self) {
        self.then([]);
    }

    /// Asserts the command was rejected by `rule`.
    #[track_caller]
    pub fn then_rejected(self, rule: &str) -> Rejection {
        match self.result {
            Err(r) if r.rule == rule => r,
            Err(r) => panic!(
                "command {:?} rejected by {} ({}), expected rule {rule}",
                self.command, r.rule, r.message
            ),
            Ok(events) => panic!(
                "command {:?} produced {events:?}, expected rejection by {rule}",
                self.command
            ),
        }
    }
}
