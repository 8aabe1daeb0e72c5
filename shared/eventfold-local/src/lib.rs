//! Runs a SAM template against an AWS emulator, in one process, for development and tests.
//!
//! Owns:
//! - [`emulator`]: the moto emulator process (served one request at a time) and SDK
//!   configuration for any endpoint;
//! - [`template`]: reading `infra/template.yaml` and resolving it as CloudFormation would
//!   (intrinsics, parameters with `--parameter-overrides` as SAM takes them, physical names,
//!   tables, topics, queues, subscriptions, functions with their environment, routes and
//!   event sources);
//! - [`provision`]: creating those resources on the endpoint;
//! - [`esm`]: event-source-mapping emulation (DynamoDB stream and SQS pollers with filter
//!   criteria, partial batch failures, retries, bisection, on-failure destinations) and the
//!   `Schedule` events' rules (scheduled events at their `rate(...)`);
//! - [`gateway`] and [`jwt`]: API Gateway HTTP API emulation (routing, payload 2.0 events,
//!   the JWT authorizer);
//! - [`stack`]: all of it started together as a [`LocalStack`], its template's outputs
//!   registered on the endpoint as a CloudFormation stack of its name ([`outputs`]);
//! - [`iam`]: IAM enforced per function (a checking proxy in front of the emulator, each
//!   function signing as itself), with the record and report of the calls checked;
//! - [`httpc`]: a small HTTP client for demos and tests;
//! - [`emf`]: the CloudWatch Embedded Metric Format as its specification states it, to check
//!   the metric lines a function prints;
//! - [`runtime_api`]: the Lambda runtime API emulated, so a function's real binary runs as
//!   Lambda runs it, and the environment each function gets from the stack
//!   ([`runtime_api::standalone_env`], for `cargo lambda watch --env-file` too).
//!
//! It knows no function: callers register handler factories by binary name in
//! [`Functions`]. It must not import `shop`, any Eventfold function (`command-api`,
//! `query-api`, `stream-publisher`, `projector`, `saga`), nor `eventfold`/`eventfold-aws`: the
//! `eventfold` CLI wires the shop's functions into it.
#![forbid(unsafe_code)]

pub mod emf;
pub mod emulator;
pub mod esm;
pub mod functions;
pub mod gateway;
pub mod httpc;
pub mod iam;
pub mod jwt;
pub mod outputs;
pub mod provision;
pub mod runtime_api;
mod serve;
pub mod stack;
pub mod template;

pub use esm::{EsmOptions, EventHandler, HandlerError, SourceStats, event_handler};
pub use functions::{
    Functions, Handlers, HttpHandler, RouteHandler, http_handler, try_typed_handler, typed_handler,
};
pub use jwt::JwtConfig;
pub use stack::{LocalOptions, LocalStack};
pub use template::{FunctionSpec, Template};
