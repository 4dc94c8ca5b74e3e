#!/usr/bin/env bash
# extauthz against the in-tree no-op server, driven by an external load
# generator: ghz (github.com/bojand/ghz). ghz is installed outside the
# module (GHZ_DIR, default ~/.cache/extauthz-ghz; set GHZ to use another
# binary); scripts/ghzload writes its protoset and Envoy-shaped requests,
# starts the servers and interleaves the rounds. Arguments go to ghzload,
# e.g.:
#
#   scripts/ghz-load.sh --mixes apikey_allow,deny_missing,deny_tenant,blend --concurrency 16,64 --rounds 3
#   scripts/ghz-load.sh --variant-args=--reply-metadata=full
set -euo pipefail
cd "$(dirname "$0")/.."

GHZ_VERSION="${GHZ_VERSION:-v0.93.0}"
GHZ_DIR="${GHZ_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/extauthz-ghz}"
if [ -z "${GHZ:-}" ]; then
  GHZ="$GHZ_DIR/$GHZ_VERSION/ghz"
  if [ ! -x "$GHZ" ]; then
    echo "installing ghz $GHZ_VERSION into $GHZ_DIR/$GHZ_VERSION" >&2
    # Outside the module: ghz's dependencies never enter go.mod.
    (cd / && GOBIN="$GHZ_DIR/$GHZ_VERSION" go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
  fi
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/extauthz" ./cmd/extauthz
go build -o "$bin/extauthz-noop" ./cmd/extauthz-noop
go run ./scripts/ghzload --ghz "$GHZ" --extauthz-bin "$bin/extauthz" --noop-bin "$bin/extauthz-noop" "$@"
