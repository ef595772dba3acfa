#!/usr/bin/env python3
"""Checks the workspace's rust-version declarations with `cargo metadata`.

- every workspace member declares a `rust-version`;
- no default member (what `cargo build`/`cargo test`/`cargo run` at the root
  select) declares a higher one than the library (`ringrpc`), so `cargo test`
  at the root builds on the library's MSRV; a member that needs a newer Rust
  (benches/peers: tonic) is built by its own command instead;
- no locked dependency of a member (normal, build and dev, for this host:
  what `cargo test -p MEMBER` compiles, from `cargo tree`) declares a higher
  one than that member (the workspace's `resolver = "3"` picks such versions
  on `cargo update`; a requirement that allows none must be lowered). With the
  previous check, `cargo test` at the root builds nothing above the library's.

Clippy's `incompatible_msrv` lint (on in [workspace.lints]) checks the other
half: no std API newer than each package's rust-version.

Usage: scripts/check-msrv.py   (exit 1 and one line per problem when it fails)
"""

import json
import subprocess
import sys
from pathlib import Path

LIBRARY = "ringrpc"


def version(text):
    """'1.85' or '1.85.0' -> (1, 85, 0)."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def cargo(root, *args):
    """The standard output of `cargo ARGS...` run at `root` (exits 1 if it fails)."""
    run = subprocess.run(["cargo", *args], cwd=root, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"FAIL: cargo {' '.join(args)}:\n{run.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
    return run.stdout


def dependencies(root, member):
    """(name, version) of every package `cargo test -p MEMBER` compiles."""
    tree = cargo(root, "tree", "--locked", "-p", member, "-e", "normal,build,dev",
                 "--prefix", "none", "-f", "{p}")
    out = set()
    for line in tree.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].startswith("v"):
            out.add((fields[0], fields[1][1:]))
    return out


def main():
    root = Path(__file__).resolve().parent.parent
    meta = json.loads(cargo(root, "metadata", "--format-version", "1", "--locked"))
    packages = {p["id"]: p for p in meta["packages"]}
    members = [packages[i] for i in meta["workspace_members"]]
    by_name = {(p["name"], p["version"]): p for p in meta["packages"]}
    defaults = [packages[i] for i in meta["workspace_default_members"]]
    problems = []
    for p in members:
        if not p.get("rust_version"):
            problems.append(f"{p['name']} ({p['manifest_path']}) declares no rust-version")
    library = next((p for p in members if p["name"] == LIBRARY), None)
    if library is None or not library.get("rust_version"):
        problems.append(f"the library package {LIBRARY} or its rust-version is missing")
    else:
        msrv = library["rust_version"]
        for p in defaults:
            declared = p.get("rust_version")
            if declared and version(declared) > version(msrv):
                problems.append(
                    f"{p['name']} is a default member with rust-version {declared}, "
                    f"above the library's {msrv}: take it out of default-members "
                    f"(and build it with its own command) or lower its rust-version"
                )
    for m in members:
        if not m.get("rust_version"):
            continue
        for key in sorted(dependencies(root, m["name"])):
            p = by_name.get(key)
            declared = p and p.get("rust_version")
            if p and p not in members and declared and version(declared) > version(m["rust_version"]):
                problems.append(
                    f"{key[0]} {key[1]} (built by {m['name']}) needs Rust {declared}, above "
                    f"{m['name']}'s {m['rust_version']}: `cargo update -p {key[0]}` (resolver 3 "
                    f"picks a version that fits) or lower the requirement"
                )
    for line in problems:
        print(f"FAIL: {line}", file=sys.stderr)
    if problems:
        return 1
    names = ", ".join(f"{p['name']} {p['rust_version']}" for p in defaults)
    print(f"ok: default members at or below the library's rust-version {msrv}: {names}")
    print("ok: no member builds a locked dependency (normal, build, dev) above its own rust-version")
    others = [p for p in members if p not in defaults]
    if others:
        rest = ", ".join(f"{p['name']} {p['rust_version']}" for p in others)
        print(f"ok: other members (built by their own commands): {rest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
