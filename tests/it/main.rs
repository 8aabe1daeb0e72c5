//! Integration tests against the serialized moto emulator: event store, command and query
//! APIs over real HTTP, read models, the idempotency store, the stream -> SNS -> SQS fan-out
//! and its emulation, the saga runtime (filter policy, schedule, parameter overrides, runner on
//! DynamoDB), the streaming API (topics, publish, consumer groups and their members, history),
//! crypto-shredding (a forgotten customer leaves no plaintext anywhere), a hot SKU's bounded
//! state, the TTLs of expiring items, the recovery path
//! (dead letters, the DLQ processor, SNS outages), AWS's limits as the local stack enforces
//! them, one trace from a command to the consumers' queues, `eventfold verify` (every hop,
//! and the hop a removed permission breaks), the load run behind `docs/capacity.md` (small),
//! the operator console in a headless Chromium, and the docs' shell blocks (the README's
//! tour and every other block: run, checked or marked not run).

mod api;
mod capacity;
mod console;
mod contract;
mod dlq;
mod docs;
mod e2e;
mod fanout;
mod fulfilment;
mod gdpr;
mod groups;
mod hot_sku;
mod iam;
mod idempotency;
mod limits;
mod packing;
mod promote;
mod publisher;
mod query;
mod readme;
mod readmodels;
mod saga;
mod store;
mod streaming;
mod trace;
mod ttl;
mod verify;
