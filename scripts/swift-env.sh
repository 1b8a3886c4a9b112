#!/usr/bin/env bash
# swift-env.sh -- a real Swift toolchain for Missive's Swift bindings on a
# Debian 12 (bookworm) host.
#
# Why: bookworm's glibc (2.36) is too old for any Swift we can install here.
# Debian 13 (trixie) ships `swiftlang` (Swift 6.0.3 with Foundation, XCTest,
# Swift Testing and SwiftPM), so we build a trixie root filesystem with
# mmdebstrap and run Swift inside it with chroot.
#
# What this script owns (and nothing else):
#   * the package `mmdebstrap` on the host (installed with apt-get if missing);
#   * the trixie root at  ROOT="${MISSIVE_SWIFT_ROOT:-$HOME/.cache/missive/swift-trixie}";
#   * its siblings  ROOT.partial.*  (a build in progress / an interrupted build)
#     and  ROOT.lock  (serialises `setup`).
# ROOT counts as complete only when ROOT/.missive-swift-ready exists. That file
# is written into the temporary build dir after the toolchain has been checked
# (swift --version and a Foundation type-check), and the dir is then renamed to
# ROOT in one step, so an interrupted setup never leaves a root that looks done.
#
# SAFETY RULE ABOUT MOUNTS -- read before changing anything here:
#   Every mount this script makes (/dev, /proc, /sys, /tmp, the project dir,
#   and mmdebstrap's own mounts while it builds) happens inside a private mount
#   namespace (`unshare --mount --propagation private`). The mounts exist only
#   for the lifetime of that one command and vanish with it; nothing is ever
#   mounted in the host's namespace and nothing needs unmounting afterwards.
#   NEVER `rm -rf` a root (or partial root) while anything is mounted below it:
#   with /dev bind-mounted in, that deletes the HOST's /dev. Every deletion in
#   this script goes through safe_remove(), which refuses if findmnt shows any
#   mount at or below the directory. Keep it that way.
#
# Usage:
#   scripts/swift-env.sh setup              create the root if not already complete
#   scripts/swift-env.sh run DIR -- CMD...  run CMD in the root, cwd DIR (absolute host
#                                           path, bind-mounted at the same path inside)
#   scripts/swift-env.sh version            print `swift --version` from inside
#   scripts/swift-env.sh path               print ROOT
#
# Inside `run`: HOME=/root (inside the root, writable), PATH is the usual
# system PATH (swift is /usr/bin/swift), LANG=C.UTF-8; TERM is passed through.
# No other host environment is passed in: use `run DIR -- env FOO=bar CMD...`.
# The host's /tmp is shared with the root, so paths under /tmp mean the same
# thing on both sides. Needs root (chroot, mount).
set -euo pipefail

ROOT="${MISSIVE_SWIFT_ROOT:-$HOME/.cache/missive/swift-trixie}"
SUITE=trixie
PACKAGES=swiftlang,libc6-dev
MARKER=.missive-swift-ready
INNER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SELF="$(readlink -f -- "${BASH_SOURCE[0]}")"

die() { echo "swift-env: error: $*" >&2; exit 1; }
log() { echo "swift-env: $*" >&2; }

usage() {
    sed -n '/^# Usage:/,/^# thing on both sides/p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- safety ----

# Print every mount point (in this namespace) at or below $1.
mounts_below() {
    local dir=$1 t
    findmnt -rn -o TARGET | while IFS= read -r t; do
        # findmnt -r escapes blanks etc. as \x..; decode them
        t=$(printf '%b' "$t")
        if [[ $t == "$dir" || $t == "$dir"/* ]]; then printf '%s\n' "$t"; fi
    done
}

# rm -rf DIR, but only if nothing at all is mounted at or below it.
safe_remove() {
    local dir=$1 m
    [[ -e $dir ]] || return 0
    dir=$(readlink -f -- "$dir")
    case $dir in
        / | /dev* | /proc* | /sys* | /tmp | /usr | /etc | /var | /home | /root | "$HOME")
            die "refusing to delete $dir" ;;
    esac
    m=$(mounts_below "$dir")
    if [[ -n $m ]]; then
        die "refusing to delete $dir: something is mounted below it:
$m
(unmount those first -- deleting through a bind mount of /dev deletes the host's /dev)"
    fi
    rm -rf --one-file-system -- "$dir"
}

check_root_path() {
    [[ $ROOT == /* ]] || die "MISSIVE_SWIFT_ROOT must be an absolute path (got '$ROOT')"
    [[ $(readlink -m -- "$ROOT") != / ]] || die "MISSIVE_SWIFT_ROOT must not be /"
    ROOT=$(readlink -m -- "$ROOT")
}

need_root_user() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (needs chroot and mount)"
}

# (usr/bin/swift is an absolute symlink into /usr/libexec: test it with -L,
# since following it from the host would look outside the root)
has_swift() { [[ -L $1/usr/bin/swift || -x $1/usr/bin/swift ]]; }
is_ready() { [[ -f $ROOT/$MARKER ]] && has_swift "$ROOT"; }

# ----------------------------------------------------------------- mirror ---

# The Debian mirror the host's apt uses for its own release (bookworm),
# read from apt's parsed sources (both sources.list and *.sources formats).
host_mirror() {
    local codename uri
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
    uri=$(apt-get indextargets --no-release-info \
            --format '$(RELEASE) $(REPO_URI)' 2>/dev/null \
          | awk -v c="$codename" '$1 == c { print $2; exit }')
    if [[ -z $uri ]]; then
        # Fallback: read the files directly.
        uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk -v c="$codename" '$1 == "deb" { for (i = 2; i <= NF; i++)
                    if ($i !~ /^\[/ && $i !~ /\]$/) { if ($(i+1) == c) { print $i; exit } else break } }')
    fi
    if [[ -z $uri ]]; then
        uri=$(awk -v c="$codename" '
                /^[ \t]*$/ { if (u != "" && s) { print u; exit } u = ""; s = 0; next }
                $1 == "URIs:" { u = $2 }
                $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
                END { if (u != "" && s) print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null \
              | head -n1)
    fi
    [[ -n $uri ]] || die "cannot find the Debian mirror for '$codename' in the host's apt sources"
    echo "${uri%/}"
}

# ------------------------------------------------------------------ setup ---

ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null 2>&1 && return 0
    log "installing mmdebstrap (apt-get update + install)"
    apt-get update -q || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap \
        || die "apt-get install mmdebstrap failed"
    command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap still not found after install"
}

BUILD_DIR=
on_setup_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $BUILD_DIR && -e $BUILD_DIR ]]; then
        log "setup did not finish (status $rc); removing $BUILD_DIR"
        safe_remove "$BUILD_DIR" || true
    fi
    exit "$rc"
}

cmd_setup() {
    need_root_user
    check_root_path
    if is_ready; then
        log "ready: $ROOT ($(head -n1 "$ROOT/$MARKER"))"
        return 0
    fi
    for t in unshare chroot findmnt flock; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' not found on the host"
    done

    mkdir -p -- "$(dirname -- "$ROOT")"
    exec 9>"$ROOT.lock"
    if ! flock -n 9; then
        log "another setup is running; waiting for it"
        flock 9
    fi
    if is_ready; then
        log "ready: $ROOT ($(head -n1 "$ROOT/$MARKER"))"
        return 0
    fi

    # Leftovers of interrupted runs (we hold the lock, so none is in progress).
    local p
    for p in "$ROOT".partial.*; do
        [[ -e $p ]] || continue
        log "removing leftover $p"
        safe_remove "$p"
    done
    if [[ -e $ROOT ]]; then
        # Exists but has no marker: not ours-and-complete.
        if [[ -f $ROOT/etc/debian_version || -z $(ls -A -- "$ROOT") ]]; then
            log "removing incomplete root $ROOT"
            safe_remove "$ROOT"
        else
            die "$ROOT exists but is not a (complete) swift root; move it away or set MISSIVE_SWIFT_ROOT"
        fi
    fi

    ensure_mmdebstrap

    local mirror tmp start opts=()
    mirror=$(host_mirror)
    # Carry over the host's apt settings that matter for reaching the mirror.
    local key val
    for key in Acquire::Check-Valid-Until Acquire::http::Proxy Acquire::https::Proxy; do
        val=$(apt-config dump "$key" 2>/dev/null \
              | awk -v k="$key" 'tolower($1) == tolower(k) { sub(/^[^ ]+ /, ""); sub(/;$/, ""); print; exit }')
        if [[ -n $val ]]; then opts+=("--aptopt=$key $val;"); fi
    done
    local pkgs=$PACKAGES
    [[ $mirror == https:* ]] && pkgs+=",ca-certificates"

    tmp=$(mktemp -d -- "$ROOT.partial.XXXXXX")
    BUILD_DIR=$tmp
    # Clean up our partial dir on any failure or interruption (mount-checked).
    trap on_setup_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    log "building $SUITE root in $tmp from $mirror (packages: $pkgs)"
    start=$SECONDS
    # mmdebstrap (root mode) mounts /dev, /proc, /sys into the target while it
    # works: keep those mounts in a private namespace too, so a killed run can
    # never leave them behind in the host's namespace.
    unshare --mount --propagation private -- \
        mmdebstrap --variant=apt --include="$pkgs" "${opts[@]}" \
        "$SUITE" "$tmp" "$mirror" \
        || die "mmdebstrap failed (mirror $mirror, suite $SUITE)"
    log "mmdebstrap done in $((SECONDS - start)) s"

    has_swift "$tmp" || die "no /usr/bin/swift in the new root"

    # Check the toolchain before declaring the root complete.
    local check ver
    check=$(mktemp -d /tmp/swift-env-check.XXXXXX)
    printf 'import Foundation\nlet d = Date()\nprint(d.timeIntervalSince1970 > 0, URL(fileURLWithPath: "/").path)\n' > "$check/check.swift"
    ver=$(in_namespace "$tmp" "$check" swift --version 2>&1) \
        || { rm -rf -- "$check"; die "swift --version fails inside the new root: $ver"; }
    in_namespace "$tmp" "$check" swiftc -typecheck check.swift \
        || { rm -rf -- "$check"; die "Foundation cannot be imported inside the new root"; }
    rm -rf -- "$check"

    {
        echo "$(echo "$ver" | head -n1)"
        echo "suite=$SUITE packages=$pkgs mirror=$mirror"
        echo "created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } > "$tmp/$MARKER"
    mv -T -- "$tmp" "$ROOT"
    BUILD_DIR=
    trap - EXIT INT TERM
    log "ready: $ROOT ($(echo "$ver" | head -n1)); took $((SECONDS - start)) s"
}

# -------------------------------------------------------------------- run ---

# Run "$@" (after root, dir) inside ROOT with cwd DIR, in a fresh private
# mount namespace: all mounts made for it disappear when it exits.
in_namespace() {
    local root=$1 dir=$2
    shift 2
    unshare --mount --propagation private -- \
        "$SELF" __inner "$(readlink /proc/self/ns/mnt)" "$root" "$dir" "$@"
}

# Called only via in_namespace.
# $1 = root, $2 = working dir (absolute, host path), rest = command.
inner() {
    local root=$1 dir=$2
    shift 2
    # Belt and braces: make sure nothing we mount propagates to the host.
    mount --make-rprivate /

    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /tmp "$root/tmp"

    if [[ $dir != /tmp && $dir != /tmp/* ]]; then
        mkdir -p -- "$root$dir"
        # Refuse if a symlink inside the root would put the mount elsewhere.
        local real
        real=$(readlink -f -- "$root$dir")
        [[ $real == "$root$dir" ]] || die "$root$dir resolves to $real; refusing to mount there"
        mount --rbind -- "$dir" "$root$dir"
    fi

    local term=${TERM:-dumb}
    exec chroot "$root" /usr/bin/env -i \
        HOME=/root USER=root LOGNAME=root PATH="$INNER_PATH" LANG=C.UTF-8 TERM="$term" \
        /bin/sh -c 'cd "$1" || exit 125; shift; exec "$@"' swift-env "$dir" "$@"
}

cmd_run() {
    need_root_user
    check_root_path
    [[ $# -ge 1 ]] || usage
    local dir=$1
    shift
    [[ ${1:-} == -- ]] && shift
    [[ $# -ge 1 ]] || die "run: no command given (usage: run DIR -- CMD...)"
    [[ $dir == /* ]] || die "run: DIR must be an absolute path (got '$dir')"
    [[ -d $dir ]] || die "run: $dir is not a directory"
    dir=$(readlink -f -- "$dir")
    case $dir in
        / | /dev | /dev/* | /proc | /proc/* | /sys | /sys/* | /usr | /usr/* | /etc | /etc/* \
        | /bin | /bin/* | /sbin | /sbin/* | /lib* | /var | /root)
            die "run: refusing to mount $dir over the root's own $dir" ;;
    esac
    [[ $ROOT != "$dir" && $ROOT != "$dir"/* ]] || die "run: DIR must not contain the root itself ($ROOT)"
    is_ready || die "swift root not ready at $ROOT: run '$SELF setup' first"
    in_namespace "$ROOT" "$dir" "$@"
}

cmd_version() {
    cmd_run /tmp -- swift --version
}

# ------------------------------------------------------------------- main ---

case ${1:-} in
    setup)   shift; [[ $# -eq 0 ]] || usage; cmd_setup ;;
    run)     shift; cmd_run "$@" ;;
    version) shift; cmd_version ;;
    path)    check_root_path; echo "$ROOT" ;;
    __inner)
        shift
        # Only ever run by in_namespace(); $1 is the caller's mount namespace,
        # and we refuse to mount anything unless we are in a different one.
        [[ $# -ge 4 ]] || die "__inner: internal use only"
        [[ $(readlink /proc/self/ns/mnt) != "$1" ]] \
            || die "__inner must run in its own mount namespace (internal use only)"
        shift
        inner "$@" ;;
    -h | --help | help | "") usage ;;
    *) usage ;;
esac
