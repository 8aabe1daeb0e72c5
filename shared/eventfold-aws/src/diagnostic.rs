//! A function's error as Lambda reports it: a stable `errorType` and, as `errorMessage`, the
//! error with its whole cause chain (the runtime's own conversions keep only the outermost
//! message).

use lambda_http::lambda_runtime::Diagnostic;
use std::error::Error;

/// `error` and each of its sources, outermost first, joined by `": "`.
pub fn cause_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Lambda's report of `error`: `error_type` (a stable name alarms and log queries can
/// match) and the cause chain ([`cause_chain`]).
pub fn report(error_type: &str, error: &(dyn Error + 'static)) -> Diagnostic {
    Diagnostic {
        error_type: error_type.to_owned(),
        error_message: cause_chain(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_report_carries_every_cause() {
        let error = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(cause_chain(&error), "outer: middle: inner");
        let d = report("test.Outer", &error);
        assert_eq!(d.error_type, "test.Outer");
        assert_eq!(d.error_message, "outer: middle: inner");
    }
}
