//! Commands from their parts, and what the registry knows of an aggregate.
//!
//! Every shop aggregate's commands are an adjacently tagged serde enum (`{"type": ..,
//! "data": ..}`) whose variant names `strum::VariantNames` lists; [`RegisteredAggregate`]
//! builds one from its type name and JSON data and names the command and event types. Each
//! aggregate module implements it for its aggregate, and [`crate::registry`] lists them: the
//! aggregates import this module, never the registry.
//!
//! Nothing here knows where a command comes from: refusing clients the commands of an
//! aggregate that takes none from outside ([`RegisteredAggregate::ACCEPTS_EXTERNAL_COMMANDS`])
//! is the API's business.

use crate::values::IdError;
use eventfold::{Aggregate, Rejection, StreamId};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use strum::VariantNames;

/// Why a command could not be built from its type name and JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandParseError {
    /// The type is not one of the aggregate's commands (HTTP: 400). The message names the
    /// offending type and lists the known ones.
    UnknownType(String),
    /// The type is known but its data is not an object with the command's fields (a field
    /// is missing, has the wrong type, or is not one of the command's fields) (HTTP: 400).
    InvalidData(String),
    /// The data has the command's shape, but an id in it breaks the id rule
    /// ([`crate::values`]): the [`Rejection`] of its kind's rule, e.g. `sku-invalid`, the
    /// one `decide` gave before ids had types (HTTP: 422).
    Rejected(Rejection),
}

impl fmt::Display for CommandParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownType(message) => write!(f, "unknown command type: {message}"),
            Self::InvalidData(message) => write!(f, "invalid command data: {message}"),
            Self::Rejected(rejection) => write!(f, "command rejected: {rejection}"),
        }
    }
}

impl std::error::Error for CommandParseError {}

/// Builds an adjacently tagged command (`{"type": .., "data": ..}`) of `category` from its
/// parts. `null` data means "no fields" and is read as `{}`; any other data must be an object.
/// An id the value types refuse is the [`Rejection`] of its rule.
fn parse_tagged<C: DeserializeOwned>(
    category: &str,
    known_types: &[&str],
    command_type: &str,
    data: Value,
) -> Result<C, CommandParseError> {
    if !known_types.contains(&command_type) {
        return Err(CommandParseError::UnknownType(format!(
            "'{command_type}' is not a {category} command; expected one of: {}",
            known_types.join(", ")
        )));
    }
    let data = match data {
        Value::Null => Value::Object(Map::new()),
        object @ Value::Object(_) => object,
        other => {
            return Err(CommandParseError::InvalidData(format!(
                "{command_type}: data must be a JSON object (or null), not {other}"
            )));
        }
    };
    let mut tagged = Map::new();
    tagged.insert("type".into(), Value::String(command_type.into()));
    tagged.insert("data".into(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(|e| {
        match IdError::from_message(&e.to_string()) {
            Some(refused) => CommandParseError::Rejected(refused.rejection()),
            None => CommandParseError::InvalidData(format!("{command_type}: {e}")),
        }
    })
}

/// An aggregate of the registry: its command and event type names come from its enums
/// (`strum::VariantNames`, which names variants as serde does: the shop's enums rename
/// nothing), and commands parse from a type name and JSON data.
pub trait RegisteredAggregate:
    Aggregate<Command: DeserializeOwned + VariantNames, Event: VariantNames>
{
    /// The command type names [`Self::parse_command`] accepts, in declaration order.
    const COMMAND_TYPES: &'static [&'static str] = <Self::Command as VariantNames>::VARIANTS;

    /// The event type names of the aggregate's streams, in declaration order.
    const EVENT_TYPES: &'static [&'static str] = <Self::Event as VariantNames>::VARIANTS;

    /// Whether the aggregate takes commands from outside the system (a client). False for
    /// an aggregate only the system drives (a saga: its commands are its inputs).
    const ACCEPTS_EXTERNAL_COMMANDS: bool = true;

    /// Command types only the system sends (the forget flow's `ForgetCustomer`): the API
    /// refuses them from clients as unknown types. None by default.
    const INTERNAL_COMMANDS: &'static [&'static str] = &[];

    /// Checks a command against the stream it is sent to, for rules `decide` cannot see
    /// (it knows no stream id): a customer's id must be its stream's, because it is the data
    /// subject whose key seals the stream's personal data. Callers that build a stream from
    /// input (the command API) call it before executing. Accepts everything by default.
    fn check_stream(_stream: &StreamId, _command: &Self::Command) -> Result<(), Rejection> {
        Ok(())
    }

    /// Builds a command from its type name and JSON data (`{"type": .., "data": ..}` split in
    /// two). `null` data means "no fields"; unknown fields are refused.
    fn parse_command(command_type: &str, data: Value) -> Result<Self::Command, CommandParseError> {
        parse_tagged(Self::CATEGORY, Self::COMMAND_TYPES, command_type, data)
    }
}
