//! The screens' HTML: one module per screen, a shared page shell with a skip link, landmarks
//! and the navigation (each screen has its own URL, so alarms and log lines can link to it).

pub mod dlq;
pub mod overview;
pub mod projections;
pub mod sagas;
pub mod streams;
pub mod topics;
pub mod trace;

use crate::Console;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

/// The stylesheet (embedded: no CDN, no external font).
pub const CSS: &str = include_str!("../../assets/console.css");
/// The script (embedded).
pub const JS: &str = include_str!("../../assets/console.js");

const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/streams", "Streams"),
    ("/trace", "Trace"),
    ("/projections", "Projections"),
    ("/sagas", "Sagas"),
    ("/dead-letters", "Dead letters"),
    ("/topics", "Topics"),
];

/// A whole page: `title`, the navigation with `active` current, `body` in `main`.
pub fn shell(console: &Console, title: &str, active: &str, body: Markup) -> Markup {
    let error = crate::lock(&console.last_error).clone();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Eventfold console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "Eventfold console" }
                    nav aria-label="Screens" {
                        ul {
                            @for (href, name) in NAV {
                                li {
                                    @if *href == active {
                                        a href=(href) aria-current="page" { (name) }
                                    } @else {
                                        a href=(href) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    span.muted {
                        (console.options.operator)
                        @if console.options.allow_writes { " · writes allowed" } @else { " · read-only" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(e) = error {
                        p.banner.bad role="alert" { "The last refresh failed: " (e) }
                    }
                    (body)
                }
            }
        }
    }
}

/// `t` as text, to the millisecond.
pub fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// How long before `now` `t` was, for people (`3 s`, `4 min`, `2 h`).
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// `value` encoded for a query string.
pub fn q(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The link to stream `id` (at `version`, when given).
pub fn stream_href(id: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("/streams/view?id={}&v={v}", q(id)),
        None => format!("/streams/view?id={}", q(id)),
    }
}

/// The "as of" line of a snapshot.
pub fn as_of(snap: &crate::source::Snapshot) -> Markup {
    html! {
        p.muted {
            "As of " (at(snap.taken_at)) " UTC (snapshot: " (snap.requests) " requests, "
            (snap.took.as_millis()) " ms)."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(5), now), "5 s");
        assert_eq!(ago(now - chrono::Duration::minutes(30), now), "30 min");
        assert_eq!(ago(now - chrono::Duration::hours(3), now), "3 h");
        assert_eq!(
            stream_href("acme/Order-o 1", Some(2)),
            "/streams/view?id=acme%2FOrder-o+1&v=2"
        );
    }
}
