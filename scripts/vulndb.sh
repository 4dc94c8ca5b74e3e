#!/usr/bin/env bash
# Builds the Go vulnerability database govulncheck reads, offline, from the
# pinned golang.org/x/vulndb module (fetched through the Go module proxy like
# any dependency), into .cache/vulndb. Prints the file:// URL to pass to
# govulncheck -db. Rebuilt only when the pinned version changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
out=.cache/vulndb/$VULNDB_VERSION
if [ ! -f "$out/index/db.json" ]; then
  dir=$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$out.tmp" && mkdir -p "$(dirname "$out")"
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$dir/data/osv" -out "$out.tmp" >&2
  mv "$out.tmp" "$out"
fi
echo "file://$PWD/$out"
