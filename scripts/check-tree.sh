#!/usr/bin/env bash
# check-tree: fails if git tracks a built binary (an ELF file) anywhere, or
# a file over 2 MB outside testdata/. Binaries are built, never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
max=$((2 * 1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue # deleted in the work tree
	if [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
		echo "check-tree: $f is an ELF executable: remove it (git rm --cached) and build it instead" >&2
		bad=1
	fi
	case "/$f" in */testdata/*) continue ;; esac
	size=$(stat -c %s "$f")
	if [ "$size" -gt "$max" ]; then
		echo "check-tree: $f is $((size / 1024)) KiB, over the $((max / 1024)) KiB limit for tracked files outside testdata/" >&2
		bad=1
	fi
done < <(git ls-files -z)
[ "$bad" = 0 ] && echo "check-tree: no binaries or oversized files tracked"
exit "$bad"
