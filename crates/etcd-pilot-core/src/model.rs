//! The vocabulary shared by every decision: members, peers, identities, health.
//!
//! Identifiers are newtypes built once at the boundary ("parse, don't validate").

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of a member (and of the node it runs on): `[A-Za-z0-9._-]`, 1 to 64 bytes.
///
/// etcd itself accepts any string, but names travel through flags, file names and DNS
/// labels, so we accept only what is safe in all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

/// Why a string is not a valid [`MemberName`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidName {
    /// The rejected input.
    pub input: String,
}

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid member name: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
            self.input
        )
    }
}

impl std::error::Error for InvalidName {}

impl MemberName {
    /// Checks `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(name))
        } else {
            Err(InvalidName { input: name })
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MemberName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<MemberName> for String {
    fn from(value: MemberName) -> Self {
        value.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An etcd member id. Displayed in hex, as etcdctl does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// An etcd cluster id. Displayed in hex, as etcdctl does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A node that discovery says should be a member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The member name the node's etcd runs under.
    pub name: MemberName,
    /// The URL other members reach this node's etcd on (`--initial-advertise-peer-urls`).
    pub peer_url: String,
    /// The URL clients reach this node's etcd on (`--advertise-client-urls`).
    pub client_url: String,
    /// The base URL of this node's pilot admin API (`http://host:port`).
    pub admin_url: String,
}

/// A member as etcd's member list reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member id.
    pub id: MemberId,
    /// The member name; `None` for a member added by MemberAdd whose etcd has not started.
    /// (Members of the initial cluster have their name from the start.)
    pub name: Option<MemberName>,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty while the member has not started.
    pub client_urls: Vec<String>,
    /// Whether the member is a raft learner (non-voting).
    pub is_learner: bool,
}

impl Member {
    /// Whether this member's etcd has started at least once: it publishes its client URLs
    /// then. (The name is not a signal: initial members have one before they start.)
    pub fn is_started(&self) -> bool {
        !self.client_urls.is_empty()
    }

    /// Whether the member is still joining: added but not started, or a learner.
    pub fn is_pending(&self) -> bool {
        !self.is_started() || self.is_learner
    }
}

/// Who a data directory belongs to. Stored beside the data; checked at every start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The member name the data was created under.
    pub name: MemberName,
    /// The cluster the data belongs to; `None` until the member's etcd first answered.
    pub cluster_id: Option<ClusterId>,
    /// The member the data belongs to; `None` until the member's etcd first answered.
    pub member_id: Option<MemberId>,
}

/// What we know of a member's health. `Unknown` (we could not ask) is never `Unhealthy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// It answered a status request within the timeout and reports no errors.
    Healthy,
    /// It answered, and reported errors or no leader.
    Unhealthy,
    /// We could not reach it: down, partitioned or slow. Not evidence of anything.
    Unknown,
}

/// The number of voters that form a quorum among `n_voters`.
pub fn quorum(n_voters: usize) -> usize {
    n_voters / 2 + 1
}

/// How many voters the cluster can still lose and keep its quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTolerance {
    /// Voting members (the core's `condition::fault_tolerance` counts an initial member that
    /// never started too, as raft does).
    pub voters: usize,
    /// Those that answer healthy.
    pub healthy: usize,
    /// Voters needed for a quorum.
    pub quorum: usize,
    /// Healthy voters it can lose and keep its quorum; `None`: the quorum is lost.
    pub can_lose: Option<usize>,
}

impl FaultTolerance {
    /// For `voters` started voting members of which `healthy` answer healthy.
    pub fn of(voters: usize, healthy: usize) -> Self {
        let healthy = healthy.min(voters);
        let needed = quorum(voters);
        Self {
            voters,
            healthy,
            quorum: needed,
            can_lose: healthy.checked_sub(needed),
        }
    }

    /// In words, for `plan` and `status`.
    pub fn describe(&self) -> String {
        match self.can_lose {
            None => format!(
                "QUORUM LOST: {} of {} voters healthy, {} needed",
                self.healthy, self.voters, self.quorum
            ),
            Some(0) => format!(
                "cannot lose any member: {} of {} voters healthy, quorum {}",
                self.healthy, self.voters, self.quorum
            ),
            Some(n) => format!(
                "can lose {n} more member{}: {} of {} voters healthy, quorum {}",
                if n == 1 { "" } else { "s" },
                self.healthy,
                self.voters,
                self.quorum
            ),
        }
    }
}

/// The `--initial-cluster` value for `members` (name, peer URL), sorted by name.
pub fn initial_cluster<'a>(members: impl IntoIterator<Item = (&'a MemberName, &'a str)>) -> String {
    let mut pairs: Vec<(&MemberName, &str)> = members.into_iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster token for a new cluster: the cluster name, a hash of its initial member list,
/// and a random nonce.
///
/// etcd derives member and cluster ids from the peer URLs and the token alone, so without the
/// nonce a cluster bootstrapped again with the same name and members (after a total loss, or
/// a second `local up` elsewhere) would get the same cluster id, and the identity check could
/// not tell its data from the old cluster's.
pub fn cluster_token(cluster_name: &str, initial_cluster: &str, nonce: u32) -> String {
    // FNV-1a, 32 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in initial_cluster.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{cluster_name}-{hash:08x}-{nonce:08x}")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn fault_tolerance_in_words() {
        let said: Vec<String> = [
            (3, 3),
            (3, 2),
            (3, 1),
            (5, 5),
            (5, 3),
            (1, 1),
            (2, 2),
            (4, 3),
        ]
        .iter()
        .map(|&(v, h)| FaultTolerance::of(v, h).describe())
        .collect();
        expect_test::expect![[r#"
            [
                "can lose 1 more member: 3 of 3 voters healthy, quorum 2",
                "cannot lose any member: 2 of 3 voters healthy, quorum 2",
                "QUORUM LOST: 1 of 3 voters healthy, 2 needed",
                "can lose 2 more members: 5 of 5 voters healthy, quorum 3",
                "cannot lose any member: 3 of 5 voters healthy, quorum 3",
                "cannot lose any member: 1 of 1 voters healthy, quorum 1",
                "cannot lose any member: 2 of 2 voters healthy, quorum 2",
                "cannot lose any member: 3 of 4 voters healthy, quorum 3",
            ]
        "#]]
        .assert_debug_eq(&said);
    }

    proptest! {
        /// Losing `can_lose` more healthy voters keeps the quorum; one more loses it.
        #[test]
        fn can_lose_is_exactly_the_margin(voters in 1usize..9, healthy in 0usize..9) {
            let ft = FaultTolerance::of(voters, healthy);
            let healthy = healthy.min(voters);
            match ft.can_lose {
                Some(n) => {
                    prop_assert!(healthy - n >= quorum(voters));
                    prop_assert!(healthy - n < quorum(voters) + 1);
                }
                None => prop_assert!(healthy < quorum(voters)),
            }
        }
    }

    use super::*;

    #[test]
    fn member_names_reject_unsafe_characters() {
        assert!(MemberName::new("m1").is_ok());
        assert!(MemberName::new("i-0abc.eu_1").is_ok());
        assert!(MemberName::new("").is_err());
        assert!(MemberName::new("a b").is_err());
        assert!(MemberName::new("a=b").is_err());
        assert!(MemberName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn initial_cluster_is_sorted_and_token_is_stable() {
        let a = MemberName::new("b").unwrap();
        let b = MemberName::new("a").unwrap();
        let ic = initial_cluster([(&a, "http://2"), (&b, "http://1")]);
        assert_eq!(ic, "a=http://1,b=http://2");
        assert_eq!(cluster_token("prod", &ic, 7), cluster_token("prod", &ic, 7));
        assert_ne!(
            cluster_token("prod", &ic, 7),
            cluster_token("prod", "a=http://1", 7)
        );
        assert_ne!(cluster_token("prod", &ic, 7), cluster_token("prod", &ic, 8));
        assert!(cluster_token("prod", &ic, 7).starts_with("prod-"));
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }
}
