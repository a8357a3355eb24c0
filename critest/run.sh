#!/bin/bash
# Runs upstream critest (from PATH) against a berthd of its own, or against
# Debian's containerd 1.6 set up the same way, so the two can be compared.
#
# The runtime gets its own root, state dir and socket, a CNI config of its own
# (bridge critest0, 10.99.0.0/16) and the hosts.toml mirrors of
# critest/build-images.sh, which builds critest's images offline and serves
# them from a local docker-registry. critest skips the specs listed in
# critest/skip.txt. The JUnit report, critest's output and the daemon's log go
# to critest/results/<runtime>/; the summary ends the output:
# "N passed, N failed, N skipped" and each failure with its message.
# Daemons, pods, shims, mounts and the bridge this run made are removed on exit.
#
# usage: sudo critest/run.sh [--runtime berth|containerd] [--focus REGEX] [-- critest flags...]
#        sudo critest/run.sh --compare      side by side, from the last reports of both runtimes
# env:
#   RUNTIME          berth (default) or containerd, as --runtime
#   BERTHD           a berthd to test instead of building one (its shim and
#                    static berth-pause next to it, as `make build` leaves them)
#   CRITEST_FOCUS    as --focus: run only the specs matching this regex
#   CRITEST_RESULTS  results directory (default critest/results)
#   CRITEST_CACHE, CRITEST_REGISTRY_PORT   see build-images.sh
#   KEEP=1           keep the temporary root and state directories
# Exit status: 0 when every spec that ran passed (or critest is not installed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runtime=${RUNTIME:-berth}
focus=${CRITEST_FOCUS:-}
results_root=${CRITEST_RESULTS:-$here/results}
cache=${CRITEST_CACHE:-/var/tmp/berth-critest}
extra=()

while [ $# -gt 0 ]; do
	case $1 in
		--runtime) runtime=${2:?--runtime needs a value}; shift 2 ;;
		--runtime=*) runtime=${1#*=}; shift ;;
		--focus) focus=${2:?--focus needs a value}; shift 2 ;;
		--focus=*) focus=${1#*=}; shift ;;
		--compare)
			args=()
			for r in berth containerd; do
				[ -f "$results_root/$r/junit.xml" ] && args+=("$r=$results_root/$r/junit.xml")
			done
			[ ${#args[@]} -gt 0 ] || { echo "no reports under $results_root yet" >&2; exit 1; }
			exec python3 "$here/report.py" compare "${args[@]}"
			;;
		--) shift; extra=("$@"); break ;;
		-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		*) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $runtime in
	berth | containerd) ;;
	*) echo "--runtime: berth or containerd, not $runtime" >&2; exit 2 ;;
esac

if ! command -v critest >/dev/null; then
	echo "critest is not installed (not in PATH): conformance run skipped"
	exit 0
fi
[ "$(id -u)" = 0 ] || { echo "critest/run.sh needs root" >&2; exit 1; }
for tool in python3 ip; do
	command -v "$tool" >/dev/null || { echo "critest/run.sh needs $tool" >&2; exit 1; }
done
if [ "$runtime" = containerd ] && ! command -v containerd >/dev/null; then
	echo "installing containerd (Debian)"
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends containerd
fi

# One run at a time: they share the registry, the bridge and critest's fixed
# host ports (12000-12003).
mkdir -p "$cache"
exec 8>"$cache/run.lock"
flock -n 8 || { echo "another critest/run.sh is running (lock $cache/run.lock)" >&2; exit 1; }

results="$results_root/$runtime"
rm -rf "$results"
mkdir -p "$results"
work=$(mktemp -d /var/tmp/berth-critest-run.XXXXXX)
state=$(mktemp -d /run/berth-critest.XXXXXX)
bridge=critest0
daemon_pid=
registry_pid=
shm_before=
sock=

step() { echo "==> $*"; }
# Unattached 1 MiB SysV shared memory segments, by id (ipcmk -M 1048576's).
shm_segments() { awk 'NR > 1 && $4 == 1048576 && $7 == 0 {print $2}' /proc/sysvipc/shm; }

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	step "cleaning up"
	# Pods critest left behind (a failed spec skips its AfterEach cleanup):
	# removed through the runtime while it still runs, so CNI DEL happens.
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null && command -v crictl >/dev/null; then
		timeout 120 crictl --timeout 60s -r "unix://$sock" rmp -af >/dev/null 2>&1
	fi
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$daemon_pid" 2>/dev/null
		wait "$daemon_pid" 2>/dev/null
	fi
	# Containers still there (only if the daemon could not remove its pods):
	# their shims keep runc state in <state>/runc/<ns> for berth and in
	# /run/containerd/runc/<ns> for containerd; ours are those whose bundle is
	# in this run's directories.
	local root id pid
	for root in "$state"/runc/* /run/containerd/runc/*; do
		[ -d "$root" ] || continue
		for id in $(runc --root "$root" list -f json 2>/dev/null | python3 -c '
import json, sys
for c in json.load(sys.stdin) or []:
    if c["bundle"].startswith((sys.argv[1] + "/", sys.argv[2] + "/")):
        print(c["id"])' "$state" "$work"); do
			runc --root "$root" delete -f "$id" >/dev/null 2>&1
		done
	done
	# Shims carry this run's state or work directory in their arguments.
	for pid in $(pgrep -f -- "$state|$work"); do
		[ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null
	done
	sleep 0.5
	awk -v s="$state" -v w="$work" 'index($5, s) == 1 || index($5, w) == 1 {print $5}' /proc/self/mountinfo |
		sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
	ip link del "$bridge" 2>/dev/null
	# critest's HostIpc specs create 1 MiB SysV segments on the host with
	# ipcmk and never remove them: remove those that appeared during the run.
	if [ -n "$shm_before" ]; then
		local id
		for id in $(shm_segments); do
			grep -qx "$id" "$shm_before" || ipcrm -m "$id" 2>/dev/null
		done
	fi
	if [ -n "$registry_pid" ]; then
		kill "$registry_pid" 2>/dev/null
		rm -f "$cache/registry.pid"
	fi
	if [ -z "${KEEP:-}" ]; then
		rm -rf "$state" "$work"
	else
		echo "kept $work and $state"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images and registry ---------------------------------------------------
registry_was_running=
if [ -f "$cache/registry.pid" ] && kill -0 "$(cat "$cache/registry.pid")" 2>/dev/null; then
	registry_was_running=1
fi
step "images and the local registry (critest/build-images.sh)"
hosts=$("$here/build-images.sh" --keep-running | tail -1)
[ -n "$registry_was_running" ] || registry_pid=$(cat "$cache/registry.pid")

# --- CNI: the same network for both runtimes --------------------------------
mkdir -p "$work/cni"
cat >"$work/cni/10-critest.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "berth-critest",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.99.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$work/cni-ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
cni_bin=/usr/lib/cni
[ -x "$cni_bin/bridge" ] || cni_bin=/opt/cni/bin

for p in 12000 12001 12002 12003; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		echo "warning: host port $p is in use; critest's port mapping and port-forward specs need it free" >&2
	fi
done

# --- the runtime ------------------------------------------------------------
wait_for_socket() {
	local i
	for i in $(seq 300); do
		[ -S "$sock" ] && break
		kill -0 "$daemon_pid" 2>/dev/null || { echo "$runtime exited; its log:" >&2; tail -30 "$1" >&2; exit 1; }
		[ "$i" = 300 ] && { echo "$runtime did not create $sock in 30 s" >&2; exit 1; }
		sleep 0.1
	done
}

if [ "$runtime" = berth ]; then
	pause_binary=
	if [ -z "${BERTHD:-}" ]; then
		step "building berthd, the berth shim and the static pause (release)"
		command -v cargo >/dev/null || { echo "cargo not found: install Rust, or give BERTHD" >&2; exit 1; }
		(cd "$repo" && cargo build --release -p berth --bins -p berth-shim)
		pause_binary="$repo/$(cd "$repo" && shims/pause/build-static.sh | tail -1)"
		BERTHD="$repo/target/release/berthd"
	fi
	[ -x "$BERTHD" ] || { echo "BERTHD=$BERTHD is not an executable" >&2; exit 1; }
	sock="$state/berth.sock"
	{
		echo "root = \"$work/root\""
		echo "state = \"$state\""
		echo "socket = \"$sock\""
		echo "log_level = \"${BERTH_LOG_LEVEL:-info}\""
		[ -z "$pause_binary" ] || echo "pause_binary = \"$pause_binary\""
		# critest writes its Localhost seccomp profiles into a temporary directory.
		echo "seccomp_profile_roots = [\"${TMPDIR:-/tmp}\"]"
		echo
		echo "[registry]"
		echo "config_path = \"$hosts\""
		echo
		echo "[cni]"
		echo "conf_dir = \"$work/cni\""
		echo "bin_dirs = [\"$cni_bin\"]"
	} >"$work/berth.toml"
	cp "$work/berth.toml" "$results/berth.toml"
	step "berthd on $sock"
	"$BERTHD" --config "$work/berth.toml" >"$results/berthd.log" 2>&1 &
	daemon_pid=$!
	wait_for_socket "$results/berthd.log"
	version="berthd $("$BERTHD" --version 2>/dev/null | awk '{print $2}')"
	# Built here: say from which tree (uncommitted changes included).
	[ -z "$pause_binary" ] || version+=" ($(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown))"
else
	sock="$state/containerd.sock"
	cat >"$work/containerd.toml" <<TOML
version = 2
root = "$work/root"
state = "$state/containerd"

[grpc]
  address = "$sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$work/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$hosts"
TOML
	cp "$work/containerd.toml" "$results/containerd.toml"
	step "containerd on $sock"
	containerd --config "$work/containerd.toml" >"$results/containerd.log" 2>&1 &
	daemon_pid=$!
	wait_for_socket "$results/containerd.log"
	version=$(containerd --version | awk '{print "containerd " $3}')
fi

# --- critest ----------------------------------------------------------------
skip_args=()
while IFS= read -r line; do
	line=${line%%#*}
	line=$(echo "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
	[ -z "$line" ] || skip_args+=("--ginkgo.skip=$line")
done <"$here/skip.txt"
focus_args=()
[ -z "$focus" ] || focus_args=("--ginkgo.focus=$focus")

step "critest $(critest --version 2>/dev/null | awk '/critest version/ {print $3}') against $version (${#skip_args[@]} skip patterns${focus:+, focus $focus})"
shm_before="$work/shm-before"
shm_segments >"$shm_before"
set +e
(
	cd "$work" &&
		critest \
			--runtime-endpoint "unix://$sock" \
			--image-endpoint "unix://$sock" \
			--report-dir "$results" \
			--ginkgo.no-color \
			--ginkgo.v \
			--ginkgo.timeout 3h \
			--ginkgo.junit-report "$results/junit.xml" \
			"${skip_args[@]}" "${focus_args[@]}" "${extra[@]}"
) 2>&1 | tee "$results/critest.log" | awk '
	# One line a spec on the terminal; everything is in critest.log.
	/^-+$/ { getname = 1; next }
	getname { name = $0; getname = 0; next }
	/^• \[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED)\]/ { print "FAIL  " name; fflush(); next }
	/^• \[[0-9.]+ seconds\]/ { print "ok    " name; fflush(); next }
	/^S \[SKIPPED\]/ { print "skip  " name; fflush(); next }
	/^(Ran |SUCCESS|FAIL!)/ { print; fflush() }
'

set -e

if [ ! -f "$results/junit.xml" ]; then
	echo "critest wrote no report; its output is in $results/critest.log" >&2
	tail -30 "$results/critest.log" >&2
	exit 1
fi
echo
echo "critest against $version; reports in $results"
set +e
python3 "$here/report.py" summary "$results/junit.xml" | tee "$results/summary.txt"
status=${PIPESTATUS[0]}
set -e
exit "$status"
