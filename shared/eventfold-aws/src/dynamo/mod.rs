//! DynamoDB adapters and the attribute-value codec they share.

mod store;
pub mod value;

pub use store::{DynamoEventStore, EXPIRES_AT, MAX_ITEM_BYTES};
