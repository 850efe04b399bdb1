//! DNS records of the healthy voters: which records should exist (`desired`) and the
//! smallest batch of changes that gets a zone there (`changes`).
//!
//! The pilot owns, under its domain: the SRV records `_etcd-server._tcp.<domain>` and
//! `_etcd-client._tcp.<domain>` (and the legacy `_etcd._tcp.<domain>` when asked), the A
//! record `<domain>` with every healthy voter's address, one `<member>.<domain>` per healthy
//! voter, and the ownership record `_etcd-pilot.<domain>` (TXT, the member names it
//! published). A `<name>.<domain>` record is deleted only when the ownership record lists
//! it: records an operator keeps under the same domain are never touched.

use std::collections::{BTreeMap, BTreeSet};

/// A record type the pilot manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// IPv4 address.
    A,
    /// Service location: `priority weight port target`.
    Srv,
    /// Text: the ownership record.
    Txt,
}

/// One record set: a name, a type, a TTL and its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Fully qualified, lower case, without the trailing dot.
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Time to live, in seconds.
    pub ttl: u32,
    /// Its values, sorted (the order is not meaningful).
    pub values: BTreeSet<String>,
}

/// A change of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or replace the record set.
    Upsert(Record),
    /// Delete it (the record set exactly as it exists).
    Delete(Record),
}

/// A healthy voter, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The member name (a DNS label: `<name>.<domain>`).
    pub name: String,
    /// The host of its URLs: an IPv4 address gets an A record; a DNS name is the SRV target.
    pub host: String,
    /// Its peer port.
    pub peer_port: u16,
    /// Its client port.
    pub client_port: u16,
}

/// What to publish and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The domain, without the trailing dot (`etcd.example.com`).
    pub domain: String,
    /// TTL of every record.
    pub ttl: u32,
    /// Also publish `_etcd._tcp.<domain>` (etcd 2's discovery name).
    pub legacy_srv: bool,
}

/// The ownership record's name.
pub fn owner_name(domain: &str) -> String {
    format!("_etcd-pilot.{domain}")
}

/// Lower case without the trailing dot: how names are compared.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is a valid single DNS label (what a member name must be to get a record).
fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The records that should exist for `voters`. Empty when `voters` is: with no healthy voter
/// known, nothing is published and nothing is deleted (see [`changes`]).
pub fn desired(zone: &Zone, voters: &[Published]) -> Vec<Record> {
    let domain = normalize(&zone.domain);
    let mut voters: Vec<&Published> = voters.iter().filter(|v| is_label(&v.name)).collect();
    voters.sort_by(|a, b| a.name.cmp(&b.name));
    voters.dedup_by(|a, b| a.name == b.name);
    if voters.is_empty() {
        return Vec::new();
    }
    let record = |name: String, kind: Kind, values: BTreeSet<String>| Record {
        name,
        kind,
        ttl: zone.ttl,
        values,
    };
    let mut records = Vec::new();
    let mut apex = BTreeSet::new();
    let mut owned = BTreeSet::new();
    let mut targets = Vec::new();
    for voter in &voters {
        let host = voter.name.to_ascii_lowercase();
        let target = if voter.host.parse::<std::net::Ipv4Addr>().is_ok() {
            let name = format!("{host}.{domain}");
            records.push(record(
                name.clone(),
                Kind::A,
                BTreeSet::from([voter.host.clone()]),
            ));
            apex.insert(voter.host.clone());
            owned.insert(format!("\"{host}\""));
            name
        } else {
            normalize(&voter.host)
        };
        targets.push((target, voter.peer_port, voter.client_port));
    }
    if !apex.is_empty() {
        records.push(record(domain.clone(), Kind::A, apex));
    }
    let srv = |port: fn(&(String, u16, u16)) -> u16| -> BTreeSet<String> {
        targets
            .iter()
            .map(|t| format!("0 0 {} {}", port(t), t.0))
            .collect()
    };
    records.push(record(
        format!("_etcd-server._tcp.{domain}"),
        Kind::Srv,
        srv(|t| t.1),
    ));
    records.push(record(
        format!("_etcd-client._tcp.{domain}"),
        Kind::Srv,
        srv(|t| t.2),
    ));
    if zone.legacy_srv {
        records.push(record(
            format!("_etcd._tcp.{domain}"),
            Kind::Srv,
            srv(|t| t.1),
        ));
    }
    if owned.is_empty() {
        owned.insert("\"\"".to_owned());
    }
    records.push(record(owner_name(&domain), Kind::Txt, owned));
    records.sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    records
}

/// The member names an ownership record lists.
fn owned_names(current: &[Record], domain: &str) -> BTreeSet<String> {
    current
        .iter()
        .filter(|r| r.kind == Kind::Txt && normalize(&r.name) == owner_name(domain))
        .flat_map(|r| r.values.iter())
        .flat_map(|v| v.split('"'))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The smallest batch taking `current` (the zone's records under the domain) to `desired`:
/// an upsert for each record set that is missing or differs, a delete for each record set
/// the pilot owns that should no longer exist (the legacy SRV record is left alone once
/// turned off: an operator may keep it by hand). Empty when `desired` is empty: an empty
/// answer never wipes the records.
pub fn changes(zone: &Zone, current: &[Record], desired: &[Record]) -> Vec<Change> {
    if desired.is_empty() {
        return Vec::new();
    }
    let domain = normalize(&zone.domain);
    let key = |r: &Record| (normalize(&r.name), r.kind);
    let current_by: BTreeMap<(String, Kind), &Record> =
        current.iter().map(|r| (key(r), r)).collect();
    let desired_by: BTreeMap<(String, Kind), &Record> =
        desired.iter().map(|r| (key(r), r)).collect();
    let mut out = Vec::new();
    for (k, want) in &desired_by {
        match current_by.get(k) {
            Some(have) if have.ttl == want.ttl && have.values == want.values => {}
            _ => out.push(Change::Upsert((*want).clone())),
        }
    }
    let owned = owned_names(current, &domain);
    let fixed: BTreeSet<(String, Kind)> = [
        (domain.clone(), Kind::A),
        (format!("_etcd-server._tcp.{domain}"), Kind::Srv),
        (format!("_etcd-client._tcp.{domain}"), Kind::Srv),
        (owner_name(&domain), Kind::Txt),
    ]
    .into();
    for (k, have) in &current_by {
        if desired_by.contains_key(k) {
            continue;
        }
        let ours = fixed.contains(k)
            || (k.1 == Kind::A
                && k.0
                    .strip_suffix(&format!(".{domain}"))
                    .is_some_and(|label| owned.contains(label)));
        if ours {
            out.push(Change::Delete(Record {
                name: normalize(&have.name),
                ..(*have).clone()
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests;
