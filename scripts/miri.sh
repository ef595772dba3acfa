#!/usr/bin/env bash
# Runs the library's unit tests that exercise its own `unsafe` code, and that
# need no kernel, under Miri:
# - runtime::buf, runtime::bufring: receive chunks, views (`FrameBytes`), the
#   provided-buffer ring and its leases (the tests play the kernel);
# - runtime::driver::ops: the operation slab (completions, late completions,
#   multishot, zero-copy notifications, dropped futures);
# - message, client::handle: validated access, then `access_unchecked` on the
#   same bytes;
# - conn: the sans-I/O client and server cores decoding from those buffers
#   (their deterministic tests; not the property tests, hundreds of cases each,
#   nor TLS, whose crypto is assembly).
# The rest of the suite drives real rings and sockets, which Miri cannot run.
#
# Flags: Tree Borrows, because rkyv's relative pointers are sound under it and
# not expressible under Stacked Borrows (rkyv/rkyv#436: Stacked Borrows reports
# every validated access of a string or vector); isolation off, for proptest's
# and the tests' clocks. Skipped as too slow under the interpreter:
# `a_large_frame_opened_record_by_record_moves_its_bytes_a_few_times` (a 4 MiB
# frame, the same code paths as the small ones) and the property tests
# (`chaos_at_the_frame_level`, `no_call_ends_early`, the lossy link, the
# hostile server). About
# four minutes on this project's 2-core machines.
#
# Needs a nightly toolchain with the miri component. With `--if-available` it
# tries to install them with rustup and, if that is not possible (no nightly
# reachable), says so and exits 0: CI runs it that way.
#
# Usage: scripts/miri.sh [--if-available]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
  if rustup toolchain install nightly --profile minimal --component miri rust-src >/dev/null 2>&1 \
    && cargo +nightly miri --version >/dev/null 2>&1; then
    :
  elif [ "${1:-}" = "--if-available" ]; then
    echo "miri: SKIPPED (no nightly toolchain with miri could be installed here)"
    exit 0
  else
    echo "miri: needs a nightly toolchain with the miri component" >&2
    exit 1
  fi
fi

cargo +nightly miri --version
MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation" \
  cargo +nightly miri test --lib -- \
  runtime::buf runtime::driver::ops runtime::batch message:: blob:: protocol::segment \
  client::handle::tests conn:: \
  --skip a_large_frame_opened_record_by_record_moves_its_bytes_a_few_times \
  --skip a_hostile_server_cannot_confuse_the_client \
  --skip chaos_at_the_frame_level --skip no_call_ends_early \
  --skip a_client_core_and_a_server_core_over_a_lossy_reordering_link --skip tls
