//! DynamoDB adapters and the attribute-value codec they share.

mod store;
pub mod value;

pub use store::{DynamoEventStore, MAX_ITEM_BYTES};
