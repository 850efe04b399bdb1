//! Repository hygiene: every Rust file starts with a `//!` comment, and every integration test
//! cluster uses its own loopback subnet.
#![allow(clippy::unwrap_used)] // Test code.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn every_rust_file_starts_with_a_module_comment() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:?}"
    );
}

#[test]
fn every_test_cluster_has_its_own_subnet() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut seen = std::collections::BTreeMap::new();
    for file in [
        "cluster.rs",
        "local.rs",
        "membership.rs",
        "partition.rs",
        "failpoints.rs",
        "backup.rs",
        "aws.rs",
        "faults.rs",
        "quorum.rs",
        "upgrade.rs",
        "maintenance.rs",
    ] {
        let text = std::fs::read_to_string(tests.join(file)).unwrap();
        // Subnets are literals given as the first argument of `Cluster::new(N, ..)`,
        // `running(N, ..)`, the fault catalog's `loaded(N, ..)` and `bad_config_rolled_out(N, ..)`, or a
        // helper called as `helper(N, Version::..)`.
        let mut literals: Vec<String> = [
            "Cluster::new(",
            "Cluster::with(",
            "running(",
            "running_with(",
            "aws_cluster(",
            "aws_cluster_with(",
            "loaded(",
            "bad_config_rolled_out(",
            "cluster_of_users(",
        ]
        .iter()
        .flat_map(|call| text.match_indices(call).map(move |(i, _)| i + call.len()))
        .map(|start| {
            text[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect()
        })
        .collect();
        literals.extend(text.match_indices(", Version::V").filter_map(|(i, _)| {
            let digits: String = text[..i]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect();
            let opens_call = text[..i - digits.len()].ends_with('(');
            opens_call.then(|| digits.chars().rev().collect())
        }));
        for literal in literals {
            if let Ok(subnet) = literal.parse::<u8>() {
                assert!(
                    seen.insert(subnet, file).is_none(),
                    "subnet 127.0.{subnet}.0/24 used twice"
                );
            }
        }
        for (i, _) in text.match_indices("\"127.0.") {
            let rest: String = text[i + 7..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let subnet: u8 = rest.parse().unwrap();
            seen.entry(subnet).or_insert(file);
        }
    }
    for (subnet, file) in &seen {
        assert!(
            *subnet >= 20 && *subnet != 10,
            "{file} uses 127.0.{subnet}.0/24: tests use 20 and up (10 is `local up`'s)"
        );
    }
}
