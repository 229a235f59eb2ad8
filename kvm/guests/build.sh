#!/usr/bin/env bash
# Rebuilds the guest programs' flat binaries from their assembly with the machine's GNU
# binutils. The binaries are committed, so the build and the tests do not need binutils;
# a test checks that the committed bytes match these sources when `as` is present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../src/main/resources/dev/guestmemfd/kvm/guests}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for src in "$here"/*.S; do
    name="$(basename "$src" .S)"
    as --64 -o "$tmp/$name.o" "$src"
    # Linked at the guest's entry point, 0x10000 (GuestLayout.CODE).
    ld -m elf_x86_64 -Ttext=0x10000 -e _start --oformat binary -o "$out/$name.bin" "$tmp/$name.o"
done
