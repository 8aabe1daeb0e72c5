//! The blocks checked without running them: what each command names exists and its flags
//! parse. `docs/deploy.md`'s SAM and CDK deploys and the stack outputs `docs/operations.md`
//! reads (they need an AWS account), `docs/benchmarks.md`'s commands (release builds and
//! minutes of measuring), and `docs/operations.md`'s `cargo lambda` block ([`super::lambda`]).

use super::{Block, DOC_TARGET, block, code_and_comment, has_target, packages, read, words};
use eventfold_local::Template;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Where `scripts/build-functions` puts `sam build`'s output unless told otherwise.
const BUILD_DIR: &str = ".aws-sam/build";

/// The project's template, with the local stack's names.
pub(super) fn template() -> Template {
    let path = tests::root().join(eventfold_local::stack::TEMPLATE_PATH);
    Template::load(&path, "eventfold-local", "us-east-1").expect("the template")
}

/// The `VAR=$(out OUTPUT)` pairs of the deployed-stack block's `export` line.
pub(super) fn exported_outputs(block: &Block) -> Vec<(String, String)> {
    let line = block
        .commands()
        .into_iter()
        .find_map(|l| l.strip_prefix("export "))
        .unwrap_or_else(|| panic!("{}: an `export` line", block.at));
    let mut pairs = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(token) = tokens.next() {
        let var = token.strip_suffix("=$(out");
        let output = tokens.next().and_then(|o| o.strip_suffix(')'));
        let (Some(var), Some(output)) = (var, output) else {
            panic!("{}: `VAR=$(out OUTPUT)` pairs: {line}", block.at)
        };
        pairs.push((var.to_owned(), output.to_owned()));
    }
    assert!(!pairs.is_empty(), "{}: {line}", block.at);
    pairs
}

/// The logical id the template's output `name` is (`Value: !Ref X`).
pub(super) fn output_ref(name: &str) -> Option<String> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(eventfold_local::stack::TEMPLATE_PATH)).expect("YAML");
    match yaml.get("Outputs")?.get(name)?.get("Value")? {
        serde_yaml_ng::Value::Tagged(t) if t.tag == "Ref" => t.value.as_str().map(str::to_owned),
        _ => None,
    }
}

/// `samconfig.toml`'s `[section]`s and their `key = "value"` lines (arrays left out).
fn samconfig() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("samconfig.toml").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once(" = ") {
            let value = value.trim().trim_matches('"').to_owned();
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_owned(), value);
        }
    }
    sections
}

/// `path` with `.` and `..` resolved, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A deploy's `NAME=VALUE` parameter checked against the template (declared, and the value
/// fits it); its name.
fn parameter(at: &str, template: &mut Template, pair: &str) -> String {
    let (name, value) = pair
        .split_once('=')
        .unwrap_or_else(|| panic!("{at}: NAME=VALUE, not {pair}"));
    template
        .override_parameter(name, value)
        .unwrap_or_else(|e| panic!("{at}: parameter {pair}: {e:#}"));
    name.to_owned()
}

/// Asserts a deploy gives every template parameter that has no default.
fn gives_every_required(at: &str, template: &Template, given: &[String]) {
    let missing: Vec<String> = template
        .parameter_names()
        .into_iter()
        .filter(|n| template.parameter(n).is_none() && !given.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "{at}: the deploy does not give {missing:?}"
    );
}

/// Checks the SAM block; the stack names it deploys.
fn check_sam(block: &Block) -> Vec<String> {
    let config = samconfig();
    let mut stacks = Vec::new();
    for line in block.commands() {
        let w = words(line);
        match w.first().map(String::as_str) {
            Some("scripts/build-functions") => assert_eq!(w.len(), 1, "{}: {line}", block.at),
            Some(".venv/bin/sam") => {
                assert!(
                    read("scripts/requirements.txt").contains("aws-sam-cli"),
                    "scripts/setup installs sam into .venv"
                );
                assert_eq!(w.get(1).map(String::as_str), Some("deploy"), "{line}");
                let mut template = template();
                let mut given = Vec::new();
                let mut args = w[2..].iter().peekable();
                while let Some(flag) = args.next() {
                    match flag.as_str() {
                        "--config-env" => {
                            let env = args.next().expect("a config env");
                            let section = format!("{env}.deploy.parameters");
                            let deploy = config.get(&section).unwrap_or_else(|| {
                                panic!("{}: samconfig.toml has no [{section}]", block.at)
                            });
                            stacks.push(deploy["stack_name"].clone());
                        }
                        "--template-file" => assert_eq!(
                            args.next().map(String::as_str),
                            Some(format!("{BUILD_DIR}/template.yaml").as_str()),
                            "{}: the template sam build wrote",
                            block.at
                        ),
                        "--parameter-overrides" => {
                            while let Some(pair) = args.next_if(|a| !a.starts_with("--")) {
                                given.push(parameter(&block.at, &mut template, pair));
                            }
                        }
                        other => panic!("{}: `sam deploy {other}`: not checked here", block.at),
                    }
                }
                gives_every_required(&block.at, &template, &given);
            }
            _ => panic!("{}: this test does not check `{line}`", block.at),
        }
    }
    stacks
}

/// Checks the CDK block; the stack names it deploys.
fn check_cdk(block: &Block) -> Vec<String> {
    let root = tests::root();
    let package: serde_json::Value =
        serde_json::from_str(&read("infra/cdk/package.json")).expect("package.json");
    let tool = |name: &str| package["devDependencies"][name].is_string();
    let app = read("infra/cdk/bin/app.ts");
    let stack = read("infra/cdk/lib/stack.ts");
    let (mut dir, mut stacks) = (root.clone(), Vec::new());
    for line in block.commands() {
        for command in code_and_comment(line).0.split("&&") {
            let w = words(command);
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            let at = &block.at;
            match w.as_slice() {
                ["scripts/build-functions"] => assert_eq!(dir, root, "{at}: from the root"),
                ["cd", to] => {
                    dir = dir.join(to);
                    assert!(dir.is_dir(), "{at}: no {}", dir.display());
                }
                ["npm", "ci"] => assert!(
                    dir == root.join("infra/cdk") && dir.join("package-lock.json").is_file(),
                    "{at}: npm ci in {} needs its package-lock.json",
                    dir.display()
                ),
                ["npx", "tsc"] => {
                    assert!(tool("typescript") && dir.join("tsconfig.json").is_file())
                }
                ["npx", "cdk", "bootstrap"] => assert!(tool("aws-cdk"), "{at}"),
                ["npx", "cdk", "deploy", args @ ..] => {
                    assert!(tool("aws-cdk"), "{at}");
                    let mut template = template();
                    let mut given = Vec::new();
                    for pair in args.chunks(2) {
                        let [flag, value] = pair else {
                            panic!("{at}: `{flag} VALUE` pairs: {command}", flag = pair[0])
                        };
                        let (key, v) = value
                            .split_once('=')
                            .unwrap_or_else(|| panic!("{at}: {flag} KEY=VALUE: {value}"));
                        match *flag {
                            "-c" => {
                                assert!(
                                    app.contains(&format!("tryGetContext(\"{key}\")")),
                                    "{at}: infra/cdk/bin/app.ts reads no context `{key}`"
                                );
                                match key {
                                    "functionsDir" => assert_eq!(
                                        normalize(&dir.join(v)),
                                        root.join(BUILD_DIR),
                                        "{at}: the functions scripts/build-functions built"
                                    ),
                                    "stackName" => stacks.push(v.to_owned()),
                                    _ => {}
                                }
                            }
                            "--parameters" => {
                                assert!(
                                    stack
                                        .contains(&format!("new cdk.CfnParameter(this, \"{key}\"")),
                                    "{at}: infra/cdk/lib/stack.ts declares no parameter {key}"
                                );
                                given.push(parameter(at, &mut template, value));
                            }
                            other => panic!("{at}: `cdk deploy {other}`: not checked here"),
                        }
                    }
                    gives_every_required(at, &template, &given);
                }
                _ => panic!("{at}: this test does not check `{command}`"),
            }
        }
    }
    stacks
}

#[test]
fn the_deploy_blocks_name_what_exists() {
    assert!(
        read("scripts/build-functions").contains(&format!("build_dir=\"${{1:-{BUILD_DIR}}}\"")),
        "scripts/build-functions builds into {BUILD_DIR} unless told otherwise"
    );
    let mut stacks = check_sam(&block("sam-deploy"));
    stacks.extend(check_cdk(&block("cdk-deploy")));

    // docs/operations.md reads the outputs of the stack the deploys name.
    let deployed = block("deployed-stack");
    let out = deployed
        .commands()
        .into_iter()
        .find(|l| l.starts_with("out()"))
        .unwrap_or_else(|| panic!("{}: an out() function", deployed.at));
    let words = words(out);
    let name = words
        .iter()
        .skip_while(|w| *w != "--stack-name")
        .nth(1)
        .expect("--stack-name NAME");
    assert!(
        stacks.len() == 2 && stacks.iter().all(|s| s == name),
        "{}: it reads stack {name}; the deploys deploy {stacks:?}",
        deployed.at
    );
    let tables: Vec<String> = template()
        .tables()
        .into_iter()
        .map(|t| t.logical_id)
        .collect();
    for (_, output) in exported_outputs(&deployed) {
        let table = output_ref(&output)
            .unwrap_or_else(|| panic!("{}: the template has no output {output}", deployed.at));
        assert!(tables.contains(&table), "{output} is !Ref {table}, a table");
    }
}

/// Parses `eventfold-bench` `args` as the binary would.
fn parses_as_bench(at: &str, args: &[String]) {
    use clap::Parser;
    let argv = std::iter::once("eventfold-bench").chain(args.iter().map(String::as_str));
    if let Err(e) = bench::args::Bench::try_parse_from(argv) {
        panic!("{at}: eventfold-bench {}: {e}", args.join(" "));
    }
}

/// Checks one `cargo ...` command of the benchmarks block: its packages and targets exist,
/// and what `cargo run` hands `eventfold-bench` parses.
fn check_cargo(at: &str, w: &[String]) {
    let (flags, args) = match w.iter().position(|x| x == "--") {
        Some(i) => (&w[2..i], &w[i + 1..]),
        None => (&w[2..], &[][..]),
    };
    let (mut packages_named, mut benches) = (Vec::new(), Vec::new());
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--release" => {}
            "-p" => packages_named.push(flags.next().expect("-p PACKAGE").clone()),
            "--bench" => benches.push(flags.next().expect("--bench NAME").clone()),
            other => panic!("{at}: cargo {} {other}: not checked here", w[1]),
        }
    }
    for p in &packages_named {
        assert!(packages().contains_key(p), "{at}: no package {p}");
    }
    match w[1].as_str() {
        "run" => {
            assert_eq!(
                packages_named,
                ["bench"],
                "{at}: only eventfold-bench is parsed here"
            );
            assert!(has_target("bench", "bin", "eventfold-bench"), "{at}");
            parses_as_bench(at, args);
        }
        "build" => assert!(args.is_empty(), "{at}"),
        "bench" => {
            for (p, b) in packages_named
                .iter()
                .flat_map(|p| benches.iter().map(move |b| (p, b)))
            {
                assert!(has_target(p, "bench", b), "{at}: {p} has no bench {b}");
            }
            assert!(!benches.is_empty(), "{at}: --bench NAME");
        }
        other => panic!("{at}: cargo {other}: not checked here"),
    }
}

#[test]
fn the_benchmark_commands_parse() {
    let b = block("bench");
    let mut checked = 0;
    for line in b.commands() {
        for command in code_and_comment(line).0.split("&&") {
            let mut w = words(command);
            // `> /dev/null`: where the figures do not go.
            if let Some(i) = w.iter().position(|x| x == ">") {
                w.drain(i..(i + 2).min(w.len()));
            }
            let first = w.first().cloned().unwrap_or_default();
            if first == "cargo" && w.len() > 1 {
                check_cargo(&b.at, &w);
            } else if let Some(binary) = first.strip_prefix(&format!("{DOC_TARGET}release/")) {
                assert_eq!(binary, "eventfold-bench", "{}: {command}", b.at);
                parses_as_bench(&b.at, &w[1..]);
            } else {
                // A script: it exists (the check of every block); it takes no arguments here.
                assert!(
                    first.starts_with("./scripts/") && w.len() == 1,
                    "{}: {command}",
                    b.at
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "{}: {checked} commands", b.at);
}
