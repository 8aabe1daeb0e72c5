//! Denials as AWS answers them, per protocol, so a function's SDK raises the error it would
//! raise in AWS:
//!
//! - DynamoDB: `400`, `{"__type":"com.amazon.coral.service#AccessDeniedException","Message":…}`;
//! - SQS (JSON): `403`, the same `__type` with the query-compatible code `AccessDenied` in
//!   `x-amzn-query-error` (what the SDK reports as the error code);
//! - SNS and SQS (query): `403`, an XML `ErrorResponse` with `Sender`/`AuthorizationError`
//!   (SNS) or `Sender`/`AccessDenied` (SQS).

use crate::serve::{Response, response};
use eventfold_iam::classify::Protocol;

/// The message AWS gives: who, what, on what, and why.
pub fn message(principal: &str, action: &str, resource: &str, explicit: bool) -> String {
    let why = if explicit {
        "with an explicit deny in an identity-based policy".to_owned()
    } else {
        format!("because no identity-based policy allows the {action} action")
    };
    format!(
        "User: {principal} is not authorized to perform: {action} on resource: {resource} {why}"
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The denial of a request of `protocol` to `service` (`sns`, `sqs`, `dynamodb`).
pub fn denial(protocol: Option<Protocol>, service: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let json_body = |key: &str| {
        serde_json::json!({
            "__type": "com.amazon.coral.service#AccessDeniedException",
            key: message,
        })
        .to_string()
    };
    let mut r = match protocol {
        Some(Protocol::DynamoDb) => {
            let mut r = response(400, json_body("Message"));
            set(&mut r, "content-type", "application/x-amz-json-1.0");
            r
        }
        Some(Protocol::Kms) => {
            let mut r = response(400, json_body("message"));
            set(&mut r, "content-type", "application/x-amz-json-1.1");
            r
        }
        Some(Protocol::SqsJson) => {
            let mut r = response(403, json_body("message"));
            set(&mut r, "content-type", "application/x-amz-json-1.0");
            set(&mut r, "x-amzn-query-error", "AccessDenied;Sender");
            r
        }
        Some(Protocol::Query) | None => {
            let code = if service == "sns" {
                "AuthorizationError"
            } else {
                "AccessDenied"
            };
            let body = format!(
                "<ErrorResponse xmlns=\"http://{service}.amazonaws.com/doc/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                xml_escape(message)
            );
            let mut r = response(403, body);
            set(&mut r, "content-type", "text/xml");
            r
        }
    };
    set(&mut r, "x-amzn-requestid", &request_id);
    r
}

fn set(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;

    /// A server answering every request with the denial of its protocol (by `X-Amz-Target`
    /// and credential scope, as the proxy tells them apart).
    async fn denying_server() -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::serve::serve(
            listener,
            |req: hyper::Request<hyper::body::Incoming>, _| async move {
                let target = req
                    .headers()
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let service = eventfold_iam::classify::credential(auth)
                    .map_or("", |(_, s)| s)
                    .to_owned();
                let protocol = if target.starts_with("DynamoDB") {
                    Some(Protocol::DynamoDb)
                } else if target.starts_with("AmazonSQS") {
                    Some(Protocol::SqsJson)
                } else {
                    Some(Protocol::Query)
                };
                denial(
                    protocol,
                    &service,
                    &message(
                        "arn:aws:sts::123456789012:assumed-role/R/F",
                        "x:Y",
                        "arn:aws:x:::r",
                        false,
                    ),
                )
            },
        ));
        format!("http://{addr}")
    }

    async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
        crate::emulator::local_sdk_config(endpoint).await
    }

    #[tokio::test]
    async fn the_sdks_raise_aws_errors_from_the_denials() {
        let endpoint = denying_server().await;
        let sdk = sdk(&endpoint).await;
        let expected = "User: arn:aws:sts::123456789012:assumed-role/R/F is not authorized to perform: x:Y on resource: arn:aws:x:::r because no identity-based policy allows the x:Y action";

        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let err = dynamo
            .get_item()
            .table_name("t")
            .send()
            .await
            .expect_err("denied");
        let err = err.into_service_error();
        assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
        assert_eq!(err.message(), Some(expected));

        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let err = sqs
            .receive_message()
            .queue_url(format!("{endpoint}/123456789012/q"))
            .send()
            .await
            .expect_err("denied")
            .into_service_error();
        assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
        assert_eq!(err.message(), Some(expected));

        let sns = aws_sdk_sns::Client::new(&sdk);
        let err = sns
            .publish()
            .topic_arn("arn:aws:sns:us-east-1:123456789012:t")
            .message("m")
            .send()
            .await
            .expect_err("denied")
            .into_service_error();
        assert_eq!(err.code(), Some("AuthorizationError"), "{err:?}");
        assert_eq!(err.message(), Some(expected));
        assert!(
            matches!(
                err,
                aws_sdk_sns::operation::publish::PublishError::AuthorizationErrorException(_)
            ),
            "{err:?}"
        );
    }
}
