#!/usr/bin/env bash
# Run a command inside the Debian unstable root (scripts/make-sid-root.sh) in a private
# mount namespace, as its root (pivot_root): /proc, /sys, /dev and /tmp as Apptainer needs them, this checkout at
# /pilot-src (read-only) and $PILOT_WORK (default a temporary directory) at /pilot-work.
# Usage: scripts/in-sid-root.sh CMD [ARGS...]     (as root)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$("$here/scripts/make-sid-root.sh")"
work="${PILOT_WORK:-$(mktemp -d)}"
mkdir -p "$root/pilot-src" "$root/pilot-work"
exec unshare --mount --propagation private -- sh -c '
  set -e
  root=$1 src=$2 work=$3; shift 3
  # Apptainer changes the propagation of /, which must be a mount point for that.
  mount --bind "$root" "$root"
  mount --rbind /dev "$root/dev"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount -t tmpfs tmpfs "$root/tmp"
  mount --bind "$src" "$root/pilot-src"
  mount -o remount,bind,ro "$root/pilot-src"
  mount --bind "$work" "$root/pilot-work"
  # pivot_root, not chroot: Apptainer refuses to run in a "weak chrooted environment".
  cd "$root"
  mkdir -p .pilot-oldroot
  pivot_root . .pilot-oldroot
  exec /usr/sbin/chroot . /bin/sh -c "umount -l /.pilot-oldroot && cd / && exec \"\$@\"" sh "$@"
' in-sid-root "$root" "$here" "$work" "$@"
