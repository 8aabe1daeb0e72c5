//! The one classification of AWS errors: transient (retrying later may succeed) or
//! permanent (the caller's request or data is wrong; retrying the same thing never helps).
//!
//! Every adapter maps SDK errors through [`classify`], so a DynamoDB `ValidationException`
//! (a key too long, an item too large, a bad expression) is a refusal everywhere, never
//! `Unavailable`: a consumer fails such a message fast and visibly instead of retrying it as
//! an outage.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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
