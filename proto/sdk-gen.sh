#!/usr/bin/env bash
# Generate the Go (clients/go/gen) and TypeScript (clients/typescript/gen) code from proto/ with buf.
#   proto/sdk-gen.sh BUF            regenerate in place (make sdk-gen)
#   proto/sdk-gen.sh BUF --check    regenerate into a temp dir and fail when the committed code
#                                   differs (make proto-check, part of make test)
# Needs protoc-gen-go / protoc-gen-go-grpc on PATH (make sdk-setup puts them in build/tools/bin).
set -euo pipefail
BUF=${1:?usage: sdk-gen.sh PATH_TO_BUF [--check]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/clients/typescript/node_modules/.bin:$PATH"
GENERATED=(clients/go/gen clients/typescript/gen)

if [[ "${2:-}" != "--check" ]]; then
  "$BUF" generate proto --template proto/buf.gen.yaml
  echo "generated: ${GENERATED[*]}"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BUF" generate proto --template proto/buf.gen.yaml -o "$tmp"
status=0
for dir in "${GENERATED[@]}"; do
  if ! diff -r "$dir" "$tmp/$dir" >"$tmp/diff.txt" 2>&1; then
    echo "STALE: $dir differs from what proto/ generates; run 'make sdk-gen' and commit:" >&2
    head -40 "$tmp/diff.txt" >&2
    status=1
  fi
done
[[ $status == 0 ]] && echo "generated code up to date: ${GENERATED[*]}"
exit $status
