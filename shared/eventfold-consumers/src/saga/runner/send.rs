//! Sending a saga command to its target: the visitors that learn the target type and decide the command there.

use crate::saga::{SagaCommand, SagaCommandVisitor};
use eventfold::aggregate::Aggregate;
use eventfold::envelope::{Metadata, StreamId};
use eventfold::executor::{CommandError, CommandExecutor};
use eventfold::store::EventStore;
use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, as the visitor that sends a command to its target returns it.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one saga command to its target through the executor (the visitor learns the target
/// type; the command itself is reached again, by reference, inside the decision).
pub(super) struct Sender<'a, E, C> {
    pub(super) executor: &'a CommandExecutor<E>,
    pub(super) tenant: &'a str,
    pub(super) command: &'a C,
    pub(super) context: &'a Metadata,
}

impl<'a, E: EventStore, C: SagaCommand> SagaCommandVisitor for Sender<'a, E, C> {
    /// The target stream, and how the command went.
    type Output = BoxFuture<'a, (String, Result<(), CommandError>)>;

    fn visit<A: Aggregate>(self, id: &str, _command: &A::Command) -> Self::Output {
        let target = StreamId::new(self.tenant, A::CATEGORY, id);
        let shown = format!("{}/{}-{id}", self.tenant, A::CATEGORY);
        let Sender {
            executor,
            command,
            context,
            ..
        } = self;
        Box::pin(async move {
            let target = match target {
                Ok(t) => t,
                Err(e) => return (shown, Err(CommandError::Internal(e.into()))),
            };
            // The visitor cannot keep `_command` (it is only lent for the call), so the
            // decision visits the saga command again, with the target's state.
            let result = executor
                .execute_with::<A, _>(
                    &target,
                    None,
                    |state| command.visit(DecideAs::<A> { state }),
                    context,
                )
                .await;
            (shown, result.map(|_| ()))
        })
    }
}

/// Decides a saga command against the state of its target `A` (the type the first visit
/// found).
struct DecideAs<'s, A: Aggregate> {
    state: &'s A::State,
}

impl<A: Aggregate> SagaCommandVisitor for DecideAs<'_, A> {
    type Output = Result<Vec<A::Event>, CommandError>;

    fn visit<B: Aggregate>(self, _id: &str, command: &B::Command) -> Self::Output {
        let changed = || {
            CommandError::Internal(
                format!(
                    "a saga command's target changed from {} to {} between two visits",
                    A::CATEGORY,
                    B::CATEGORY
                )
                .into(),
            )
        };
        if TypeId::of::<A>() != TypeId::of::<B>() {
            return Err(changed());
        }
        // A and B are the same type, so these casts cannot fail.
        let state: &dyn Any = self.state;
        let state = state.downcast_ref::<B::State>().ok_or_else(changed)?;
        B::decide(state, command)
            .map_err(CommandError::Rejected)?
            .into_iter()
            .map(|event| {
                let event: Box<dyn Any> = Box::new(event);
                event
                    .downcast::<A::Event>()
                    .map(|e| *e)
                    .map_err(|_| changed())
            })
            .collect()
    }
}
