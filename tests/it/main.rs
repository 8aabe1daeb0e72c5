//! Integration tests against the serialized moto emulator: the DynamoDB event store and the
//! command API through the local gateway over real HTTP.

mod api;
mod store;
