//! The causal tree of one request across streams: commits linked by their metadata.
//!
//! A commit's `causation_id` is the id of the event that caused it (a saga step is caused by
//! its input event; the commands a saga sends are caused by its step's event), or its own
//! command id when a client sent the command. So every commit of a conversation hangs under
//! the commit holding its cause; commits whose cause is unknown are roots. What a query
//! matches: an order id (the order's and its saga's streams), a correlation id, a command id
//! or an event id; the tree is every commit sharing a matched commit's correlation id.

use crate::source::{CommitRow, Snapshot};
use eventfold::StreamId;
use std::collections::{BTreeSet, HashMap};

/// One commit in the tree, with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    /// The commit.
    pub commit: &'a CommitRow,
    /// Depth in the tree (0: a root).
    pub depth: usize,
    /// Milliseconds from its cause's commit (`None` for a root).
    pub latency_ms: Option<i64>,
}

/// The correlation ids `query` names in `snap`.
pub fn correlations(snap: &Snapshot, query: &str) -> BTreeSet<String> {
    let q = query.trim();
    let mut out = BTreeSet::new();
    if q.is_empty() {
        return out;
    }
    if let Some(c) = snap.commit_of_event(q) {
        out.insert(c.metadata.correlation_id.clone());
    }
    for c in snap.commits() {
        let m = &c.metadata;
        let order_stream = StreamId::parse(&c.stream_id)
            .is_ok_and(|s| s.id() == q && matches!(s.category(), "Order" | "OrderFulfilment"));
        if m.correlation_id == q || m.command_id == q || order_stream {
            out.insert(m.correlation_id.clone());
        }
    }
    out
}

/// The tree of the commits correlated with `query`, in depth-first order, children by time.
pub fn tree<'a>(snap: &'a Snapshot, query: &str) -> Vec<Node<'a>> {
    let ids = correlations(snap, query);
    let mut commits: Vec<&CommitRow> = snap
        .commits()
        .filter(|c| ids.contains(&c.metadata.correlation_id))
        .collect();
    commits.sort_by_key(|c| (c.committed_at, c.stream_id.clone(), c.version));
    let key = |c: &CommitRow| (c.stream_id.clone(), c.version);
    let present: BTreeSet<_> = commits.iter().map(|c| key(c)).collect();
    let mut children: HashMap<(String, u64), Vec<&CommitRow>> = HashMap::new();
    let mut roots = Vec::new();
    for c in &commits {
        let parent = snap
            .commit_of_event(&c.metadata.causation_id)
            .filter(|p| present.contains(&key(p)) && key(p) != key(c));
        match parent {
            Some(p) => children.entry(key(p)).or_default().push(c),
            None => roots.push(*c),
        }
    }
    let mut out = Vec::new();
    let mut stack: Vec<(&CommitRow, usize, Option<&CommitRow>)> =
        roots.into_iter().rev().map(|c| (c, 0, None)).collect();
    while let Some((c, depth, parent)) = stack.pop() {
        out.push(Node {
            commit: c,
            depth,
            latency_ms: parent.map(|p| (c.committed_at - p.committed_at).num_milliseconds()),
        });
        if let Some(kids) = children.get(&key(c)) {
            for k in kids.iter().rev() {
                stack.push((k, depth + 1, Some(c)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::EventRow;
    use chrono::{Duration, Utc};
    use eventfold::Metadata;

    fn commit(stream: &str, at_ms: i64, event: &str, cause: &str) -> CommitRow {
        let t0 = Utc::now();
        CommitRow {
            stream_id: stream.to_owned(),
            version: 1,
            events: vec![EventRow {
                event_id: event.to_owned(),
                event_type: "E".into(),
                schema_version: 1,
                occurred_at: t0,
            }],
            metadata: Metadata {
                correlation_id: "corr".into(),
                causation_id: cause.to_owned(),
                command_id: format!("cmd-{event}"),
                ..Metadata::root("acme", "dev", "x")
            },
            committed_at: t0 + Duration::milliseconds(at_ms),
            snapshot: None,
        }
    }

    #[test]
    fn commits_hang_under_the_commit_holding_their_cause_with_their_latency() {
        let mut s = Snapshot::default();
        for c in [
            commit("acme/Order-o1", 0, "e1", "cmd-e1"),
            commit("acme/OrderFulfilment-o1", 40, "e2", "e1"),
            commit("acme/Inventory-sku", 90, "e3", "e2"),
            commit("acme/Other-z", 5, "e9", "elsewhere"),
        ] {
            s.streams.insert(c.stream_id.clone(), vec![c]);
        }
        s.streams
            .get_mut("acme/Other-z")
            .expect("stream")
            .first_mut()
            .expect("commit")
            .metadata
            .correlation_id = "other".into();
        s.index();
        for query in ["o1", "corr", "cmd-e3", "e2"] {
            let t = tree(&s, query);
            let shape: Vec<_> = t
                .iter()
                .map(|n| (n.commit.stream_id.as_str(), n.depth, n.latency_ms))
                .collect();
            assert_eq!(
                shape,
                vec![
                    ("acme/Order-o1", 0, None),
                    ("acme/OrderFulfilment-o1", 1, Some(40)),
                    ("acme/Inventory-sku", 2, Some(50)),
                ],
                "query {query}"
            );
        }
        assert!(tree(&s, "nothing-like-it").is_empty());
    }
}
