//! Sending a saga command to its target: the visitor that learns the target type and decides
//! the command there.

use crate::saga::SagaCommandVisitor;
use eventfold::aggregate::Aggregate;
use eventfold::cache::{CacheFor, StateCaches};
use eventfold::envelope::{Metadata, StreamId};
use eventfold::executor::{CommandError, CommandExecutor};
use eventfold::store::EventStore;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, as the visitor that sends a command to its target returns it.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends one saga command to its target through the executor: the visit hands over the
/// target type and the command, which the decision owns.
pub(super) struct Sender<'a, E, T> {
    pub(super) executor: &'a CommandExecutor<E, T>,
    pub(super) tenant: &'a str,
    pub(super) context: &'a Metadata,
    /// When the invocation must answer: lost races are retried until then at most.
    pub(super) deadline: Option<std::time::Instant>,
}

impl<'a, E: EventStore, T: StateCaches> SagaCommandVisitor<T> for Sender<'a, E, T> {
    /// The target stream, and how the command went.
    type Output = BoxFuture<'a, (String, Result<(), CommandError>)>;

    fn visit<A: Aggregate>(self, id: &str, command: A::Command) -> Self::Output
    where
        T: CacheFor<A>,
    {
        let target = StreamId::new(self.tenant, A::CATEGORY, id);
        let shown = format!("{}/{}-{id}", self.tenant, A::CATEGORY);
        let Sender {
            executor,
            context,
            deadline,
            ..
        } = self;
        Box::pin(async move {
            let target = match target {
                Ok(t) => t,
                Err(e) => return (shown, Err(CommandError::Internal(e.into()))),
            };
            // As a command of the API: `A::assume_new` lets a command that starts a stream
            // (a payment's authorisation) append without reading the stream first.
            let result = executor
                .execute_within::<A>(&target, None, &command, context, deadline)
                .await;
            (shown, result.map(|_| ()))
        })
    }
}
