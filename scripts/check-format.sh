#!/usr/bin/env bash
# Fails if any C source or header in the tree differs from what clang-format
# (.clang-format is the authority) would write. Lists the files.
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.c' '*.h')
else
  mapfile -t files < <(find common crypto test -name '*.[ch]')
fi
bad=0
for f in "${files[@]}"; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "not clang-formatted: $f (run: clang-format -i $f)"
    bad=1
  fi
done
echo "checked ${#files[@]} files"
exit $bad
