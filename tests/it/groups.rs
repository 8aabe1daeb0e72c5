//! Consumer groups with members through the local gateway, over real HTTP, on the emulator:
//! exclusive ownership of partitions per generation and full delivery (3 members, 8
//! partitions); a member that dies loses its partitions after its session timeout and its
//! stale commit is refused (the time from its death to the move is printed, with the
//! rebalance); a late joiner rebalances the group while records flow, nothing is lost and no
//! committed offset goes back.

use eventfold_local::httpc::{Http, Reply};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tests::{assert_problem, quiet_stack, token, unique_tenant};

const BASE: &str = "/api/v1/events";
const ALL: &str = "events:read events:write events:admin";
const TOPIC: &str = "orders-8";

async fn post(http: &Http, t: &str, p: &str, body: Value) -> Reply {
    http.post(&format!("{BASE}{p}"), Some(t), &body)
        .await
        .expect("post")
}

async fn get(http: &Http, t: &str, p: &str) -> Reply {
    http.get(&format!("{BASE}{p}"), Some(t)).await.expect("get")
}

/// A topic of 8 partitions with `n` keyed records; returns every (partition, offset).
async fn topic_with(http: &Http, t: &str, n: u64) -> BTreeSet<(u64, u64)> {
    let made = post(http, t, "/topics", json!({"name": TOPIC, "partitions": 8})).await;
    assert_eq!(made.status, 201, "{}", made.json);
    publish(http, t, 0, n).await
}

async fn publish(http: &Http, t: &str, from: u64, to: u64) -> BTreeSet<(u64, u64)> {
    let mut out = BTreeSet::new();
    let records: Vec<Value> = (from..to)
        .map(|i| json!({"event_type": "order.placed", "key": format!("o-{i}"), "data": {"n": i}}))
        .collect();
    for chunk in records.chunks(100) {
        let reply = post(
            http,
            t,
            "/publish",
            json!({"topic": TOPIC, "records": chunk}),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.json);
        for r in reply.json["records"].as_array().expect("records") {
            out.insert((
                r["partition"].as_u64().expect("p"),
                r["offset"].as_u64().expect("o"),
            ));
        }
    }
    out
}

async fn join(http: &Http, t: &str, group: &str, member: &str, session_ms: u64) -> Value {
    let reply = post(
        http,
        t,
        "/consume/join",
        json!({"topic": TOPIC, "group_id": group, "member_id": member, "session_timeout_ms": session_ms}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    reply.json
}

async fn heartbeat(http: &Http, t: &str, group: &str, member: &str) -> Reply {
    post(
        http,
        t,
        "/consume/heartbeat",
        json!({"topic": TOPIC, "group_id": group, "member_id": member}),
    )
    .await
}

async fn describe(http: &Http, t: &str, group: &str) -> Value {
    let reply = get(
        http,
        t,
        &format!("/consume/lag?topic={TOPIC}&group_id={group}"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    reply.json
}

/// `generation: member -> partitions` of a description, for printing.
fn assignment_line(d: &Value) -> String {
    let members: Vec<String> = d["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                m["member_id"].as_str().unwrap_or("?"),
                m["partitions"]
            )
        })
        .collect();
    format!("generation {}: {}", d["generation"], members.join(" "))
}

fn partitions(v: &Value) -> Vec<u64> {
    v["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p.as_u64().expect("partition"))
        .collect()
}

/// The highest offset per partition of `records`, as a commit's `offsets`.
fn last_offsets(records: &[Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        let p = r["partition"].as_u64().expect("partition").to_string();
        let o = r["offset"].as_u64().expect("offset");
        let at = out.entry(p).or_insert(0);
        *at = o.max(*at);
    }
    out
}

/// What one member saw: (generation, partition, offset) of every record delivered to it.
type Seen = Vec<(u64, u64, u64)>;

/// A member's loop: heartbeat, consume its partitions in its generation, commit as it;
/// a 409 `rebalanced` sends it back to its heartbeat (the records of the refused commit come
/// again to their owner). Stops after 3 empty rounds once `done` is set (still a member:
/// a leave would rebalance the others mid-way).
async fn run_member(
    http: Http,
    t: String,
    group: String,
    member: String,
    done: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::new();
    let mut quiet = 0;
    let mut last_committed: BTreeMap<String, u64> = BTreeMap::new();
    while quiet < 3 {
        let hb = heartbeat(&http, &t, &group, &member).await;
        assert_eq!(hb.status, 200, "{member}: {}", hb.json);
        let generation = hb.json["generation"].as_u64().expect("generation");
        let owned = partitions(&hb.json);
        let got = get(
            &http,
            &t,
            &format!("/consume?topic={TOPIC}&group_id={group}&member_id={member}&max=40"),
        )
        .await;
        if got.status == 409 {
            assert_problem(&got, 409, "rebalanced");
            continue;
        }
        assert_eq!(got.status, 200, "{member}: {}", got.json);
        if got.json["generation"].as_u64() != Some(generation) {
            // Rebalanced between the heartbeat and the read: learn the new assignment first.
            continue;
        }
        let records = got.json["records"].as_array().expect("records").clone();
        if records.is_empty() {
            if done.load(Ordering::SeqCst) {
                quiet += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        quiet = 0;
        for r in &records {
            let p = r["partition"].as_u64().expect("p");
            assert!(
                owned.contains(&p),
                "{member} read partition {p}, owning {owned:?}"
            );
            seen.push((generation, p, r["offset"].as_u64().expect("o")));
        }
        let commit = post(
            &http,
            &t,
            "/consume/commit",
            json!({"topic": TOPIC, "group_id": group, "offsets": last_offsets(&records), "member_id": member, "generation": generation}),
        )
        .await;
        if commit.status == 409 {
            assert_problem(&commit, 409, "rebalanced");
            assert!(commit.json["generation"].as_u64() > Some(generation));
            continue;
        }
        assert_eq!(commit.status, 200, "{member}: {}", commit.json);
        for (p, o) in commit.json["committed"].as_object().expect("committed") {
            let o = o.as_u64().expect("offset");
            let before = last_committed.insert(p.clone(), o).unwrap_or(0);
            assert!(o >= before, "partition {p} went back from {before} to {o}");
        }
    }
    seen
}

async fn leave(http: &Http, t: &str, group: &str, member: &str) -> u64 {
    let left = post(
        http,
        t,
        "/consume/leave",
        json!({"topic": TOPIC, "group_id": group, "member_id": member}),
    )
    .await;
    assert_eq!(left.status, 200, "{}", left.json);
    left.json["generation"].as_u64().expect("generation")
}

/// No two members got one record in one generation.
fn assert_exclusive(per_member: &[Seen]) {
    let mut owner: BTreeMap<(u64, u64, u64), usize> = BTreeMap::new();
    for (i, seen) in per_member.iter().enumerate() {
        for r in seen {
            if let Some(other) = owner.insert(*r, i)
                && other != i
            {
                panic!("record {r:?} went to members {other} and {i} in one generation");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_own_eight_partitions_exclusively_and_get_every_record() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let t = token(&unique_tenant("mem"), ALL);
    let published = topic_with(&http, &t, 240).await;
    for m in ["m-a", "m-b", "m-c"] {
        join(&http, &t, "billing", m, 30_000).await;
    }
    let d = describe(&http, &t, "billing").await;
    assert_eq!(d["generation"], 3, "{d}");
    println!("3 members, 8 partitions: {}", assignment_line(&d));
    // The range strategy: 3 + 3 + 2, every partition owned by exactly one member.
    let owned: Vec<Vec<u64>> = d["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(partitions)
        .collect();
    assert_eq!(owned, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    for p in d["partitions"].as_array().expect("partitions") {
        let n = p["partition"].as_u64().expect("p") as usize;
        let expected = ["m-a", "m-a", "m-a", "m-b", "m-b", "m-b", "m-c", "m-c"][n];
        assert_eq!(p["owner"], expected, "{d}");
    }
    // A single-cursor caller cannot move the members' offsets.
    let single = get(
        &http,
        &t,
        &format!("/consume?topic={TOPIC}&group_id=billing"),
    )
    .await;
    assert_problem(&single, 409, "rebalanced");
    assert_eq!(single.json["generation"], 3);

    let done = Arc::new(AtomicBool::new(true));
    let runs: Vec<_> = ["m-a", "m-b", "m-c"]
        .into_iter()
        .map(|m| {
            tokio::spawn(run_member(
                http.clone(),
                t.clone(),
                "billing".into(),
                m.into(),
                done.clone(),
            ))
        })
        .collect();
    let mut per_member = Vec::new();
    for r in runs {
        per_member.push(r.await.expect("member"));
    }
    assert_exclusive(&per_member);
    // Nobody left before draining its partitions: generation 3 throughout, so each record
    // went to exactly one member, and every record went to someone.
    let delivered: BTreeSet<(u64, u64)> = per_member
        .iter()
        .flatten()
        .map(|(_, p, o)| (*p, *o))
        .collect();
    assert_eq!(delivered, published);
    assert_eq!(
        per_member.iter().map(Vec::len).sum::<usize>(),
        published.len(),
        "no record twice"
    );
    let mut generation = 3;
    for m in ["m-a", "m-b", "m-c"] {
        let after = leave(&http, &t, "billing", m).await;
        assert_eq!(after, generation + 1, "each leave is a generation");
        generation = after;
    }
    let after = describe(&http, &t, "billing").await;
    assert_eq!(
        (after["total"].clone(), after["members"].clone()),
        (json!(0), json!([]))
    );
    // The members left: the group is a single cursor again.
    let single = get(
        &http,
        &t,
        &format!("/consume?topic={TOPIC}&group_id=billing"),
    )
    .await;
    assert_eq!(single.status, 200, "{}", single.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_members_partitions_move_after_its_session_and_its_stale_commit_is_refused() {
    const SESSION_MS: u64 = 2_000;
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let t = token(&unique_tenant("die"), ALL);
    topic_with(&http, &t, 80).await;
    for m in ["m-a", "m-b", "m-c"] {
        join(&http, &t, "g", m, SESSION_MS).await;
    }
    let before = describe(&http, &t, "g").await;
    // m-c heartbeats, reads its partitions and commits part of them, then dies: its session
    // ends SESSION_MS after that heartbeat, so its death is timed from just before it.
    let died = Instant::now();
    let c = heartbeat(&http, &t, "g", "m-c").await;
    let generation = c.json["generation"].as_u64().expect("generation");
    let got = get(
        &http,
        &t,
        &format!("/consume?topic={TOPIC}&group_id=g&member_id=m-c&max=4"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.json);
    let records = got.json["records"].as_array().expect("records").clone();
    let committed = post(
        &http,
        &t,
        "/consume/commit",
        json!({"topic": TOPIC, "group_id": "g", "offsets": last_offsets(&records), "member_id": "m-c", "generation": generation}),
    )
    .await;
    assert_eq!(committed.status, 200, "{}", committed.json);
    let c_parts = partitions(&c.json);

    // The survivors heartbeat every 200 ms; the first answer of a new generation moves them.
    let moved = loop {
        assert!(died.elapsed() < Duration::from_secs(15), "no rebalance");
        let a = heartbeat(&http, &t, "g", "m-a").await;
        assert_eq!(a.status, 200, "{}", a.json);
        let b = heartbeat(&http, &t, "g", "m-b").await;
        assert_eq!(b.status, 200, "{}", b.json);
        if a.json["generation"].as_u64() > Some(generation) {
            let mut now_owned = partitions(&a.json);
            now_owned.extend(partitions(&b.json));
            assert!(
                c_parts.iter().all(|p| now_owned.contains(p)),
                "{now_owned:?}"
            );
            break died.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        moved >= Duration::from_millis(SESSION_MS),
        "moved after {moved:?}, before the session ended"
    );
    let after = describe(&http, &t, "g").await;
    println!(
        "rebalance on a member's death (session {SESSION_MS} ms, survivors heartbeat every 200 ms): partitions moved {:.2} s after m-c's last heartbeat\n  before: {}\n  after:  {}",
        moved.as_secs_f64(),
        assignment_line(&before),
        assignment_line(&after)
    );
    let lag_before: Vec<Value> = after["partitions"].as_array().expect("p").clone();

    // The zombie wakes up: its commit and heartbeat are refused with the current generation.
    let stale = post(
        &http,
        &t,
        "/consume/commit",
        json!({"topic": TOPIC, "group_id": "g", "offsets": {c_parts[0].to_string(): 1}, "member_id": "m-c", "generation": generation}),
    )
    .await;
    assert_problem(&stale, 409, "rebalanced");
    assert_eq!(stale.json["generation"], after["generation"]);
    let hb = heartbeat(&http, &t, "g", "m-c").await;
    assert_problem(&hb, 409, "rebalanced");
    // Its partitions' offsets are where it left them; the new owner carries on from there.
    let now = describe(&http, &t, "g").await;
    assert_eq!(now["partitions"].as_array().expect("p"), &lag_before);
    let p = c_parts[0];
    let owner = now["partitions"][p as usize]["owner"]
        .as_str()
        .expect("owner")
        .to_owned();
    let from = now["partitions"][p as usize]["committed"]
        .as_u64()
        .expect("c");
    let got = get(
        &http,
        &t,
        &format!("/consume?topic={TOPIC}&group_id=g&member_id={owner}&max=200"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.json);
    let first = got.json["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["partition"] == p)
        .filter_map(|r| r["offset"].as_u64())
        .min();
    assert_eq!(
        first,
        Some(from + 1),
        "the new owner starts after the commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_rebalances_the_group_and_nothing_is_lost_or_committed_backwards() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let t = token(&unique_tenant("late"), ALL);
    let mut published = topic_with(&http, &t, 80).await;
    for m in ["m-a", "m-b"] {
        join(&http, &t, "late", m, 10_000).await;
    }
    let before = describe(&http, &t, "late").await;
    let done = Arc::new(AtomicBool::new(false));
    let spawn = |m: &str| {
        tokio::spawn(run_member(
            http.clone(),
            t.clone(),
            "late".into(),
            m.into(),
            done.clone(),
        ))
    };
    // Committed offsets, watched from outside while the group changes: never lower.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (http, t, watching) = (http.clone(), t.clone(), watching.clone());
        tokio::spawn(async move {
            let mut high: BTreeMap<u64, u64> = BTreeMap::new();
            let mut generations = BTreeSet::new();
            while watching.load(Ordering::SeqCst) {
                let d = describe(&http, &t, "late").await;
                generations.insert(d["generation"].as_u64().expect("generation"));
                for p in d["partitions"].as_array().expect("partitions") {
                    let (n, c) = (
                        p["partition"].as_u64().expect("p"),
                        p["committed"].as_u64().expect("c"),
                    );
                    let at = high.entry(n).or_insert(0);
                    assert!(
                        c >= *at,
                        "partition {n} committed went back from {at} to {c}"
                    );
                    *at = c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            generations
        })
    };
    let mut runs = vec![spawn("m-a"), spawn("m-b")];
    published.extend(publish(&http, &t, 80, 160).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let joined = join(&http, &t, "late", "m-c", 10_000).await;
    let mid = describe(&http, &t, "late").await;
    println!(
        "late join: before {}\n  after  {}",
        assignment_line(&before),
        assignment_line(&mid)
    );
    assert_eq!(joined["generation"], 3);
    assert_eq!(
        partitions(&joined),
        vec![6, 7],
        "range: m-c is last in member-id order"
    );
    runs.push(spawn("m-c"));
    published.extend(publish(&http, &t, 160, 240).await);
    done.store(true, Ordering::SeqCst);
    let mut per_member = Vec::new();
    for r in runs {
        per_member.push(r.await.expect("member"));
    }
    watching.store(false, Ordering::SeqCst);
    let generations = watcher.await.expect("watcher");
    assert!(
        generations.contains(&3),
        "the watcher saw the late join's generation"
    );
    assert_exclusive(&per_member);
    let delivered: BTreeSet<(u64, u64)> = per_member
        .iter()
        .flatten()
        .map(|(_, p, o)| (*p, *o))
        .collect();
    assert_eq!(delivered, published, "nothing lost");
    let c: BTreeSet<u64> = per_member[2].iter().map(|(_, p, _)| *p).collect();
    assert!(!c.is_empty(), "the late joiner got records");
    let end = describe(&http, &t, "late").await;
    assert_eq!(end["total"], 0, "{end}");
}
