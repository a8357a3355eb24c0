# berth: the two commands of the README, and their parts.
#
#   sudo make run    install what is missing, build, run berthd with its embedded defaults
#   sudo make test   install what is missing, then fmt, clippy, unit and integration tests
#   sudo make bench  berth against containerd and the physical floors (not in CI)
#
# Everything else comes from Debian's packages; nothing is fetched from elsewhere.

CARGO    ?= cargo
# prometheus: its promtool checks the text tests/metrics.rs scrapes.
PACKAGES := protobuf-compiler docker-registry apache2-utils skopeo runc containerd \
            containernetworking-plugins busybox-static zstd iproute2 python3-pip \
            prometheus
BERTHD   := target/release/berthd

.PHONY: run test deps build check unit integration e2e-containerd bench clean install deb

## Install the Debian packages berth and its tests need, only those missing.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@missing=""; for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# tests/any_authority.rs: a gRPC core client with its defaults (Debian's
	@# python3-grpcio predates the percent-encoded unix authority, so PyPI's;
	@# Debian's own python3 refuses pip without --break-system-packages, which
	@# installs into /usr/local and leaves Debian's packages alone).
	@python3 -c 'import grpc' 2>/dev/null || python3 -m pip install -q grpcio 2>/dev/null || \
		python3 -m pip install -q --break-system-packages grpcio

## The pause binary runs alone in a rootfs of its own, so the static build replaces
## the dynamic one next to berthd, where berthd looks for it.
build: deps
	$(CARGO) build --release --workspace --bins
	cp "$$(shims/pause/build-static.sh)" target/release/berth-pause

## Run berthd in the foreground with the built-in defaults (or /etc/berth/config.toml).
run: build
	$(BERTHD)

check: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --workspace --lib --bins

integration: deps
	$(CARGO) test --workspace --test '*'

## Everything CI runs: berthd, the berth CLI, the shim and the pause binary.
## Without incremental state: on a clean checkout it is only disk (about 2 GiB);
## CARGO_INCREMENTAL=1 in the environment brings it back.
test: export CARGO_INCREMENTAL ?= 0
test: check
	shims/pause/build-static.sh
	$(CARGO) test --workspace --all-targets

## Not in CI: berth's shim under a real containerd 1.6 driven by crictl (needs the
## Debian package containerd and crictl on PATH; skips when they are missing).
e2e-containerd: build
	tests/containerd/run-crictl.sh

## Not in CI: the benchmark (tests/bench, binary berth-bench, also run as `berth
## bench`) with the release berthd, shim and static pause, side by side with
## containerd when installed; results in target/bench (results.json, results.txt,
## ratios.png). Takes 15-20 minutes; BENCH_ARGS adds options
## (`target/release/berth-bench --help`). The chart's font comes from fonts-dejavu-core.
bench: build
	@dpkg-query -W -f='$${Status}' fonts-dejavu-core 2>/dev/null | grep -q "install ok installed" || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-dejavu-core
	target/release/berth-bench --out target/bench $(BENCH_ARGS)

clean:
	$(CARGO) clean

## Not in CI: upstream critest against a berthd of its own, images built offline
## and served from a local registry (critest/run.sh; skips when critest is not in
## PATH). RUNTIME=containerd runs the same against Debian's containerd 1.6.
.PHONY: critest
critest:
	critest/run.sh

## Install what `make build` built, as packagers expect (DESTDIR, PREFIX):
## berthd, berth, the shim and the static pause binary side by side in BINDIR
## (berthd looks for the shim and berth-pause in its own directory), the systemd
## unit with ExecStart pointing there, and config/config.toml as
## /etc/berth/config.toml only when there is none (an operator's is kept).
## BUILD_DIR says where the four binaries are (make build leaves them in target/release).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
BUILD_DIR  ?= target/release
INSTALLED_BINS := berthd berth containerd-shim-berth-v2 berth-pause

install:
	@for b in $(INSTALLED_BINS); do \
		[ -x "$(BUILD_DIR)/$$b" ] || { echo "$(BUILD_DIR)/$$b is missing: run make build first" >&2; exit 1; }; \
	done
	install -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(SYSCONFDIR)/berth" "$(DESTDIR)$(UNITDIR)"
	for b in $(INSTALLED_BINS); do install -m 0755 "$(BUILD_DIR)/$$b" "$(DESTDIR)$(BINDIR)/$$b"; done
	sed 's|^ExecStart=/usr/local/bin/berthd|ExecStart=$(BINDIR)/berthd|' config/berthd.service > "$(DESTDIR)$(UNITDIR)/berthd.service.tmp"
	chmod 0644 "$(DESTDIR)$(UNITDIR)/berthd.service.tmp"
	mv "$(DESTDIR)$(UNITDIR)/berthd.service.tmp" "$(DESTDIR)$(UNITDIR)/berthd.service"
	@if [ -e "$(DESTDIR)$(SYSCONFDIR)/berth/config.toml" ]; then \
		echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/berth/config.toml (the new defaults are in config/config.toml)"; \
	else \
		install -m 0644 config/config.toml "$(DESTDIR)$(SYSCONFDIR)/berth/config.toml"; \
	fi

## A Debian package of the same files (target/debian/berth_*.deb), with cargo-deb
## (installed from crates.io when missing); `apt install ./target/debian/berth_*.deb`.
## Its layout is in Cargo.toml's [package.metadata.deb]. Not in CI's default run.
deb: build
	@$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	mkdir -p target/deb
	sed 's|^ExecStart=/usr/local/bin/berthd|ExecStart=/usr/bin/berthd|' config/berthd.service > target/deb/berthd.service
	$(CARGO) deb --no-build -p berth
