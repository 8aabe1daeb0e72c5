//! Every fenced `sh` block of `README.md` and `docs/*.md` is accounted for, so that no command
//! in the docs goes stale silently. The line before a block (blank lines aside) says what
//! becomes of it, and [`every_sh_block_of_the_docs_is_run_checked_or_marked_not_run`] fails
//! on a block without one:
//!
//! - `<!-- run by tests/it/docs.rs: NAME -->`: a test here runs the block as written against a
//!   live local stack ([`live`]). Only what must differ in a test is replaced: the path of the
//!   `eventfold` binary (this checkout's, built by [`eventfold`]), the stack's name and
//!   endpoint, a placeholder such as `ID`.
//! - `<!-- checked by tests/it/docs.rs: NAME; not run: WHY -->`: running it does not fit the
//!   suite (an AWS account, release builds); what can be checked here is ([`offline`]): the
//!   flags parse, and what the commands name exists.
//! - `<!-- not run: WHY -->`: only the checks every block gets.
//! - between `<!-- begin: run by tests/it/readme.rs -->` and its end: `tests/it/readme.rs`
//!   runs it (the README's tour, the HTTP API's streaming examples).
//!
//! Every block, whatever its mark: each `scripts/...` it names is an executable file, and each
//! `~/.cache/eventfold/target/<profile>/<binary>` names a binary of the workspace, in the
//! target dir the scripts default to (`scripts/env.sh`).

mod lambda;
mod live;
mod offline;

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// A block a test here runs: `<!-- run by tests/it/docs.rs: NAME -->`.
const RUN: &str = "run by tests/it/docs.rs:";
/// A block a test here checks without running it: `<!-- checked by ...: NAME; not run: WHY -->`.
const CHECKED: &str = "checked by tests/it/docs.rs:";
/// A block nothing runs: `<!-- not run: WHY -->`.
const NOT_RUN: &str = "not run:";
/// What a block without a mark is told.
const HOW: &str = "the line before it says `<!-- run by tests/it/docs.rs: NAME -->` (and a test \
                   there runs it), `<!-- checked by tests/it/docs.rs: NAME; not run: WHY -->` or \
                   `<!-- not run: WHY -->`";

/// The blocks the tests here know, by name, and whether they run them (`true`) or only check
/// them (`false`).
const KNOWN: &[(&str, bool)] = &[
    ("rebuild", true),
    ("rebuild-promote", true),
    ("dlq", true),
    ("deployed-stack", false),
    ("cargo-lambda", false),
    ("bench", false),
    ("sam-deploy", false),
    ("cdk-deploy", false),
];

/// Where the docs say cargo puts its builds: `scripts/env.sh`'s default target dir.
const DOC_TARGET: &str = "~/.cache/eventfold/target/";

/// What becomes of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// A test here runs it.
    Run(String),
    /// A test here checks it without running it.
    Checked(String),
    /// Nothing runs it.
    NotRun,
    /// `tests/it/readme.rs` runs it.
    Readme,
}

/// A fenced `sh` block of the docs.
#[derive(Debug, Clone)]
struct Block {
    /// `path:line` of its opening fence.
    at: String,
    mark: Mark,
    /// Its lines, continuation lines (`\` at the end) joined.
    lines: Vec<String>,
}

impl Block {
    /// The name a test here knows it by.
    fn name(&self) -> Option<&str> {
        match &self.mark {
            Mark::Run(n) | Mark::Checked(n) => Some(n),
            Mark::NotRun | Mark::Readme => None,
        }
    }

    /// Its commands: the lines that are neither blank nor only a comment.
    fn commands(&self) -> Vec<&str> {
        self.lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }
}

/// The mark an HTML comment line gives the block after it.
fn mark(line: &str) -> Option<Mark> {
    let inner = line.strip_prefix("<!--")?.strip_suffix("-->")?.trim();
    if let Some(name) = inner.strip_prefix(RUN) {
        let name = name.trim();
        return (!name.is_empty() && !name.contains(' ')).then(|| Mark::Run(name.to_owned()));
    }
    if let Some(rest) = inner.strip_prefix(CHECKED) {
        let (name, why) = rest.split_once(';')?;
        let why = why.trim().strip_prefix(NOT_RUN)?.trim();
        let name = name.trim();
        return (!why.is_empty() && !name.is_empty() && !name.contains(' '))
            .then(|| Mark::Checked(name.to_owned()));
    }
    let why = inner.strip_prefix(NOT_RUN)?.trim();
    (!why.is_empty()).then_some(Mark::NotRun)
}

/// Appends `line` to `lines`, joining it to the last one when that ended with `\`.
fn push_joined(lines: &mut Vec<String>, line: &str, continued: &mut bool) {
    let (text, more) = match line.strip_suffix('\\') {
        Some(head) => (head.trim_end(), true),
        None => (line, false),
    };
    match (*continued, lines.last_mut()) {
        (true, Some(last)) => {
            last.push(' ');
            last.push_str(text.trim_start());
        }
        _ => lines.push(text.to_owned()),
    }
    *continued = more;
}

/// The fenced `sh` blocks of the document `text` (`path` in messages) with their marks, and
/// what is wrong: a block without a mark, commands fenced as another shell, a fence left open.
fn parse(path: &str, text: &str) -> (Vec<Block>, Vec<String>) {
    let (mut blocks, mut wrong) = (Vec::new(), Vec::new());
    let mut readme = false;
    let mut before: Option<&str> = None;
    // Inside a fence: `Some(Some(block))` for an `sh` block, `Some(None)` for any other.
    let mut open: Option<Option<Block>> = None;
    let mut continued = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim();
        if let Some(fence) = open.as_mut() {
            if trimmed == "```" {
                blocks.extend(open.take().flatten());
                continued = false;
                before = Some(trimmed);
            } else if let Some(block) = fence {
                push_joined(&mut block.lines, line, &mut continued);
            }
            continue;
        }
        if trimmed == super::readme::BEGIN {
            readme = true;
        } else if trimmed == super::readme::END {
            readme = false;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let at = format!("{path}:{}", n + 1);
            open = Some(None);
            match info.trim() {
                "sh" => {
                    let mark = if readme {
                        Some(Mark::Readme)
                    } else {
                        before.and_then(mark)
                    };
                    match mark {
                        Some(mark) => {
                            open = Some(Some(Block {
                                at,
                                mark,
                                lines: Vec::new(),
                            }))
                        }
                        None => wrong.push(format!("{at}: an sh block with no mark: {HOW}")),
                    }
                }
                "bash" | "shell" | "console" | "zsh" | "shell-session" => wrong.push(format!(
                    "{at}: commands go in ```sh blocks (the docs' test reads those), not ```{}",
                    info.trim()
                )),
                _ => {}
            }
            continue;
        }
        if !trimmed.is_empty() {
            before = Some(trimmed);
        }
    }
    if open.is_some() {
        wrong.push(format!("{path}: a fence is never closed"));
    }
    if readme {
        wrong.push(format!("{path}: {} without its end", super::readme::BEGIN));
    }
    (blocks, wrong)
}

/// The document `path`, relative to the repository root.
fn read(path: &str) -> String {
    let file = tests::root().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `README.md` and every `docs/*.md`.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(tests::root().join("docs"))
        .expect("docs/ is readable")
        .map(|e| {
            e.expect("a docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    docs.insert(0, "README.md".to_owned());
    docs
}

/// Every `sh` block of the docs, and what is wrong with their marks.
fn all_blocks() -> (Vec<Block>, Vec<String>) {
    let (mut blocks, mut wrong) = (Vec::new(), Vec::new());
    for doc in documents() {
        let (b, w) = parse(&doc, &read(&doc));
        blocks.extend(b);
        wrong.extend(w);
    }
    (blocks, wrong)
}

/// The one block of the docs marked `name`.
fn block(name: &str) -> Block {
    let mut found: Vec<Block> = all_blocks()
        .0
        .into_iter()
        .filter(|b| b.name() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "one block marked `{name}`: {found:?}");
    found.remove(0)
}

/// The words of a shell command as `sh` splits them (quotes removed), up to its comment.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut started) = (Vec::new(), String::new(), false);
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// A shell line split at its comment (a `#` that starts a word, outside quotes): the code and
/// the comment, both trimmed.
fn code_and_comment(line: &str) -> (&str, Option<&str>) {
    let (mut quote, mut word_start) = (None::<char>, true);
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if word_start => return (line[..i].trim(), Some(line[i + 1..].trim())),
            _ => {}
        }
        word_start = c.is_whitespace();
    }
    (line.trim(), None)
}

/// The `cargo` that runs this test (else the one on `PATH`).
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace's packages (`cargo metadata --no-deps`): by name, their targets as
/// (kind, name).
fn packages() -> &'static BTreeMap<String, Vec<(String, String)>> {
    static PACKAGES: OnceLock<BTreeMap<String, Vec<(String, String)>>> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let out = std::process::Command::new(cargo())
            .args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ])
            .current_dir(tests::root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
        let mut packages = BTreeMap::new();
        for p in json["packages"].as_array().expect("packages") {
            let targets = p["targets"].as_array().expect("targets").iter();
            let targets = targets.flat_map(|t| {
                let name = t["name"].as_str().unwrap_or_default().to_owned();
                let kinds = t["kind"].as_array().cloned().unwrap_or_default();
                kinds
                    .into_iter()
                    .map(move |k| (k.as_str().unwrap_or_default().to_owned(), name.clone()))
            });
            let name = p["name"].as_str().expect("a package name").to_owned();
            packages.insert(name, targets.collect());
        }
        packages
    })
}

/// Whether package `package` has a target `name` of `kind` (`bin`, `bench`, ...).
fn has_target(package: &str, kind: &str, name: &str) -> bool {
    packages()
        .get(package)
        .is_some_and(|t| t.iter().any(|(k, n)| k == kind && n == name))
}

/// What is wrong with the names `block` uses: a `scripts/...` that is not an executable file,
/// a `~/.cache/eventfold/target/<profile>/<binary>` that no package builds.
fn missing_names(block: &Block) -> Vec<String> {
    let mut wrong = Vec::new();
    for line in &block.lines {
        for word in words(line) {
            let script = word.strip_prefix("./").unwrap_or(&word);
            if script.starts_with("scripts/") {
                let file = tests::root().join(script);
                let mode = std::fs::metadata(&file).map(|m| m.permissions().mode());
                if !mode.is_ok_and(|m| file.is_file() && m & 0o111 != 0) {
                    wrong.push(format!("{}: {script} is not an executable file", block.at));
                }
            }
            if let Some(at) = word.find(DOC_TARGET) {
                let rest = &word[at + DOC_TARGET.len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "/_-".contains(*c))
                    .collect();
                let built = path.split_once('/').is_some_and(|(profile, binary)| {
                    ["debug", "release"].contains(&profile)
                        && packages().keys().any(|p| has_target(p, "bin", binary))
                });
                if !built {
                    wrong.push(format!("{}: {DOC_TARGET}{path}: no binary", block.at));
                }
            }
        }
    }
    wrong
}

/// The `eventfold` binary of this checkout, built once per test binary (`cargo build -p cli`,
/// as `scripts/dev` builds it) in this test binary's target dir and profile: the docs run
/// against the code under test, never against an older build. (A test of another package
/// has no `CARGO_BIN_EXE_eventfold`.)
async fn eventfold() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    tokio::task::spawn_blocking(|| BINARY.get_or_init(build_eventfold).clone())
        .await
        .expect("the build's thread")
}

fn build_eventfold() -> PathBuf {
    let exe = std::env::current_exe().expect("this test binary's path");
    // <target>/<profile dir>/deps/<this test binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary in <target>/<profile>/deps");
    let target = dir.parent().expect("the target dir");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("{}: no profile dir", exe.display()),
    };
    let status = std::process::Command::new(cargo())
        .args(["build", "--quiet", "--profile", profile])
        .args(["-p", "cli", "--bin", "eventfold"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(tests::root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p cli: {status}");
    dir.join("eventfold")
}

/// `line` with the docs' `eventfold` (`~/.cache/eventfold/target/debug/eventfold`, or a bare
/// `eventfold` starting the line) replaced by `binary`.
fn with_binary(line: &str, binary: &Path) -> String {
    let quoted = format!("'{}'", binary.display());
    let doc = format!("{DOC_TARGET}debug/eventfold");
    if line.contains(&doc) {
        line.replace(&doc, &quoted)
    } else if let Some(rest) = line.strip_prefix("eventfold ") {
        format!("{quoted} {rest}")
    } else {
        panic!("`{line}` does not run eventfold")
    }
}

/// How a command ended and what it printed.
#[derive(Debug)]
struct Ran {
    command: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Asserts it exited 0; its stdout.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "`{}`: {self:#?}", self.command);
        &self.stdout
    }
}

/// Settings the tools read from the environment that a test must not inherit: each run
/// states its own.
const INHERITED: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "EVENTS_TABLE",
    "READ_MODELS_TABLE",
];

/// Runs `line` as a reader would (`sh -c`, in the repository root), with `env`.
async fn sh(line: &str, env: &[(&str, String)]) -> Ran {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(line)
        .current_dir(tests::root())
        .kill_on_drop(true);
    for name in INHERITED {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("`{line}` ran over 120 s"))
        .unwrap_or_else(|e| panic!("sh runs `{line}`: {e}"));
    Ran {
        command: line.to_owned(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn every_sh_block_of_the_docs_is_run_checked_or_marked_not_run() {
    let (blocks, mut wrong) = all_blocks();
    for (name, runs) in KNOWN {
        let marked: Vec<&Block> = blocks.iter().filter(|b| b.name() == Some(name)).collect();
        match marked.as_slice() {
            [b] if *runs != matches!(b.mark, Mark::Run(_)) => wrong.push(format!(
                "{}: `{name}` is {}by tests/it/docs.rs, not {:?}",
                b.at,
                if *runs { "run " } else { "checked (not run) " },
                b.mark
            )),
            [_] => {}
            [] => wrong.push(format!("no block is marked `{name}` (tests/it/docs.rs)")),
            more => wrong.push(format!("`{name}` marks {} blocks", more.len())),
        }
    }
    for b in &blocks {
        if let Some(name) = b.name().filter(|n| !KNOWN.iter().any(|(k, _)| k == n)) {
            wrong.push(format!(
                "{}: no test in tests/it/docs.rs knows `{name}`",
                b.at
            ));
        }
        wrong.extend(missing_names(b));
    }
    assert!(
        read("scripts/env.sh").contains("${CARGO_TARGET_DIR:-$HOME/.cache/eventfold/target}"),
        "the docs' {DOC_TARGET} is the scripts' default target dir"
    );
    assert!(blocks.len() >= KNOWN.len(), "{blocks:?}");
    assert!(
        wrong.is_empty(),
        "the docs' sh blocks:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_block_without_a_mark_is_refused_and_marks_parse() {
    let doc = format!(
        "# Doc\n\n<!-- run by tests/it/docs.rs: one -->\n\n```sh\na \\\n  b\n```\n\
         <!-- checked by tests/it/docs.rs: two; not run: slow -->\n```sh\nc\n```\n\
         <!-- not run: needs AWS -->\n```sh\nd\n```\n{}\n```sh\ne\n```\n{}\n\
         ```\nnot sh\n```\n```sh\nunmarked\n```\n<!-- not run: -->\n```sh\nno reason\n```\n\
         ```bash\nbash\n```\n",
        super::readme::BEGIN,
        super::readme::END,
    );
    let (blocks, wrong) = parse("x.md", &doc);
    let marks: Vec<&Mark> = blocks.iter().map(|b| &b.mark).collect();
    assert_eq!(
        marks,
        [
            &Mark::Run("one".into()),
            &Mark::Checked("two".into()),
            &Mark::NotRun,
            &Mark::Readme
        ]
    );
    assert_eq!(blocks[0].lines, ["a b"]);
    assert_eq!(blocks[0].at, "x.md:5");
    assert_eq!(wrong.len(), 3, "{wrong:#?}");
    assert!(
        wrong[0].starts_with("x.md:25: an sh block with no mark"),
        "{wrong:#?}"
    );
    assert!(
        wrong[1].starts_with("x.md:29: an sh block with no mark"),
        "{wrong:#?}"
    );
    assert!(wrong[2].contains("not ```bash"), "{wrong:#?}");
    assert_eq!(
        words(r#"a "b c" 'd # e' f # g"#),
        ["a", "b c", "d # e", "f"]
    );
    assert_eq!(
        code_and_comment("x --y 'a#b' # or --z"),
        ("x --y 'a#b'", Some("or --z"))
    );
}
