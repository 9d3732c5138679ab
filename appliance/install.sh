#!/usr/bin/env bash
# Install (or reinstall, or upgrade) snowgate on a CI runner.
#
#   sudo appliance/install.sh                    # from a checkout, after `make build`
#   sudo /usr/share/snowgate/install.sh          # again, from the package (what the
#                                                # .deb runs after unpacking)
#
# It installs the binary, the systemd units and drop-ins, the gateway's user,
# the default configuration (once: an existing one is never overwritten), the
# gateway CA (once) with its trust for Go, Node and Python clients in the
# runners' environment, starts the gateway and runs `snowgate doctor`.
# Running it again is harmless: every step checks before it changes.
#
# Options:
#   --root DIR         install below DIR instead of / (a scratch root: no
#                      systemd is driven, no system trust store is touched)
#   --cgroup-root DIR  the cgroup v2 mount (default: found in mountinfo);
#                      agents.slice lives below it
#   --bin FILE         the snowgate binary to install (default: bin/snowgate
#                      of the checkout)
#   --package          the files are already in place (the .deb): only
#                      configure (implied when run from /usr/share/snowgate)
#   --runner-dir DIR   a GitHub Actions runner directory whose .env gets the
#                      CA environment (repeatable; the drop-ins cover runners
#                      started by systemd)
#   --pin-dir DIR      the redirect's bpffs directory, for doctor
#   --start            start (or hand over to the new binary) even on a first
#                      install; by default a first install stops at the
#                      configuration, which needs your accounts and rules
#   --no-start         install and enable, but do not start the gateway
#   --no-doctor        skip the final doctor run
#   --strict           exit non-zero when doctor finds a problem
set -euo pipefail

ROOT=/
CGROUP_ROOT=
BIN=
PACKAGE=0
START=auto
CONFIG_NEW=0
DOCTOR=1
STRICT=0
PIN_DIR=
RUNNER_DIRS=()

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# From a checkout the sources are the repository; from the package they are
# /usr/share/snowgate.
CHECKOUT=0
if [[ -f $HERE/../systemd/snowgate.service ]]; then
	CHECKOUT=1
	SRC=$(cd "$HERE/.." && pwd)
	SRC_SYSTEMD=$SRC/systemd
	SRC_APPLIANCE=$SRC/appliance
fi

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'install.sh: %s\n' "$*" >&2
	exit 1
}

while [[ $# -gt 0 ]]; do
	case $1 in
	--root) ROOT=${2:?--root needs a directory}; shift 2 ;;
	--cgroup-root) CGROUP_ROOT=${2:?--cgroup-root needs a directory}; shift 2 ;;
	--bin) BIN=${2:?--bin needs a file}; shift 2 ;;
	--package) PACKAGE=1; shift ;;
	--runner-dir) RUNNER_DIRS+=("${2:?--runner-dir needs a directory}"); shift 2 ;;
	--pin-dir) PIN_DIR=${2:?--pin-dir needs a directory}; shift 2 ;;
	--start) START=1; shift ;;
	--no-start) START=0; shift ;;
	--no-doctor) DOCTOR=0; shift ;;
	--strict) STRICT=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

[[ $(id -u) -eq 0 ]] || die "run as root (sudo)"
# Run from where the package put it, the files are in place already.
if [[ $CHECKOUT -eq 0 ]]; then
	[[ -z $BIN ]] || die "--bin works from a checkout (appliance/install.sh)"
	PACKAGE=1
fi
[[ -d $ROOT ]] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
# r PATH: PATH below the install root.
r() { if [[ $ROOT == / ]]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

# systemd is driven only on the live system with systemd as init.
SYSTEMD=0
if [[ $ROOT == / && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
	SYSTEMD=1
fi

find_cgroup2() {
	awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo
}
if [[ -z $CGROUP_ROOT ]]; then
	CGROUP_ROOT=$(find_cgroup2)
	[[ -n $CGROUP_ROOT ]] || die "no cgroup v2 hierarchy mounted (boot with systemd.unified_cgroup_hierarchy=1, or give --cgroup-root)"
fi
AGENTS_CGROUP=$CGROUP_ROOT/agents.slice

# put SRC DST MODE: install a file when it differs; says what it did.
put() {
	local src=$1 dst=$2 mode=$3
	[[ -f $src ]] || die "missing $src"
	if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
		chmod "$mode" "$dst"
		return 0
	fi
	local verb=installed
	[[ -e $dst ]] && verb=updated
	mkdir -p "$(dirname "$dst")"
	# Atomic replace: a running daemon's binary is never half-written.
	install -m "$mode" "$src" "$dst.snowgate-new"
	mv -f "$dst.snowgate-new" "$dst"
	say "$verb ${dst#"${ROOT%/}"}"
}

# 1. Files (the package has put them in place already).
if [[ $PACKAGE -eq 0 ]]; then
	if [[ -z $BIN ]]; then
		BIN=$SRC/bin/snowgate
		[[ -x $BIN ]] || die "no $BIN: run 'make build' first, or give --bin"
	fi
	[[ -x $BIN ]] || die "--bin $BIN is not an executable"
	put "$BIN" "$(r /usr/bin/snowgate)" 0755
	for u in snowgate.service snowgate.socket agents.slice; do
		put "$SRC_SYSTEMD/$u" "$(r /usr/lib/systemd/system/$u)" 0644
	done
	put "$SRC_SYSTEMD/sysusers.d/snowgate.conf" "$(r /usr/lib/sysusers.d/snowgate.conf)" 0644
	put "$SRC_SYSTEMD/tmpfiles.d/snowgate.conf" "$(r /usr/lib/tmpfiles.d/snowgate.conf)" 0644
	for f in "$SRC_SYSTEMD"/drop-ins/*.conf; do
		put "$f" "$(r /usr/share/snowgate/systemd/drop-ins/"$(basename "$f")")" 0644
	done
	put "$SRC_APPLIANCE/snowgate.yaml" "$(r /usr/share/snowgate/snowgate.yaml)" 0644
	put "$SRC_APPLIANCE/install.sh" "$(r /usr/share/snowgate/install.sh)" 0755
	put "$SRC_APPLIANCE/uninstall.sh" "$(r /usr/share/snowgate/uninstall.sh)" 0755
	put "$SRC_APPLIANCE/grafana-dashboard.json" "$(r /usr/share/snowgate/grafana-dashboard.json)" 0644
	if [[ -f $SRC/README.md ]]; then
		put "$SRC/README.md" "$(r /usr/share/doc/snowgate/README.md)" 0644
	fi
fi
SG=$(r /usr/bin/snowgate)
[[ -x $SG ]] || die "no $SG"
say "snowgate $("$SG" --version 2>/dev/null | awk '{print $NF}')"

# 2. The gateway's user.
if ! grep -q '^snowgate:' "$(r /etc/passwd)" 2>/dev/null; then
	mkdir -p "$(r /etc)"
	if command -v systemd-sysusers >/dev/null; then
		systemd-sysusers --root="$ROOT" "$(r /usr/lib/sysusers.d/snowgate.conf)"
	elif [[ $ROOT == / ]]; then
		useradd --system --user-group --home-dir /var/lib/snowgate --no-create-home --shell /usr/sbin/nologin snowgate
	else
		die "cannot create the snowgate user below $ROOT without systemd-sysusers"
	fi
	say "created user snowgate"
fi
SG_UID=$(awk -F: '$1 == "snowgate" { print $3 }' "$(r /etc/passwd)")
SG_GID=$(awk -F: '$1 == "snowgate" { print $4 }' "$(r /etc/passwd)")
[[ -n $SG_UID && -n $SG_GID ]] || die "user snowgate not found in $(r /etc/passwd)"

# 3. Directories: configuration (root), credentials (root only), state,
# recordings and the audit trail (the gateway only).
install -d -m 0755 -o 0 -g 0 "$(r /etc/snowgate)"
install -d -m 0700 -o 0 -g 0 "$(r /etc/credstore/snowgate)"
install -d -m 0700 -o "$SG_UID" -g "$SG_GID" "$(r /var/lib/snowgate)"
install -d -m 0750 -o "$SG_UID" -g "$SG_GID" "$(r /var/log/snowgate)"

# 4. The configuration: written once, with this machine's cgroup path;
# afterwards the operator's. Upgrades leave it alone (the new default is in
# /usr/share/snowgate/snowgate.yaml).
CONFIG=$(r /etc/snowgate/snowgate.yaml)
if [[ ! -f $CONFIG ]]; then
	awk -v cg="$AGENTS_CGROUP" '
		!done && /^  cgroup: / { print "  cgroup: " cg; done = 1; next }
		{ print }' "$(r /usr/share/snowgate/snowgate.yaml)" >"$CONFIG.snowgate-new"
	chown 0:"$SG_GID" "$CONFIG.snowgate-new"
	chmod 0640 "$CONFIG.snowgate-new"
	mv -f "$CONFIG.snowgate-new" "$CONFIG"
	CONFIG_NEW=1
	say "installed /etc/snowgate/snowgate.yaml (intercept.cgroup: $AGENTS_CGROUP); add your accounts, issuers and rules"
else
	say "kept /etc/snowgate/snowgate.yaml"
fi

# 5. The agents' cgroup. systemd creates agents.slice when something starts
# in it; without systemd (or below a scratch root) it is made here.
if [[ $SYSTEMD -eq 0 ]]; then
	mkdir -p "$AGENTS_CGROUP"
fi

# 6. The gateway CA: created once, kept across reinstalls and upgrades (the
# runners trust it).
CA_CERT=$(r /etc/snowgate/ca.pem)
CA_KEY=$(r /etc/snowgate/ca.key)
if [[ ! -f $CA_CERT ]]; then
	"$SG" ca init --config "$CONFIG" --cert "$CA_CERT" --key "$CA_KEY"
fi
[[ -f $CA_KEY ]] || die "$CA_CERT exists without its key $CA_KEY"
chown "$SG_UID:$SG_GID" "$CA_KEY"
chmod 0600 "$CA_KEY"
chown 0:0 "$CA_CERT"
chmod 0644 "$CA_CERT"

# 7. Trust: the system store (curl, JDBC via the system keystore, tools that
# read it) and a bundle for clients that take a file: Go and Python read
# SSL_CERT_FILE / REQUESTS_CA_BUNDLE (the system roots plus the gateway CA,
# so their other TLS keeps working); Node adds NODE_EXTRA_CA_CERTS to its
# own roots.
if [[ -d $(r /usr/local/share/ca-certificates) || -f $(r /etc/ca-certificates.conf) ]]; then
	put "$CA_CERT" "$(r /usr/local/share/ca-certificates/snowgate.crt)" 0644
	if [[ $ROOT == / ]] && command -v update-ca-certificates >/dev/null; then
		update-ca-certificates >/dev/null
	fi
elif [[ -d $(r /etc/pki/ca-trust/source/anchors) ]]; then
	put "$CA_CERT" "$(r /etc/pki/ca-trust/source/anchors/snowgate.pem)" 0644
	if [[ $ROOT == / ]] && command -v update-ca-trust >/dev/null; then
		update-ca-trust extract
	fi
else
	warn "no system trust store found below $ROOT: only the runner environment trusts the CA"
fi
SYSTEM_BUNDLE=
for b in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
	if [[ -f $(r "$b") ]]; then
		SYSTEM_BUNDLE=$(r "$b")
		break
	fi
done
BUNDLE=$(r /etc/snowgate/ca-bundle.pem)
{
	if [[ -n $SYSTEM_BUNDLE ]]; then
		cat "$SYSTEM_BUNDLE"
	fi
	# Unless the store holds the CA already (update-ca-certificates ran).
	if [[ -z $SYSTEM_BUNDLE ]] || ! grep -qF "$(sed -n 2p "$CA_CERT")" "$SYSTEM_BUNDLE"; then
		cat "$CA_CERT"
	fi
} >"$BUNDLE.snowgate-gen"
put "$BUNDLE.snowgate-gen" "$BUNDLE" 0644
rm -f "$BUNDLE.snowgate-gen"

ENV_FILE=$(r /etc/snowgate/runner.env)
cat >"$ENV_FILE.snowgate-gen" <<EOF
# The environment CI jobs need to trust the snowgate CA (written by
# install.sh; the runners' drop-ins read it with EnvironmentFile=).
SSL_CERT_FILE=/etc/snowgate/ca-bundle.pem
REQUESTS_CA_BUNDLE=/etc/snowgate/ca-bundle.pem
NODE_EXTRA_CA_CERTS=/etc/snowgate/ca.pem
EOF
put "$ENV_FILE.snowgate-gen" "$ENV_FILE" 0644
rm -f "$ENV_FILE.snowgate-gen"

# GitHub runners started by hand (./run.sh) read <dir>/.env.
for dir in "${RUNNER_DIRS[@]}"; do
	[[ -d $dir ]] || die "--runner-dir $dir: no such directory"
	envf=$dir/.env
	touch "$envf"
	awk '/^# BEGIN snowgate$/ { skip = 1 } !skip { print } /^# END snowgate$/ { skip = 0 }' "$envf" >"$envf.snowgate-new"
	{
		echo "# BEGIN snowgate"
		grep -v '^#' "$ENV_FILE"
		echo "# END snowgate"
	} >>"$envf.snowgate-new"
	if cmp -s "$envf" "$envf.snowgate-new"; then
		rm -f "$envf.snowgate-new"
	else
		chmod --reference="$envf" "$envf.snowgate-new"
		chown --reference="$envf" "$envf.snowgate-new"
		mv -f "$envf.snowgate-new" "$envf"
		say "wrote the CA environment into $envf"
	fi
done

# 8. Drop-ins: the runners' services into agents.slice, dockerd's
# containers below it.
DROPINS=$(r /usr/share/snowgate/systemd/drop-ins)
units=()
for d in /etc/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
	for f in "$(r "$d")"/actions.runner.*.service "$(r "$d")"/gitlab-runner.service "$(r "$d")"/docker.service; do
		[[ -f $f ]] && units+=("$(basename "$f")")
	done
done
declare -A seen=()
MOVED=()
for u in "${units[@]}"; do
	[[ -n ${seen[$u]:-} ]] && continue
	seen[$u]=1
	case $u in
	actions.runner.*) src=$DROPINS/github-runner.conf ;;
	gitlab-runner.service) src=$DROPINS/gitlab-runner.conf ;;
	docker.service) src=$DROPINS/docker.conf ;;
	esac
	dst=$(r "/etc/systemd/system/$u.d/snowgate.conf")
	if ! cmp -s "$src" "$dst" 2>/dev/null; then
		put "$src" "$dst" 0644
		MOVED+=("$u")
	fi
done

# 9. systemd: reload, create the user's runtime pieces, enable, start or
# hand over to the new binary.
if [[ $SYSTEMD -eq 1 ]]; then
	# A hand-over runs the new binary under the old unit's settings; when
	# the unit itself changed, restart instead (snowgate.socket holds the
	# sockets meanwhile, so connects wait rather than fail).
	UNIT_CHANGED=$(systemctl show -p NeedDaemonReload --value snowgate.service 2>/dev/null || true)
	systemctl daemon-reload
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/snowgate.conf
	systemctl enable --quiet snowgate.socket snowgate.service
	if [[ $START == auto ]]; then
		START=$((1 - CONFIG_NEW))
	fi
	if [[ $START -eq 1 ]]; then
		if systemctl is-active --quiet snowgate.service && [[ $UNIT_CHANGED == yes ]]; then
			if systemctl restart snowgate.service; then
				say "snowgate restarted (its unit changed)"
			else
				warn "snowgate did not restart: journalctl -u snowgate -n 50"
			fi
		elif systemctl is-active --quiet snowgate.service; then
			# SIGHUP: the running daemon starts the new binary with its
			# sockets and exits once the successor serves.
			if systemctl reload snowgate.service; then
				say "snowgate reloaded (zero-downtime hand-over to the installed binary)"
			else
				warn "snowgate did not reload: journalctl -u snowgate -n 50"
			fi
		elif systemctl start snowgate.socket snowgate.service; then
			say "snowgate started"
		else
			warn "snowgate did not start: journalctl -u snowgate -n 50 says why; fix /etc/snowgate/snowgate.yaml, then systemctl start snowgate"
		fi
	elif [[ $CONFIG_NEW -eq 1 ]]; then
		say "next: edit /etc/snowgate/snowgate.yaml (accounts, identity issuers, rules), put the gateway's credentials in /etc/credstore/snowgate (root, mode 0600), then: systemctl start snowgate"
	fi
	for u in "${MOVED[@]}"; do
		say "restart $u (between jobs) to move it into agents.slice: systemctl restart $u"
	done
else
	mkdir -p "$(r /sys/fs/bpf)" 2>/dev/null || true
	say "no systemd driven here: units installed below $ROOT, not started"
fi

# 10. The install check.
if [[ $DOCTOR -eq 1 ]]; then
	args=(doctor --config "$CONFIG" --runner-env "$ENV_FILE")
	[[ $ROOT == / ]] || args+=(--root "$ROOT")
	[[ -z $PIN_DIR ]] || args+=(--pin-dir "$PIN_DIR")
	say "snowgate ${args[*]}"
	if ! "$SG" "${args[@]}"; then
		if [[ $STRICT -eq 1 ]]; then
			die "doctor found problems (above)"
		fi
		warn "doctor found problems (above); fix them and run 'snowgate doctor' again"
	fi
fi
say "done"
