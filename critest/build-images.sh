#!/bin/bash
# Builds, offline, the images critest 1.32 pulls, pushes them into a local
# docker-registry on a loopback port under their upstream repository paths,
# and writes containerd-style hosts.toml mirrors that send registry.k8s.io,
# gcr.io and docker.io to that registry. critest then runs with its own image
# names (its --registry-prefix would rename them and break its RepoTags checks).
#
# Everything comes from Debian packages (busybox, nginx, procps, util-linux;
# `apt-get download`, nothing installed for the image contents) and from gcc on
# this machine; see critest/README.md for each image, what it stands in for and
# what cannot be reproduced.
#
# Idempotent: the OCI layout is rebuilt only when this script or its inputs
# change, and the registry's storage persists under the cache directory.
#
# usage: sudo critest/build-images.sh [--keep-running]
#   --keep-running  leave the registry serving (its pid in $CRITEST_CACHE/registry.pid);
#                   without it, a registry this script started is stopped again.
# env:
#   CRITEST_CACHE          cache directory (default /var/tmp/berth-critest)
#   CRITEST_REGISTRY_PORT  loopback port of the registry (default 5087)
# Prints, last, the hosts.toml directory to give as [registry] config_path.
set -euo pipefail

keep_running=
case "${1:-}" in
	--keep-running) keep_running=1 ;;
	"") ;;
	*) echo "usage: $0 [--keep-running]" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "build-images.sh: needs root (image contents are owned by root, the nonewprivs helper is setuid)" >&2; exit 1; }

cache=${CRITEST_CACHE:-/var/tmp/berth-critest}
port=${CRITEST_REGISTRY_PORT:-5087}
registry="127.0.0.1:$port"
mkdir -p "$cache"
exec 9>"$cache/build.lock"
flock 9

log() { echo "build-images: $*" >&2; }

# ---------------------------------------------------------------------------
# Tools, installed from Debian when missing.
need=()
for pair in docker-registry:docker-registry skopeo:skopeo umoci:umoci gcc:gcc \
	pgrep:procps ipcs:util-linux apt-get:apt; do
	command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	apt-get update -q >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

# The image contents: Debian's dynamic busybox (busybox-static runs applets
# inside its own shell, so a masked /bin/ls would still run) and nginx. Only
# downloaded and unpacked here, never installed: busybox conflicts with the
# busybox-static berth's tests use.
debs="$cache/debs"
mkdir -p "$debs"
for pkg in busybox nginx; do
	if ! compgen -G "$debs/${pkg}_*.deb" >/dev/null; then
		log "downloading the Debian package $pkg"
		# apt's _apt user cannot write to a root-owned directory; download as root.
		(cd "$debs" && apt-get download -q "$pkg" 2>&1 | grep -v 'couldn.t be accessed by user' >&2) || true
		compgen -G "$debs/${pkg}_*.deb" >/dev/null || { log "cannot download $pkg (apt-get download $pkg)"; exit 1; }
	fi
done

# ---------------------------------------------------------------------------
# The registry, started unless ours already serves on $registry.
registry_up() {
	local status
	status=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /v2/ HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3) 2>/dev/null) || return 1
	[ "$status" = "HTTP/1.1 200" ] || [ "$status" = "HTTP/1.0 200" ]
}
pidfile="$cache/registry.pid"
started_registry=
# A registry this script started stays up only when asked to and all went well.
stop_registry() {
	local status=$?
	if [ -n "$started_registry" ] && { [ -z "$keep_running" ] || [ "$status" != 0 ]; }; then
		kill "$started_registry" 2>/dev/null || true
		wait "$started_registry" 2>/dev/null || true
		rm -f "$pidfile"
	fi
}
trap stop_registry EXIT

ours_running() {
	[ -f "$pidfile" ] || return 1
	local pid
	pid=$(cat "$pidfile")
	[ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "docker-registry serve $cache/registry.yml"
}
if ours_running && registry_up; then
	log "registry already serving on $registry (pid $(cat "$pidfile"))"
else
	if registry_up || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "127.0.0.1:$port is taken by another process; set CRITEST_REGISTRY_PORT"
		exit 1
	fi
	cat >"$cache/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $cache/registry
  delete:
    enabled: true
http:
  addr: $registry
log:
  level: error
  accesslog:
    disabled: true
YML
	# setsid: the registry must not get the terminal's signals meant for a
	# critest run, and a caller with --keep-running owns it by pid.
	# Not with the build lock (fd 9): a registry kept running would hold it, and
	# the next run would wait on it for ever.
	setsid docker-registry serve "$cache/registry.yml" >>"$cache/registry.log" 2>&1 </dev/null 9>&- &
	started_registry=$!
	echo "$started_registry" >"$pidfile"
	for _ in $(seq 100); do registry_up && break; sleep 0.1; done
	registry_up || { log "docker-registry did not come up; see $cache/registry.log"; exit 1; }
	log "registry serving on $registry (pid $started_registry)"
fi

# ---------------------------------------------------------------------------
# The images, as (local tag in the OCI layout -> repository:tag in the
# registry). registry.k8s.io/<path> and gcr.io/<path> both map to <path> here.
E2E=e2e-test-images
CRI=k8s-staging-cri-tools
images=(
	"busybox $E2E/busybox:1.29-2"
	"nginx $E2E/nginx:1.14-2"
	"httpd $E2E/httpd:2.4.39-4"
	"nonewprivs $E2E/nonewprivs:1.3"
	"pause pause:3.6"
	"hostnet-nginx $CRI/hostnet-nginx-amd64:latest"
	"test-image-user-uid $CRI/test-image-user-uid:latest"
	"test-image-user-username $CRI/test-image-user-username:latest"
	"test-image-user-uid-group $CRI/test-image-user-uid-group:latest"
	"test-image-user-username-group $CRI/test-image-user-username-group:latest"
	"test-image-predefined-group $CRI/test-image-predefined-group:latest"
	"test-image-latest $CRI/test-image-latest:latest"
	"test-image-tag-test $CRI/test-image-tag:test"
	"test-image-tag-all $CRI/test-image-tag:all"
	"test-image-1 $CRI/test-image-1:latest"
	"test-image-2 $CRI/test-image-2:latest"
	"test-image-3 $CRI/test-image-3:latest"
	"test-image-tags $CRI/test-image-tags:1"
	"test-image-tags $CRI/test-image-tags:2"
	"test-image-tags $CRI/test-image-tags:3"
)
unreproducible=(
	"gcr.io/$CRI/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf|pinned by manifest digest: the digest hashes upstream's manifest bytes, which name upstream's layer and config blobs; no image built here can have it, and docker-registry refuses a manifest whose content does not match the digest it is pushed under"
)

oci="$cache/oci"
stamp=$( {
	sha256sum "$0"
	sha256sum "$debs"/*.deb
	sha256sum "$(command -v pgrep)" "$(command -v ipcs)"
	gcc --version | head -1
} | sha256sum | cut -d' ' -f1)

build_images() {
	local work="$cache/build"
	rm -rf "$oci" "$work"
	mkdir -p "$work"
	dpkg-deb -x "$(compgen -G "$debs/busybox_*.deb" | head -1)" "$work/debs"
	dpkg-deb -x "$(compgen -G "$debs/nginx_*.deb" | head -1)" "$work/debs"

	# copy_with_libs ROOTFS FILE DEST: FILE at DEST in ROOTFS with the shared
	# libraries and loader it needs, from this host, at their paths here.
	copy_with_libs() {
		local rootfs=$1 file=$2 dest=$3 lib
		install -D -m 0755 "$file" "$rootfs$dest"
		while read -r lib; do
			[ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
		done < <(ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
	}

	# --- base: what registry.k8s.io/e2e-test-images/busybox:1.29-2 holds.
	local base="$work/base"
	mkdir -p "$base"/{bin,etc,home,root,tmp,usr/bin,usr/sbin,usr/local/bin,var/spool/mail,var/www,dev,proc,sys}
	chmod 0700 "$base/root"
	chmod 1777 "$base/tmp"
	copy_with_libs "$base" "$work/debs/bin/busybox" /bin/busybox
	# Hard links, not symlinks: masking /bin/ls with a bind mount of /dev/null
	# must hide ls, not the busybox binary a symlink resolves to.
	local applet
	for applet in $("$base/bin/busybox" --list); do
		[ "$applet" = busybox ] || [ -e "$base/bin/$applet" ] || ln "$base/bin/busybox" "$base/bin/$applet"
	done
	# critest runs `pgrep sleep` and `ipcs -m` in containers; Debian's busybox
	# has neither applet.
	copy_with_libs "$base" "$(command -v pgrep)" /usr/bin/pgrep
	copy_with_libs "$base" "$(command -v ipcs)" /usr/bin/ipcs
	cat >"$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
	cat >"$base/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
	local path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

	umoci init --layout "$oci"
	umoci new --image "$oci:busybox"
	umoci unpack --image "$oci:busybox" "$work/bundle"
	cp -a "$base/." "$work/bundle/rootfs/"
	umoci repack --image "$oci:busybox" "$work/bundle"
	rm -rf "$work/bundle"
	umoci config --image "$oci:busybox" --config.env "$path_env" --config.cmd sh

	# derive NAME: unpack busybox into $work/$NAME/rootfs for the caller to fill.
	derive() { umoci unpack --image "$oci:busybox" "$work/$1"; }
	# commit NAME [umoci config flags...]: repack it as tag NAME, configured.
	commit() {
		local name=$1
		shift
		umoci repack --image "$oci:$name" "$work/$name"
		rm -rf "${work:?}/${name:?}"
		[ $# -eq 0 ] || umoci config --image "$oci:$name" "$@"
	}

	# --- nginx:1.14-2 and hostnet-nginx: Debian's nginx, master process as
	# PID 1 ("nginx: master process" in /proc/1/cmdline), pid file at
	# /var/run/nginx.pid, GET / -> 200 on port 80 (12003 for hostnet-nginx).
	local name listen r
	for name in nginx hostnet-nginx; do
		listen=80
		[ "$name" = nginx ] || listen=12003
		derive "$name"
		r="$work/$name/rootfs"
		copy_with_libs "$r" "$work/debs/usr/sbin/nginx" /usr/sbin/nginx
		mkdir -p "$r"/etc/nginx "$r"/usr/share/nginx/html "$r"/var/lib/nginx "$r"/var/log/nginx "$r"/var/run
		echo 'nginx:x:101:101:nginx:/nonexistent:/bin/false' >>"$r/etc/passwd"
		echo 'nginx:x:101:' >>"$r/etc/group"
		cat >"$r/etc/nginx/nginx.conf" <<EOF
user nginx;
worker_processes 1;
error_log /dev/stderr notice;
pid /var/run/nginx.pid;
events { worker_connections 1024; }
http {
    types { text/html html htm; text/plain txt; }
    default_type application/octet-stream;
    access_log /dev/stdout;
    server {
        listen $listen;
        server_name localhost;
        location / {
            root /usr/share/nginx/html;
            index index.html;
        }
    }
}
EOF
		echo '<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>' \
			>"$r/usr/share/nginx/html/index.html"
		commit "$name" --config.exposedports "$listen/tcp" \
			--config.cmd nginx --config.cmd=-g --config.cmd "daemon off;"
	done

	# --- httpd:2.4.39-4: busybox httpd on port 80; its first log line names
	# httpd, as Apache's does (critest looks for "httpd" in the log).
	derive httpd
	r="$work/httpd/rootfs"
	mkdir -p "$r/usr/local/apache2/htdocs"
	echo '<html><body><h1>It works!</h1></body></html>' >"$r/usr/local/apache2/htdocs/index.html"
	cat >"$r/usr/local/bin/httpd-foreground" <<'EOF'
#!/bin/sh
echo "httpd: serving /usr/local/apache2/htdocs on port 80 (busybox httpd)" >&2
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
EOF
	chmod 0755 "$r/usr/local/bin/httpd-foreground"
	commit httpd --config.exposedports 80/tcp --config.cmd httpd-foreground

	# --- nonewprivs:1.3: a setuid-root helper printing its effective uid, run
	# as uid 1000 ("Effective uid: 0" unless no_new_privs stops the setuid).
	derive nonewprivs
	r="$work/nonewprivs/rootfs"
	cat >"$work/nnp.c" <<'EOF'
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
EOF
	gcc -static -Os -s -o "$r/usr/local/bin/nnp" "$work/nnp.c"
	chown 0:0 "$r/usr/local/bin/nnp"
	chmod 4755 "$r/usr/local/bin/nnp"
	commit nonewprivs --config.user 1000 --config.entrypoint /usr/local/bin/nnp

	# --- pause:3.6, the sandbox image containerd is given: a static binary
	# that waits for SIGTERM/SIGINT and reaps children. No child process (a
	# `sleep` would show in critest's `pgrep sleep` in shared PID namespaces).
	mkdir -p "$work/pause/rootfs"
	cat >"$work/pause.c" <<'EOF'
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = reap;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
	for (;;)
		pause();
}
EOF
	gcc -static -Os -s -o "$work/pause/rootfs/pause" "$work/pause.c"
	umoci new --image "$oci:pause"
	umoci unpack --image "$oci:pause" "$work/pause-bundle"
	cp -a "$work/pause/rootfs/." "$work/pause-bundle/rootfs/"
	umoci repack --image "$oci:pause" "$work/pause-bundle"
	rm -rf "$work/pause-bundle"
	umoci config --image "$oci:pause" --config.entrypoint /pause --config.user 65535:65535

	# --- test-image-user-*: busybox with USER set (images/image-user upstream).
	umoci config --image "$oci:busybox" --tag test-image-user-uid --config.user 1002
	umoci config --image "$oci:busybox" --tag test-image-user-username --config.user www-data
	umoci config --image "$oci:busybox" --tag test-image-user-uid-group --config.user 1003:1004
	umoci config --image "$oci:busybox" --tag test-image-user-username-group --config.user www-data:1004

	# --- test-image-predefined-group: default-user (1000) also in
	# group-defined-in-image (50000), USER 1000.
	derive test-image-predefined-group
	r="$work/test-image-predefined-group/rootfs"
	echo 'default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh' >>"$r/etc/passwd"
	printf '%s\n' 'default-user:x:1000:' 'group-defined-in-image:x:50000:default-user' >>"$r/etc/group"
	mkdir -p "$r/home/default-user"
	chown 1000:1000 "$r/home/default-user"
	commit test-image-predefined-group --config.user 1000

	# --- test-image-*: busybox plus one file named after the image, so each
	# is a different image (images/image-test upstream); test-image-tags is one
	# image under three tags.
	local file
	for name in test-image-1 test-image-2 test-image-3 test-image-latest test-image-tag-test test-image-tag-all test-image-tags; do
		case $name in
			test-image-tag-*) file=${name#test-image-tag-} ;;
			test-image-tags) file=same-image ;;
			*) file=$name ;;
		esac
		: >"$work/$file"
		umoci insert --image "$oci:busybox" --tag "$name" "$work/$file" "/$file"
	done

	umoci gc --layout "$oci"
	rm -rf "$work"
	echo "$stamp" >"$oci/berth-stamp"
}

if [ "$(cat "$oci/berth-stamp" 2>/dev/null)" = "$stamp" ]; then
	log "images up to date in $oci"
else
	log "building images into $oci"
	build_images
fi

# ---------------------------------------------------------------------------
# Push (skopeo skips blobs the registry has).
for entry in "${images[@]}"; do
	read -r tag repo <<<"$entry"
	skopeo copy -q --dest-tls-verify=false "oci:$oci:$tag" "docker://$registry/$repo" >&2
done
log "pushed ${#images[@]} image tags to $registry"

# ---------------------------------------------------------------------------
# hosts.toml: each upstream registry tries the local one first.
hosts="$cache/certs.d"
rm -rf "$hosts"
for upstream in registry.k8s.io:https://registry.k8s.io gcr.io:https://gcr.io docker.io:https://registry-1.docker.io; do
	mkdir -p "$hosts/${upstream%%:*}"
	cat >"$hosts/${upstream%%:*}/hosts.toml" <<TOML
# Written by critest/build-images.sh: critest's images come from the local registry.
server = "${upstream#*:}"

[host."http://$registry"]
  capabilities = ["pull", "resolve"]
TOML
done

echo "build-images: images served by $registry as:" >&2
for entry in "${images[@]}"; do
	read -r tag repo <<<"$entry"
	case $repo in
		"$E2E"/* | pause:*) echo "  registry.k8s.io/$repo" >&2 ;;
		*) echo "  gcr.io/$repo" >&2 ;;
	esac
done
echo "build-images: not reproducible offline (their specs are in critest/skip.txt):" >&2
for entry in "${unreproducible[@]}"; do
	echo "  ${entry%%|*}" >&2
	echo "    ${entry#*|}" >&2
done
[ -z "$started_registry" ] || [ -z "$keep_running" ] || log "registry left running, pid $started_registry ($pidfile)"
echo "$hosts"
