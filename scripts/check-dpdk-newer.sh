#!/usr/bin/env bash
# Build the DPDK transport against a newer DPDK LTS than the machine has: Debian trixie's
# libdpdk-dev (24.11) and its librte libraries, unpacked under target/ (nothing is installed),
# then `cargo build --features dpdk` of the stack and the appliance (compile and link).
#
#   scripts/check-dpdk-newer.sh [SUITE]        (default: trixie)
#
# It cannot run what it builds on bookworm: trixie's libraries need glibc 2.38.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="${1:-trixie}"
WORK="$ROOT/target/dpdk-$SUITE"
mkdir -p "$WORK/lists/partial" "$WORK/cache" "$WORK/debs" "$WORK/pc"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" >"$WORK/sources.list"
APT=(-o "Dir::Etc::SourceList=$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null -o APT::Sandbox::User=root
  -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache")

apt-get -qq "${APT[@]}" update
version=$(apt-cache "${APT[@]}" policy libdpdk-dev | sed -n 's/^ *Candidate: //p')
[ -n "$version" ] && [ "$version" != "(none)" ] || { echo "check-dpdk-newer.sh: no libdpdk-dev in $SUITE" >&2; exit 1; }
echo "check-dpdk-newer.sh: libdpdk-dev $version from Debian $SUITE" >&2
# libdpdk-dev and every librte library it depends on (same source version).
mapfile -t pkgs < <(apt-cache "${APT[@]}" show "libdpdk-dev=$version" | sed -n 's/^Depends: //p' | head -1 |
  tr ',' '\n' | sed 's/^ *//; s/ *(.*//; s/ *|.*//' | grep '^librte' | sort -u)
(cd "$WORK/debs" && rm -f ./*.deb && apt-get -qq "${APT[@]}" download "libdpdk-dev=$version" "${pkgs[@]/%/=$version}")
rm -rf "$WORK/root" && mkdir -p "$WORK/root"
for d in "$WORK"/debs/*.deb; do dpkg-deb -x "$d" "$WORK/root"; done
for f in "$WORK"/root/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
  sed "s|^prefix=/usr|prefix=$WORK/root/usr|" "$f" >"$WORK/pc/$(basename "$f")"
done
export PKG_CONFIG_PATH="$WORK/pc" LIBRARY_PATH="$WORK/root/usr/lib/x86_64-linux-gnu"
found=$(pkg-config --modversion libdpdk)
echo "check-dpdk-newer.sh: building against DPDK $found ($(ls "$WORK/debs" | wc -l) packages unpacked)" >&2
CARGO_TARGET_DIR="$WORK/target" cargo build --quiet --manifest-path "$ROOT/Cargo.toml" \
  -p hioload-stack -p hioload-ws-app --features hioload-stack/dpdk,hioload-ws-app/dpdk
newest=$(ls -td "$WORK"/target/debug/build/hioload-dpdk-sys-*/output | head -1)
built=$(sed -n 's/^cargo:version=//p' "$newest")
[ "$built" = "$found" ] || { echo "check-dpdk-newer.sh: built against '$built', expected $found" >&2; exit 1; }
echo "check-dpdk-newer.sh: the DPDK transport and the appliance build and link against DPDK $built" >&2
