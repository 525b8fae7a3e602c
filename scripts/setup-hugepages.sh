#!/usr/bin/env bash
# Reserve 2 MiB hugepages and mount hugetlbfs for DPDK.
#
#   scripts/setup-hugepages.sh [PAGES]     (default 512 pages = 1 GiB; needs root)
#
# Idempotent: keeps a larger existing reservation and an existing mount. Exits 0 when at least
# PAGES pages are reserved and hugetlbfs is mounted, 1 otherwise (saying why).
set -euo pipefail
PAGES="${1:-512}"
MNT="${HUGEPAGES_MOUNT:-/dev/hugepages}"
[ "$(id -u)" -eq 0 ] || { echo "setup-hugepages.sh: needs root" >&2; exit 1; }
nr=/proc/sys/vm/nr_hugepages
[ -w "$nr" ] || { echo "setup-hugepages.sh: $nr is not writable here (container or VM policy)" >&2; exit 1; }
have=$(cat "$nr")
if [ "$have" -lt "$PAGES" ]; then
  echo "$PAGES" >"$nr" 2>/dev/null || true
  have=$(cat "$nr")
fi
if [ "$have" -lt "$PAGES" ]; then
  echo "setup-hugepages.sh: asked for $PAGES hugepages, the kernel reserved $have (memory fragmented or too small)" >&2
  exit 1
fi
if ! mount | grep -q " $MNT type hugetlbfs"; then
  mkdir -p "$MNT"
  mount -t hugetlbfs nodev "$MNT" || { echo "setup-hugepages.sh: cannot mount hugetlbfs on $MNT" >&2; exit 1; }
fi
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
echo "setup-hugepages.sh: $have hugepages of 2 MiB reserved ($free free), hugetlbfs on $MNT"
