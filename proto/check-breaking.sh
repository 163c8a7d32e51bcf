#!/usr/bin/env bash
# buf breaking: the protos must stay wire- and source-compatible (buf's FILE rules) with the
# previous main. The baseline is, in order: the ref given as $1 (make proto-breaking
# BREAKING_AGAINST=<ref>), else `main` when HEAD is not main (a branch is checked against the main
# it will merge into), else HEAD^ (on main itself - as in CI's clone - the first parent is the
# main before the change landed). A baseline without proto/ (the API did not exist yet) or a
# missing ref (shallow clone, first commit) is reported and passes: there is nothing to break.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUF=${BUF:-clients/typescript/node_modules/.bin/buf}

ref=${1:-}
if [[ -z "$ref" ]]; then
  head=$(git rev-parse HEAD)
  main=$(git rev-parse -q --verify 'refs/heads/main^{commit}' || true)
  if [[ -n "$main" && "$main" != "$head" ]]; then ref=main; else ref=HEAD^; fi
fi
if ! git rev-parse -q --verify "$ref^{commit}" >/dev/null; then
  echo "buf breaking: no baseline ref '$ref' in this clone; skipped"
  exit 0
fi
if [[ -z "$(git ls-tree -r --name-only "$ref" -- proto | grep '\.proto$' || true)" ]]; then
  echo "buf breaking: $ref has no protos (first version of the API); nothing to compare"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Extract the baseline's proto/ tree (with its own buf.yaml when it had one).
git archive "$ref" proto | tar -x -C "$tmp"
if [[ ! -f "$tmp/proto/buf.yaml" ]]; then
  printf 'version: v2\nmodules:\n  - path: .\n' >"$tmp/proto/buf.yaml"
fi
"$BUF" breaking proto --against "$tmp/proto"
echo "buf breaking: proto/ is compatible with $ref ($(git rev-parse --short "$ref"))"
