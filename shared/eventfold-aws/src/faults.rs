//! The one classification of AWS errors: transient (retrying later may succeed) or
//! permanent (the caller's request or data is wrong; retrying the same thing never helps).
//!
//! Every adapter maps SDK errors through [`classify`], so a DynamoDB `ValidationException`
//! (a key too long, an item too large, a bad expression) is a refusal everywhere, never
//! `Unavailable`: a consumer fails such a message fast and visibly instead of retrying it as
//! an outage.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use eventfold::Cause;
use std::fmt;

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Throttling, a 5xx, a timeout, a dropped connection: retry later.
    Transient,
    /// A malformed request, missing resource or missing permission: retrying the same
    /// request fails the same way.
    Permanent,
}

/// Service error codes that no retry fixes (DynamoDB, SQS, SNS and the common AWS ones).
const PERMANENT_CODES: &[&str] = &[
    "ValidationException",
    "SerializationException",
    "ResourceNotFoundException",
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "IncompleteSignature",
    "ItemCollectionSizeLimitExceededException",
    "InvalidParameter",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidParameterCombination",
    "MissingParameter",
    "NotFound",
    "NotFoundException",
    "AuthorizationError",
    "InvalidAddress",
    "InvalidMessageContents",
    "UnsupportedOperation",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.UnsupportedOperation",
];

/// The kind of a service error `code` (`None`: the service named none). Unknown codes are
/// transient: a retry of an unknown failure costs little, giving up on an outage loses data.
pub fn classify_code(code: Option<&str>) -> Fault {
    match code {
        Some(c) if PERMANENT_CODES.contains(&c) => Fault::Permanent,
        _ => Fault::Transient,
    }
}

/// The kind of an SDK error: a request the SDK could not even build is permanent; a
/// service error is classified by its code; timeouts, dispatch and response failures are
/// transient.
pub fn classify<E, R>(e: &SdkError<E, R>) -> Fault
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::ConstructionFailure(_) => Fault::Permanent,
        SdkError::ServiceError(s) => classify_code(s.err().code()),
        _ => Fault::Transient,
    }
}

/// A failed AWS request, kept whole: shown with the SDK's full context (the service's code
/// and message; the SDK error's own `Display` is a terse "service error"), with the SDK
/// error itself as its source.
#[derive(Debug)]
pub struct SdkFailure {
    text: String,
    source: Cause,
}

impl SdkFailure {
    /// `e`, kept whole.
    pub fn new<E, R>(e: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        Self {
            text: DisplayErrorContext(&e).to_string(),
            source: Box::new(e),
        }
    }
}

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for SdkFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// A port's error, as an SDK failure becomes one: each adapter's error names the variant of a
/// transient failure (retry later) and of a permanent one (a refusal).
pub trait FromSdk {
    /// A throttle, an outage, a timeout.
    fn transient(cause: Cause) -> Self;
    /// A refusal no retry fixes (see [`classify`]).
    fn permanent(cause: Cause) -> Self;
}

/// The one conversion of SDK errors into port errors: classified by [`classify`], the SDK
/// error kept as the cause.
pub fn from_sdk<P, E, R>(e: SdkError<E, R>) -> P
where
    P: FromSdk,
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let fault = classify(&e);
    let cause: Cause = Box::new(SdkFailure::new(e));
    match fault {
        Fault::Transient => P::transient(cause),
        Fault::Permanent => P::permanent(cause),
    }
}

impl FromSdk for eventfold::StoreError {
    fn transient(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
    fn permanent(cause: Cause) -> Self {
        Self::Invalid(cause)
    }
}

impl FromSdk for eventfold_consumers::projection::ReadModelError {
    fn transient(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
    fn permanent(cause: Cause) -> Self {
        Self::Refused(cause)
    }
}

impl FromSdk for eventfold_consumers::deadletter::DeadLetterError {
    fn transient(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
    fn permanent(cause: Cause) -> Self {
        Self::Invalid(cause)
    }
}

impl FromSdk for eventfold_idempotency::IdempotencyError {
    fn transient(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
    fn permanent(cause: Cause) -> Self {
        Self::Refused(cause)
    }
}

/// The catalogue has no refusal of its own: every failure is "unavailable".
impl FromSdk for eventfold_streaming::CatalogueError {
    fn transient(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
    fn permanent(cause: Cause) -> Self {
        Self::Unavailable(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, status: u16) -> SdkError<PutItemError, Response> {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let raw = Response::new(
            StatusCode::try_from(status).expect("status"),
            SdkBody::empty(),
        );
        SdkError::service_error(PutItemError::generic(meta), raw)
    }

    #[test]
    fn caller_and_data_errors_are_permanent() {
        for code in [
            "ValidationException",
            "ResourceNotFoundException",
            "AccessDeniedException",
            "SerializationException",
            "ItemCollectionSizeLimitExceededException",
        ] {
            assert_eq!(
                classify(&service_error(code, 400)),
                Fault::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn throttling_outages_and_unknown_codes_are_transient() {
        for (code, status) in [
            ("ProvisionedThroughputExceededException", 400),
            ("ThrottlingException", 400),
            ("RequestLimitExceeded", 400),
            ("InternalServerError", 500),
            ("ServiceUnavailable", 503),
            ("SomethingNew", 400),
        ] {
            assert_eq!(
                classify(&service_error(code, status)),
                Fault::Transient,
                "{code}"
            );
        }
        let timeout: SdkError<PutItemError, Response> = SdkError::timeout_error("slow");
        assert_eq!(classify(&timeout), Fault::Transient);
        let construction: SdkError<PutItemError, Response> =
            SdkError::construction_failure("no table name");
        assert_eq!(classify(&construction), Fault::Permanent);
        assert_eq!(classify_code(None), Fault::Transient);
    }
}
