//! The decisions of etcd-pilot, as pure functions.
//!
//! This crate owns every choice the pilot makes about the cluster: how a node starts
//! (restart, join, bootstrap, quarantine, wait), how the etcd child is restarted, and whether a
//! crash means its data is unusable or only that etcd cannot run (`crash`).
//! It also decides the coordinator's membership changes (`plan`), which backups retention
//! lets go (`retention`) and which quarantined copies (`quarantine`), which backup to restore or verify and when one is due (`backup`), which DNS
//! records to publish (`dns`), what keeps the cluster from full strength (`condition`), how long each member has been unlisted, pending or down (`timers`), what an autoscaling lifecycle message asks (`lifecycle`), whether a lost quorum is reseeded and from which survivor (`reseed`), which etcd upgrades are allowed and who upgrades next (`upgrade`), and how much history compaction keeps (`maintenance`).
//! It does no IO, reads no clock and draws no random numbers: the caller observes the
//! world, passes it in as plain values, and executes what comes back.
//! It does not own how the world is observed or how actions are executed; that is the
//! `etcd-pilot` crate.

pub mod backup;
pub mod condition;
pub mod crash;
pub mod dns;
pub mod lifecycle;
pub mod maintenance;
pub mod model;
pub mod plan;
pub mod quarantine;
pub mod reseed;
pub mod retention;
pub mod start;
pub mod supervise;
pub mod timers;
pub mod upgrade;

pub use model::{ClusterId, FaultTolerance, Health, Identity, Member, MemberId, MemberName, Peer};
