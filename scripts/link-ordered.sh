#!/usr/bin/env bash
# The release links' linker (`-C linker=`, set by scripts/build-static.sh and for the shim by
# cmd/cloudlet/build.rs): runs `cc` with the same arguments, except that the hot-text list given
# with -Wl,--symbol-ordering-file=LIST is first resolved against this link's own objects.
#
# Why: hot-text.order names the functions the server (or a shim) runs at steady state
# (scripts/hot-text.sh), by their mangled names, and those carry hashes (`17h<16 hex>E`, v0's
# crate disambiguators `Cs<base 62>_`, LLVM's `.<n>` suffixes of local copies) that change with
# nearly any change to the code: after a few commits 1,535 of the list's 3,793 names named
# nothing and the server's resident text grew by 2.4 MiB (`make bench`). Here a name matches every symbol of this link that is the same but for those
# hashes (when that names no more functions than the list did), so the list keeps packing what
# it named until the functions themselves change.
#
# It never changes anything but that one argument; without it, it is `cc "$@"`.
#   scripts/link-ordered.sh CC-ARGS...                 (as rustc runs it)
#   scripts/link-ordered.sh --resolve LIST OBJECT...   prints the resolved list
#   scripts/link-ordered.sh --missing LIST MAP          counts the list's names a link map lacks
set -euo pipefail

# The awk function that takes the hashes off a symbol name.
stable_awk='
function stable(s) {
  sub(/\.(llvm\.)?[0-9]+$/, "", s)
  sub(/17h[0-9a-f]+E$/, "E", s)
  gsub(/Cs[0-9A-Za-z]*_/, "C", s)
  return s
}
'

# Reads the hot-text list (first input), then the symbol names of this link's Rust objects
# (second input); prints, in the list's order, for each listed name: the symbols with its name
# without hashes, when the objects have some and no more of them than the list names (the
# instances of a generic function share a name without hashes: where the build has more than
# the list had, which ones ran is unknown, and packing them all would spread what runs); else
# the name as listed (C library functions and names the link has exactly).
resolve_awk="$stable_awk"'
NR == FNR { list[++n] = $0; listed[stable($0)]++; next }
{ exact[$0] = 1; k = stable($0); count[k]++; same[k] = same[k] $0 "\n" }
END {
  for (i = 1; i <= n; i++) {
    s = list[i]; k = stable(s)
    if (!(s in exact) && (k in count) && count[k] <= listed[k]) {
      if (!(k in taken)) { taken[k] = 1; printf "%s", same[k] }
    } else if (!(s in done)) { done[s] = 1; printf "%s\n", s }
  }
}
'

# Counts the list's names that the link (map) resolves to nothing.
missing_awk="$stable_awk"'
NR == FNR { list[++n] = $0; listed[stable($0)]++; next }
NF == 5 && $5 !~ /:\(/ { exact[$5] = 1; count[stable($5)]++ }
END {
  for (i = 1; i <= n; i++) {
    s = list[i]; k = stable(s)
    if (!(s in exact) && !((k in count) && count[k] <= listed[k])) m++
  }
  print m + 0
}
'

symbols() {
  # Defined symbols of the objects and archives given; what nm cannot read (a linker script,
  # an LLVM bitcode file) names nothing.
  for f in "$@"; do
    nm --defined-only --format=just-symbols "$f" 2>/dev/null || true
  done
}

case "${1:-}" in
--resolve)
  list="$2"
  shift 2
  awk "$resolve_awk" "$list" <(symbols "$@")
  exit 0
  ;;
--missing)
  awk "$missing_awk" "$2" "$3"
  exit 0
  ;;
esac

list=""
objects=()
for arg in "$@"; do
  case "$arg" in
  -Wl,--symbol-ordering-file=*) list="${arg#-Wl,--symbol-ordering-file=}" ;;
  *.o | *.rlib | *.a) [ -f "$arg" ] && objects+=("$arg") ;;
  esac
done
if [ -z "$list" ] || [ ! -f "$list" ] || [ "${#objects[@]}" -eq 0 ]; then
  exec "${CC:-cc}" "$@"
fi

resolved="$(mktemp "${TMPDIR:-/tmp}/cloudlet-hot-text.XXXXXX")"
trap 'rm -f "$resolved"' EXIT
awk "$resolve_awk" "$list" <(symbols "${objects[@]}") >"$resolved"
args=()
for arg in "$@"; do
  case "$arg" in
  -Wl,--symbol-ordering-file=*) args+=("-Wl,--symbol-ordering-file=$resolved") ;;
  *) args+=("$arg") ;;
  esac
done
"${CC:-cc}" "${args[@]}"
