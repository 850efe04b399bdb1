//! What `etcd-pilot aws template` and `etcd-pilot systemd-unit` print: the CloudFormation
//! template of a production cluster and the systemd unit it installs, both kept as files
//! under `deploy/` (checked by `cfn-lint` and `systemd-analyze verify` in the tests).

/// The CloudFormation template (`deploy/aws/etcd-pilot.yaml`).
pub(crate) const CLOUDFORMATION: &str = include_str!("../../../deploy/aws/etcd-pilot.yaml");

/// The systemd unit (`deploy/systemd/etcd-pilot.service`).
pub(crate) const SYSTEMD_UNIT: &str = include_str!("../../../deploy/systemd/etcd-pilot.service");
