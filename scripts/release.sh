#!/usr/bin/env bash
# Release artifacts: the static pilot for x86_64 and aarch64 (musl; WLCG sites run ARM worker
# nodes), stripped, a CycloneDX SBOM of the crates compiled into each, and SHA256SUMS of all.
#   scripts/release.sh [OUTDIR]          (default: dist/)
# Builds with scripts/build-static.sh (release profile: opt-level s, LTO, one codegen unit),
# which installs the Rust targets, musl-gcc and Debian's cross gcc when missing. The SBOM tool,
# cargo-cyclonedx (OWASP CycloneDX's own cargo plugin, from crates.io), is installed once into
# the cache (${PILOT_CACHE:-~/.cache/pilot}) when missing.
# Users verify a download with `sha256sum -c SHA256SUMS` (README, "Download or build").
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
cache="${PILOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilot}"
cdx_version=0.5.9
cdx="$cache/cargo-cyclonedx-$cdx_version/bin/cargo-cyclonedx"
if [ ! -x "$cdx" ]; then
  echo "release: installing cargo-cyclonedx $cdx_version into $cache" >&2
  cargo install --locked --quiet --root "$cache/cargo-cyclonedx-$cdx_version" cargo-cyclonedx --version "$cdx_version" >&2
fi

if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "release: warning: the work tree has uncommitted changes; the artifacts will not match any commit" >&2
fi
mkdir -p "$out"
rm -f "$out"/pilot-* "$out/SHA256SUMS"
artifacts=()
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  bin="$(scripts/build-static.sh "$target" release)"
  name="pilot-$version-$target"
  cp "$bin" "$out/$name"
  case "$target" in
    x86_64-*) strip=strip ;;
    aarch64-*) strip=aarch64-linux-gnu-strip ;;
  esac
  "$strip" --strip-all "$out/$name"
  desc="$(file -b "$out/$name")"
  case "$desc" in
    *statically\ linked*stripped* | *static-pie\ linked*stripped*) ;;
    *) echo "release: $out/$name is not a stripped static executable: $desc" >&2; exit 1 ;;
  esac
  # The crates inside this binary, with versions, licences and package URLs: cargo-cyclonedx's
  # SBOM of the binary for this target without build dependencies, then without the crates
  # that only run in the compiler (proc macros and what only they use), keeping exactly what
  # `cargo tree -e normal,no-proc-macro` says is linked in. Dated by the last commit.
  SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)" \
    "$cdx" cyclonedx --quiet --format json --describe binaries --no-build-deps --spec-version 1.5 --target "$target" >&2
  cargo tree --locked --quiet -e normal,no-proc-macro --target "$target" --prefix none --format '{p}' >"$out/.tree"
  python3 - "pilot_bin.cdx.json" "$out/.tree" "$out/$name.cdx.json" <<'PY'
import json, sys
bom = json.load(open(sys.argv[1]))
linked = {tuple(l.split()[:2]) for l in open(sys.argv[2]) if l.strip()}
keep = lambda c: (c["name"], "v" + c["version"]) in linked
bom["components"] = [c for c in bom["components"] if keep(c)]
refs = {c["bom-ref"] for c in bom["components"]} | {bom["metadata"]["component"]["bom-ref"]}
deps = [d for d in bom.get("dependencies", []) if d["ref"] in refs]
for d in deps:
    d["dependsOn"] = [r for r in d.get("dependsOn", []) if r in refs]
bom["dependencies"] = deps
missing = linked - {(c["name"], "v" + c["version"]) for c in bom["components"]} - {("pilot", "v" + bom["metadata"]["component"]["version"])}
if missing:
    sys.exit(f"release: crates linked but not in the SBOM: {sorted(missing)}")
json.dump(bom, open(sys.argv[3], "w"), indent=2)
PY
  rm -f "pilot_bin.cdx.json" "$out/.tree"
  artifacts+=("$name" "$name.cdx.json")
  echo "release: $out/$name: $(stat -c %s "$out/$name") bytes, $(echo "$desc" | cut -d, -f1-2)" >&2
done
(cd "$out" && sha256sum "${artifacts[@]}" > SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
echo "release: $out/SHA256SUMS" >&2
ls -l "$out" >&2
