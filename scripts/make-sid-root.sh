#!/usr/bin/env bash
# A Debian unstable root with Apptainer, for pilot's image tests. Apptainer (and HTCondor)
# are packaged only in unstable; they are installed inside this root, never on the machine
# itself, and never built from source. Made once with mmdebstrap from Debian's registry and
# cached outside the repo; prints its path.
#
#   PILOT_CACHE   cache directory (default ${XDG_CACHE_HOME:-~/.cache}/pilot)
#   PILOT_MIRROR  Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
root="$cache/sid-root"
packages="apptainer,squashfs-tools,debootstrap,ca-certificates,python3,mount,minicondor"

stamp="$packages; caps=no; user=pilotuser"
if [ -x "$root/usr/bin/apptainer" ] && [ -f "$root/.pilot-packages" ] && [ "$(cat "$root/.pilot-packages")" = "$stamp" ]; then
  echo "$root"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "make-sid-root: run as root (mmdebstrap and chroot need it)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
echo "make-sid-root: building a Debian unstable root with $packages in $root (a few minutes, once)" >&2
rm -rf "$root.tmp"
# Check-Valid-Until off: a mirror that serves a snapshot has Release files past their
# expiry date; the signatures are still checked.
mmdebstrap --variant=apt --include="$packages" --aptopt='Acquire::Check-Valid-Until "false"' \
  unstable "$root.tmp" "${PILOT_MIRROR:-http://deb.debian.org/debian}" >&2
# Apptainer run as root asks for every capability by default ("full"); where the machine's
# own bounding set is smaller (CI sandboxes drop CAP_SYS_RESOURCE) that request fails, so
# root's containers here start with none, like an unprivileged user's.
sed -i 's/^root default capabilities = .*/root default capabilities = no/' "$root.tmp/etc/apptainer/apptainer.conf"
# An ordinary user, to run Apptainer unprivileged (user namespaces) as a grid job would.
echo "pilotuser:x:1000:1000:pilot tests:/home/pilotuser:/bin/sh" >> "$root.tmp/etc/passwd"
echo "pilotuser:x:1000:" >> "$root.tmp/etc/group"
mkdir -p "$root.tmp/home/pilotuser" && chown 1000:1000 "$root.tmp/home/pilotuser"
echo "$stamp" > "$root.tmp/.pilot-packages"
rm -rf "$root"
mv "$root.tmp" "$root"
chroot "$root" apptainer --version >&2
echo "$root"
