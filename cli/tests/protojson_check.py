#!/usr/bin/env python3
"""Reads `flowctl observe -o json` lines the way Hubble's own tooling reads them.

Hubble's tools (`hubble observe --input-file`, anything built on its API package) parse each line
with Go's protojson into an observer.GetFlowsResponse, resolving every `Any` by its type URL
among the message types they know, and fail on one they do not know. This script does the same
with an independent protojson implementation: Python protobuf's json_format.Parse, strict (no
unknown fields), over a descriptor pool holding only Hubble's packages (flow, observer, relay)
and the well-known types, never flowscope's own.

Usage: protojson_check.py DESCRIPTOR_SET JSON_LINES_FILE
  DESCRIPTOR_SET: a serialized google.protobuf.FileDescriptorSet of our .proto files
Prints `parsed N lines` and exits 0, or names the first line that fails and exits 1.
Exits 3 when the protobuf package is missing (the caller decides whether that may skip).
"""

import sys

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
except ImportError as e:  # the caller turns this into a skip or, under CI, a failure
    print(f"python protobuf is not installed: {e}", file=sys.stderr)
    sys.exit(3)

# What a Hubble client's registry knows: Hubble's API packages and the well-known types.
HUBBLE_FILES = ("flow/flow.proto", "observer/observer.proto", "relay/relay.proto")


def hubble_pool(descriptor_set_path):
    with open(descriptor_set_path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    pool = descriptor_pool.DescriptorPool()
    by_name = {fd.name: fd for fd in files}
    added = set()

    def add(name):
        if name in added:
            return
        fd = by_name[name]
        for dep in fd.dependency:
            add(dep)
        pool.Add(fd)
        added.add(name)

    for name in HUBBLE_FILES:
        add(name)
    leaked = [n for n in added if n.startswith("flowscope/")]
    if leaked:
        sys.exit(f"Hubble's files import flowscope's: {leaked}")
    return pool


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pool = hubble_pool(sys.argv[1])
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("observer.GetFlowsResponse")
    )
    count = 0
    with open(sys.argv[2], encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                json_format.Parse(line, response(), descriptor_pool=pool)
            except (json_format.ParseError, TypeError, KeyError) as e:
                print(f"line {number}: {e}\n{line.rstrip()}", file=sys.stderr)
                sys.exit(1)
            count += 1
    print(f"parsed {count} lines")


if __name__ == "__main__":
    main()
