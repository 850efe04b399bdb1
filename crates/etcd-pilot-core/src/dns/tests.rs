//! DNS records: a table of desired records and change batches, and properties of `changes`.

use expect_test::{Expect, expect};
use proptest::prelude::*;

use super::*;

fn zone(legacy: bool) -> Zone {
    Zone {
        domain: "etcd.example.com.".to_owned(),
        ttl: 60,
        legacy_srv: legacy,
    }
}

fn voter(name: &str, host: &str) -> Published {
    Published {
        name: name.to_owned(),
        host: host.to_owned(),
        peer_port: 2380,
        client_port: 2379,
    }
}

fn show(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {} {}\n",
                r.name,
                r.kind,
                r.ttl,
                r.values.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        })
        .collect()
}

fn show_changes(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| match c {
            Change::Upsert(r) => format!("UPSERT {}", show(std::slice::from_ref(r))),
            Change::Delete(r) => format!("DELETE {}", show(std::slice::from_ref(r))),
        })
        .collect()
}

fn check_desired(legacy: bool, voters: &[Published], expect: Expect) {
    expect.assert_eq(&show(&desired(&zone(legacy), voters)));
}

#[test]
fn desired_records() {
    check_desired(
        false,
        &[voter("i-b", "127.0.10.5"), voter("i-a", "127.0.10.4")],
        expect![[r#"
            _etcd-client._tcp.etcd.example.com Srv 60 0 0 2379 i-a.etcd.example.com | 0 0 2379 i-b.etcd.example.com
            _etcd-pilot.etcd.example.com Txt 60 "i-a" | "i-b"
            _etcd-server._tcp.etcd.example.com Srv 60 0 0 2380 i-a.etcd.example.com | 0 0 2380 i-b.etcd.example.com
            etcd.example.com A 60 127.0.10.4 | 127.0.10.5
            i-a.etcd.example.com A 60 127.0.10.4
            i-b.etcd.example.com A 60 127.0.10.5
        "#]],
    );
    // Legacy SRV; a member reached by DNS name is the SRV target itself, without an A record.
    check_desired(
        true,
        &[voter("m1", "node1.internal."), voter("m2", "127.0.10.9")],
        expect![[r#"
            _etcd-client._tcp.etcd.example.com Srv 60 0 0 2379 m2.etcd.example.com | 0 0 2379 node1.internal
            _etcd-pilot.etcd.example.com Txt 60 "m2"
            _etcd-server._tcp.etcd.example.com Srv 60 0 0 2380 m2.etcd.example.com | 0 0 2380 node1.internal
            _etcd._tcp.etcd.example.com Srv 60 0 0 2380 m2.etcd.example.com | 0 0 2380 node1.internal
            etcd.example.com A 60 127.0.10.9
            m2.etcd.example.com A 60 127.0.10.9
        "#]],
    );
    // No healthy voter: nothing (and so nothing is deleted either).
    check_desired(false, &[], expect![""]);
    // A name that is no DNS label is left out.
    check_desired(false, &[voter("bad.name", "127.0.10.4")], expect![""]);
}

fn record(name: &str, kind: Kind, values: &[&str]) -> Record {
    Record {
        name: name.to_owned(),
        kind,
        ttl: 60,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

#[test]
fn change_batches() {
    let z = zone(false);
    let two = desired(
        &z,
        &[voter("i-a", "127.0.10.4"), voter("i-b", "127.0.10.5")],
    );
    // Converged: no change at all.
    expect![""].assert_eq(&show_changes(&changes(&z, &two, &two)));
    // i-b replaced by i-c: upserts of what changed, the delete of i-b's record; the
    // operator's own record under the domain stays.
    let mut current = two.clone();
    current.push(record("www.etcd.example.com.", Kind::A, &["127.0.0.9"]));
    let next = desired(
        &z,
        &[voter("i-a", "127.0.10.4"), voter("i-c", "127.0.10.6")],
    );
    expect![[r#"
        UPSERT _etcd-client._tcp.etcd.example.com Srv 60 0 0 2379 i-a.etcd.example.com | 0 0 2379 i-c.etcd.example.com
        UPSERT _etcd-pilot.etcd.example.com Txt 60 "i-a" | "i-c"
        UPSERT _etcd-server._tcp.etcd.example.com Srv 60 0 0 2380 i-a.etcd.example.com | 0 0 2380 i-c.etcd.example.com
        UPSERT etcd.example.com A 60 127.0.10.4 | 127.0.10.6
        UPSERT i-c.etcd.example.com A 60 127.0.10.6
        DELETE i-b.etcd.example.com A 60 127.0.10.5
    "#]]
    .assert_eq(&show_changes(&changes(&z, &current, &next)));
    // A TTL change is an upsert; nothing to publish never deletes.
    let longer = desired(
        &Zone {
            ttl: 300,
            ..z.clone()
        },
        &[voter("i-a", "127.0.10.4"), voter("i-b", "127.0.10.5")],
    );
    assert_eq!(changes(&z, &two, &longer).len(), two.len());
    assert!(changes(&z, &two, &[]).is_empty());
}

fn apply(current: &[Record], batch: &[Change]) -> Vec<Record> {
    let mut zone: BTreeMap<(String, Kind), Record> = current
        .iter()
        .map(|r| ((normalize(&r.name), r.kind), r.clone()))
        .collect();
    for change in batch {
        match change {
            Change::Upsert(r) => {
                zone.insert((normalize(&r.name), r.kind), r.clone());
            }
            Change::Delete(r) => {
                assert!(
                    zone.remove(&(normalize(&r.name), r.kind)).is_some(),
                    "deleting {r:?}, which does not exist"
                );
            }
        }
    }
    zone.into_values().collect()
}

fn arb_voters() -> impl Strategy<Value = Vec<Published>> {
    proptest::collection::vec((0u8..6, 1u8..250), 0..5).prop_map(|v| {
        v.into_iter()
            .map(|(n, ip)| voter(&format!("m{n}"), &format!("127.0.10.{ip}")))
            .collect()
    })
}

proptest! {
    /// From any zone the pilot produced (plus an operator's record), one batch reaches the
    /// desired records exactly, touches nothing it does not own, and a second batch is empty.
    #[test]
    fn one_batch_converges_and_spares_foreign_records(before in arb_voters(), after in arb_voters(), legacy in any::<bool>()) {
        let z = zone(legacy);
        let foreign = record("www.etcd.example.com", Kind::A, &["127.0.0.9"]);
        let mut current = desired(&z, &before);
        current.push(foreign.clone());
        let want = desired(&z, &after);
        let batch = changes(&z, &current, &want);
        let result = apply(&current, &batch);
        prop_assert!(result.contains(&foreign));
        if want.is_empty() {
            prop_assert!(batch.is_empty());
        } else {
            for r in &want {
                prop_assert!(result.contains(r), "missing {:?}", r);
            }
            let managed: Vec<&Record> = result.iter().filter(|r| **r != foreign).collect();
            // Only the legacy SRV may outlive its desired state (left for the operator).
            for r in managed {
                prop_assert!(want.contains(r) || r.name.starts_with("_etcd._tcp."), "left over {:?}", r);
            }
            prop_assert!(changes(&z, &result, &want).is_empty());
        }
    }
}
