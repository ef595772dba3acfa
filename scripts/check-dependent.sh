#!/usr/bin/env bash
# Proves ringrpc works as a dependency of an outside crate: builds and runs
# tests/dependent (a standalone package depending on ringrpc by path, default
# features) in release mode, which fails unless typed calls work and allocate
# nothing per call in steady state on a core, and calls from tokio tasks
# through a Handle work and allocate at most 2 times per call on the cores;
# then checks that nothing in the root relies
# on a `[patch]` (which dependents never see): no `[patch` in Cargo.toml, no
# vendor/ directory, and no compio in the dependent's dependency tree; and that
# the default features stay minimal: none of the tools' crates (clap, plotters,
# criterion, the floors, HTTP stacks) nor a C compiler step (cc) in the tree.
#
# Usage: scripts/check-dependent.sh   (builds into $CARGO_TARGET_DIR/dependent,
# by default target/dependent)
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=tests/dependent/Cargo.toml
target_dir=${CARGO_TARGET_DIR:-target}/dependent
# Warnings are errors here: in ringrpc as a dependent compiles it (default
# features; the workspace's own lints see the members' features unified) and
# in the dependent's own code. Dependencies from crates.io are capped by cargo.
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"

echo "== check: tests/dependent is formatted"
cargo fmt --manifest-path "$manifest" -- --check
echo "ok: tests/dependent formatted"

echo "== check: build and run tests/dependent (release, --target-dir $target_dir)"
cargo run --release --manifest-path "$manifest" --target-dir "$target_dir"
echo "ok: ringrpc-dependent built and ran (replies correct, no allocation per call on a core, 2 per Handle call)"

echo "== check: tests/dependent again on the epoll driver (RINGRPC_DRIVER=epoll)"
RINGRPC_DRIVER=epoll cargo run --release --manifest-path "$manifest" --target-dir "$target_dir"
echo "ok: ringrpc-dependent ran on epoll (same replies and allocation bounds)"

echo "== check: tests/dependent with the tls feature (a mutual-TLS call)"
cargo run --release --manifest-path "$manifest" --target-dir "$target_dir" --features tls
echo "ok: ringrpc-dependent made a mutual-TLS call (identity in Ctx, PermissionDenied)"

echo "== check: root Cargo.toml has no [patch] section"
if grep -nE '^[[:space:]]*\[patch' Cargo.toml; then
  echo "FAIL: root Cargo.toml has a [patch] section (dependents of ringrpc do not get it)" >&2
  exit 1
fi
echo "ok: no [patch] section in Cargo.toml"

echo "== check: no vendor/ directory"
if [[ -e vendor ]]; then
  echo "FAIL: vendor/ exists (vendored patched crates do not reach dependents)" >&2
  exit 1
fi
echo "ok: no vendor/ directory"

echo "== check: the dependent's dependency tree (default features)"
# Normal and build dependencies: cc would be a build dependency.
tree=$(cargo tree --manifest-path "$manifest" -e normal,build --prefix none)
for crate in compio clap plotters criterion ringrpc-floor ringrpc-workload cc hyper http h2 tiny_http; do
  if grep -nE "^${crate} v" <<<"$tree"; then
    echo "FAIL: $crate is in the dependency tree of ringrpc-dependent" >&2
    exit 1
  fi
done
echo "ok: $(wc -l <<<"$tree" | tr -d ' ') lines of \`cargo tree -e normal,build\`, none of compio, clap, plotters, criterion, ringrpc-floor, ringrpc-workload, cc, hyper, http, h2, tiny_http"

echo "== all dependent checks passed"
