//! The limits between API Gateway and a function, as AWS enforces them: Lambda's 6 MB
//! synchronous payloads and the function's `Timeout`, and the HTTP API's 30 s integration
//! timeout.
//!
//! What the client sees is API Gateway's answer to each, never the function's:
//! - an event over Lambda's request limit (6,291,456 bytes) is an invocation Lambda refuses
//!   (`RequestEntityTooLargeException`), an integration failure: `{"message":"Internal
//!   Server Error"}` (500);
//! - a response over Lambda's response limit (6,291,556 bytes) is the function error
//!   `Function.ResponseSizeTooLarge`: 500 as well;
//! - a function past its `Timeout` is stopped by Lambda ("Task timed out"): 500;
//! - a function whose `Timeout` is longer than the HTTP API's 30 s integration timeout is
//!   answered `{"message":"Service Unavailable"}` (503) at 30 s, while Lambda lets it run to
//!   its own timeout (so it is stopped then, not at 30 s).

use lambda_http::Body;
use std::future::Future;
use std::time::Duration;

/// Lambda's limit on a synchronous invocation's request payload (the event JSON).
pub const MAX_REQUEST: usize = 6 * 1024 * 1024;
/// Lambda's limit on a synchronous invocation's response payload: 100 bytes more than the
/// request's, as Lambda's own error message states it (6291556 bytes).
pub const MAX_RESPONSE: usize = 6 * 1024 * 1024 + 100;
/// The HTTP API's integration timeout (not configurable above 30 s).
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Lambda's default `Timeout` (3 s), for a function the gateway was not told one of.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How one invocation through the gateway ended.
#[derive(Debug)]
pub(crate) enum Invoked<T> {
    /// The function answered in time.
    Answered(T),
    /// The function ran past its own timeout; Lambda stopped it.
    FunctionTimedOut(Duration),
    /// The integration timed out first; the function runs on to its own timeout.
    IntegrationTimedOut,
    /// The function crashed (a panic in process).
    Crashed,
}

/// Runs `work` as Lambda runs a function behind the HTTP API: in its own task, stopped at
/// `timeout` (the function's), with the gateway giving up at `integration` if that comes
/// first. A function outliving the integration is aborted only at its own timeout.
pub(crate) async fn invoke<T, F>(work: F, timeout: Duration, integration: Duration) -> Invoked<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let mut task = tokio::spawn(work);
    let wait = timeout.min(integration);
    match tokio::time::timeout(wait, &mut task).await {
        Ok(Ok(answer)) => Invoked::Answered(answer),
        Ok(Err(_)) => Invoked::Crashed,
        Err(_) if timeout <= integration => {
            task.abort();
            Invoked::FunctionTimedOut(timeout)
        }
        Err(_) => {
            let rest = timeout - integration;
            let abort = task.abort_handle();
            tokio::spawn(async move {
                tokio::time::sleep(rest).await;
                abort.abort();
            });
            Invoked::IntegrationTimedOut
        }
    }
}

/// The size of a `lambda_http` response as the Lambda runtime sends it back: the payload
/// 2.0 response JSON (`statusCode`, `headers`, `multiValueHeaders`, `cookies`, `body`,
/// `isBase64Encoded`), a binary body in base64.
pub(crate) fn http_response_size(parts: &lambda_http::http::response::Parts, body: &Body) -> usize {
    use base64::Engine as _;
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), serde_json::Value::String(value));
    }
    let envelope = serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "multiValueHeaders": headers,
        "cookies": [],
        "isBase64Encoded": matches!(body, Body::Binary(_)),
    })
    .to_string()
    .len();
    // The body is measured where it is: serialized as a JSON string, without a copy.
    let body = match body {
        Body::Text(t) => json_string_len(t),
        Body::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b).len() + 2,
        _ => 4, // null
    };
    envelope + ",\"body\":".len() + body
}

/// The length of `s` serialized as a JSON string (quotes and escapes included).
fn json_string_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_measured_as_the_runtime_serializes_it() {
        for text in ["", "plain", "quote \" and \\ and \n and \u{1}", "é€😀"] {
            assert_eq!(
                json_string_len(text),
                serde_json::to_string(text).expect("json").len(),
                "{text:?}"
            );
        }
        let (parts, body) = lambda_http::Response::builder()
            .status(201)
            .header("content-type", "text/plain")
            .body(Body::Text("x".repeat(1000)))
            .expect("response")
            .into_parts();
        let size = http_response_size(&parts, &body);
        // The body dominates; the envelope is small but counted.
        assert!(size > 1002 && size < 1200, "{size}");
        let binary = Body::Binary(vec![0u8; 3000]);
        // 3000 bytes are 4000 in base64; `true` is one character shorter than `false`.
        assert_eq!(http_response_size(&parts, &binary) - size, 4000 - 1000 - 1);
    }

    #[tokio::test]
    async fn the_function_timeout_and_the_integration_timeout_end_an_invocation() {
        let quick = invoke(async { 7 }, Duration::from_secs(1), INTEGRATION_TIMEOUT).await;
        assert!(matches!(quick, Invoked::Answered(7)), "{quick:?}");
        let slow = || tokio::time::sleep(Duration::from_secs(60));
        // The function's own timeout first: Lambda stops it.
        let stopped = invoke(slow(), Duration::from_millis(30), Duration::from_secs(5)).await;
        assert!(
            matches!(stopped, Invoked::FunctionTimedOut(t) if t == Duration::from_millis(30)),
            "{stopped:?}"
        );
        // The integration's first: the gateway gives up, the function runs on until its own
        // timeout, then is stopped.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ticking = async move {
            loop {
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let gave_up = invoke(
            ticking,
            Duration::from_millis(300),
            Duration::from_millis(50),
        )
        .await;
        assert!(
            matches!(gave_up, Invoked::IntegrationTimedOut),
            "{gave_up:?}"
        );
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            rx.try_recv().is_ok(),
            "still running after the gateway gave up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "stopped at its own timeout");
        let crashed = invoke(
            async { panic!("boom") },
            Duration::from_secs(1),
            INTEGRATION_TIMEOUT,
        )
        .await;
        assert!(matches!(crashed, Invoked::<()>::Crashed), "{crashed:?}");
    }

    /// A gateway with one function per behaviour, the integration timeout at `integration`.
    fn gateway(integration: Duration) -> crate::gateway::Gateway {
        use crate::template::RouteSpec;
        let mut gw = crate::gateway::Gateway::new(crate::JwtConfig::dev());
        gw.integration_timeout = integration;
        let route = |path: &str| {
            [RouteSpec {
                method: "POST".into(),
                path: path.into(),
            }]
        };
        let echo_size = crate::http_handler(|req: lambda_http::Request| async move {
            lambda_http::Response::new(Body::Text(req.body().len().to_string()))
        });
        gw.add_function("Size", &route("/size"), echo_size);
        let big = crate::http_handler(|_req| async move {
            lambda_http::Response::new(Body::Text("x".repeat(MAX_RESPONSE)))
        });
        gw.add_function("Big", &route("/big"), big);
        let big_payload = crate::event_handler(|_e| async move {
            Ok::<_, String>(
                serde_json::json!({"statusCode": 200, "body": "y".repeat(MAX_RESPONSE)}),
            )
        });
        gw.add_function(
            "BigPayload",
            &route("/big-payload"),
            crate::RouteHandler::Payload(big_payload),
        );
        let sleepy = crate::http_handler(|_req| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            lambda_http::Response::new(Body::Empty)
        });
        gw.add_function("Sleepy", &route("/sleepy"), sleepy.clone());
        gw.set_timeout("Sleepy", Duration::from_millis(50));
        gw.add_function("Patient", &route("/patient"), sleepy);
        gw.set_timeout("Patient", Duration::from_secs(900));
        gw
    }

    async fn post(gw: &crate::gateway::Gateway, path: &str, body: Vec<u8>) -> (u16, String) {
        use http_body_util::BodyExt as _;
        let token = crate::jwt::issue(crate::jwt::DEV_SECRET, "acme", "alice", "events:write", 60);
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(bytes::Bytes::from(body))
            .expect("request");
        let resp = gw.call(req, "127.0.0.1:1".parse().expect("addr")).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const FAILED: &str = r#"{"message":"Internal Server Error"}"#;

    #[tokio::test]
    async fn payloads_past_lambdas_limits_are_api_gateways_500() {
        let gw = gateway(INTEGRATION_TIMEOUT);
        // Under the HTTP API's 10 MB but over Lambda's 6 MB once in the event: refused.
        let (status, body) = post(&gw, "/size", vec![b'a'; MAX_REQUEST]).await;
        assert_eq!((status, body.as_str()), (500, FAILED));
        // Just under: the function gets the whole body.
        let fits = MAX_REQUEST - 4096;
        assert_eq!(
            post(&gw, "/size", vec![b'a'; fits]).await,
            (200, fits.to_string())
        );
        // A response over Lambda's limit, from either kind of handler.
        for path in ["/big", "/big-payload"] {
            let (status, body) = post(&gw, path, Vec::new()).await;
            assert_eq!((status, body.as_str()), (500, FAILED), "{path}");
        }
    }

    #[tokio::test]
    async fn a_function_past_its_timeout_is_500_and_past_the_integrations_503() {
        let gw = gateway(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let (status, body) = post(&gw, "/sleepy", Vec::new()).await;
        assert_eq!((status, body.as_str()), (500, FAILED));
        assert!(started.elapsed() < Duration::from_secs(5));
        let (status, body) = post(&gw, "/patient", Vec::new()).await;
        assert_eq!(
            (status, body.as_str()),
            (503, r#"{"message":"Service Unavailable"}"#)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
