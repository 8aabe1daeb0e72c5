//! Integration tests against the serialized moto emulator: event store, command and query
//! APIs over real HTTP, read models, the idempotency store, the stream -> SNS -> SQS fan-out
//! and its emulation.

mod api;
mod e2e;
mod fanout;
mod idempotency;
mod packing;
mod publisher;
mod query;
mod readmodels;
mod store;
