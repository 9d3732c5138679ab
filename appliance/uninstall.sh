#!/usr/bin/env bash
# Remove snowgate from a CI runner.
#
#   sudo /usr/share/snowgate/uninstall.sh            # keeps configuration, CA, credentials, recordings
#   sudo /usr/share/snowgate/uninstall.sh --purge    # removes them too
#
# It stops the gateway, removes the eBPF redirect (afterwards agents connect
# to Snowflake directly: this is the only step that turns interception off),
# the runners' drop-ins and CA environment, the CA from the system trust
# store, the units and the binary. Running it again is harmless.
#
# Options:
#   --root DIR         remove from below DIR instead of / (a scratch root:
#                      no systemd is driven, no system trust store is
#                      touched, no redirect is removed unless --pin-dir)
#   --cgroup-root DIR  the cgroup v2 mount (default: found in mountinfo)
#   --pin-dir DIR      the redirect's bpffs directory (default
#                      /sys/fs/bpf/snowgate on the live system)
#   --package          the package manager removes the files (the .deb):
#                      only unconfigure
#   --runner-dir DIR   a GitHub Actions runner directory whose .env
#                      install.sh wrote to (repeatable)
#   --purge            also remove /etc/snowgate (configuration, CA),
#                      /etc/credstore/snowgate, /var/lib/snowgate
#                      (recordings), /var/log/snowgate (audit trail) and
#                      the snowgate user
set -euo pipefail

ROOT=/
CGROUP_ROOT=
PIN_DIR=
PACKAGE=0
PURGE=0
RUNNER_DIRS=()

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'uninstall.sh: %s\n' "$*" >&2
	exit 1
}

while [[ $# -gt 0 ]]; do
	case $1 in
	--root) ROOT=${2:?--root needs a directory}; shift 2 ;;
	--cgroup-root) CGROUP_ROOT=${2:?--cgroup-root needs a directory}; shift 2 ;;
	--pin-dir) PIN_DIR=${2:?--pin-dir needs a directory}; shift 2 ;;
	--package) PACKAGE=1; shift ;;
	--runner-dir) RUNNER_DIRS+=("${2:?--runner-dir needs a directory}"); shift 2 ;;
	--purge) PURGE=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

[[ $(id -u) -eq 0 ]] || die "run as root (sudo)"
[[ -d $ROOT ]] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
r() { if [[ $ROOT == / ]]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

# A package install is removed by the package manager (which runs this
# script with --package).
if [[ $PACKAGE -eq 0 && $ROOT == / ]] && command -v dpkg-query >/dev/null &&
	dpkg-query -S /usr/bin/snowgate >/dev/null 2>&1; then
	die "snowgate was installed by its package: apt remove snowgate (apt purge snowgate also removes the configuration, CA and recordings)"
fi

SYSTEMD=0
if [[ $ROOT == / && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
	SYSTEMD=1
fi
if [[ -z $CGROUP_ROOT ]]; then
	CGROUP_ROOT=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
fi
if [[ -z $PIN_DIR && $ROOT == / ]]; then
	PIN_DIR=/sys/fs/bpf/snowgate
fi

# gone PATH: remove a file, saying so when it was there.
gone() {
	if [[ -e $1 || -L $1 ]]; then
		rm -f "$1"
		say "removed ${1#"${ROOT%/}"}"
	fi
}

# 1. Stop the gateway.
if [[ $SYSTEMD -eq 1 ]]; then
	systemctl disable --now --quiet snowgate.service snowgate.socket 2>/dev/null || true
	say "snowgate stopped and disabled"
fi

# 2. The redirect: while it is pinned, agents fail closed.
SG=$(r /usr/bin/snowgate)
if [[ -n $PIN_DIR && -d $PIN_DIR ]]; then
	if [[ -x $SG ]]; then
		"$SG" uninstall --pin-dir "$PIN_DIR"
	else
		warn "$PIN_DIR holds the redirect but $SG is gone: remove the pins with 'snowgate uninstall' from another copy"
	fi
fi

# 3. The runners: drop-ins (only ours: they carry the marker) and the CA
# environment.
MOVED=()
for f in "$(r /etc/systemd/system)"/*.d/snowgate.conf; do
	[[ -f $f ]] || continue
	grep -q '^# snowgate drop-in' "$f" || continue
	unit=$(basename "$(dirname "$f")")
	gone "$f"
	rmdir "$(dirname "$f")" 2>/dev/null || true
	MOVED+=("${unit%.d}")
done
for dir in "${RUNNER_DIRS[@]}"; do
	envf=$dir/.env
	[[ -f $envf ]] || continue
	if grep -q '^# BEGIN snowgate$' "$envf"; then
		awk '/^# BEGIN snowgate$/ { skip = 1 } !skip { print } /^# END snowgate$/ { skip = 0 }' "$envf" >"$envf.snowgate-new"
		chmod --reference="$envf" "$envf.snowgate-new"
		chown --reference="$envf" "$envf.snowgate-new"
		mv -f "$envf.snowgate-new" "$envf"
		say "removed the CA environment from $envf"
	fi
done
gone "$(r /etc/snowgate/runner.env)"
gone "$(r /etc/snowgate/ca-bundle.pem)"

# 4. The system trust store.
trust=0
for f in /usr/local/share/ca-certificates/snowgate.crt /etc/pki/ca-trust/source/anchors/snowgate.pem; do
	if [[ -e $(r "$f") ]]; then
		gone "$(r "$f")"
		trust=1
	fi
done
if [[ $trust -eq 1 && $ROOT == / ]]; then
	if command -v update-ca-certificates >/dev/null; then
		update-ca-certificates --fresh >/dev/null
	elif command -v update-ca-trust >/dev/null; then
		update-ca-trust extract
	fi
fi

# 5. The files the package (or install.sh) put in place.
if [[ $PACKAGE -eq 0 ]]; then
	for f in /usr/lib/systemd/system/snowgate.service /usr/lib/systemd/system/snowgate.socket \
		/usr/lib/systemd/system/agents.slice /usr/lib/sysusers.d/snowgate.conf \
		/usr/lib/tmpfiles.d/snowgate.conf /usr/bin/snowgate; do
		gone "$(r "$f")"
	done
	for d in /usr/share/snowgate /usr/share/doc/snowgate; do
		if [[ -d $(r "$d") ]]; then
			rm -rf "$(r "$d")"
			say "removed $d"
		fi
	done
fi
if [[ $SYSTEMD -eq 1 ]]; then
	systemctl daemon-reload
	for u in "${MOVED[@]}"; do
		say "restart $u to take it out of agents.slice: systemctl restart $u"
	done
elif [[ -n $CGROUP_ROOT && -d $CGROUP_ROOT/agents.slice ]]; then
	# Made by install.sh where no systemd manages it; left when processes
	# still live in it.
	if rmdir "$CGROUP_ROOT/agents.slice" 2>/dev/null; then
		say "removed $CGROUP_ROOT/agents.slice"
	else
		warn "$CGROUP_ROOT/agents.slice is not empty: left in place"
	fi
fi

# 6. What an operator may still need, unless purged.
if [[ $PURGE -eq 1 ]]; then
	for d in /etc/snowgate /etc/credstore/snowgate /var/lib/snowgate /var/log/snowgate; do
		if [[ -e $(r "$d") ]]; then
			rm -rf "$(r "$d")"
			say "purged $d"
		fi
	done
	rmdir "$(r /etc/credstore)" 2>/dev/null || true
	if grep -q '^snowgate:' "$(r /etc/passwd)" 2>/dev/null; then
		if [[ $ROOT == / ]] && command -v userdel >/dev/null; then
			userdel snowgate
			if getent group snowgate >/dev/null; then
				groupdel snowgate
			fi
		else
			for db in passwd shadow group gshadow; do
				f=$(r "/etc/$db")
				[[ -f $f ]] || continue
				grep -v '^snowgate:' "$f" >"$f.snowgate-new" || true
				chmod --reference="$f" "$f.snowgate-new"
				mv -f "$f.snowgate-new" "$f"
			done
		fi
		say "removed user snowgate"
	fi
else
	for d in /etc/snowgate /etc/credstore/snowgate /var/lib/snowgate /var/log/snowgate; do
		if [[ -e $(r "$d") ]]; then
			say "kept $d (--purge removes it)"
		fi
	done
fi
say "done"
