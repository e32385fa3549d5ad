#!/bin/bash
# Wheels for the lent GPU machine, whose image has PyTorch but not nnU-Net (device_packages.txt): the packages of
# carried_packages.txt at the versions installed here, and nnunet-multimodal itself, into .whl/ at the repository
# root (ignored by git; name it in the device tool's carry). Trimmed to fit the 64 MiB a call may carry.
# Run from the repository root with the project's venv active; then python benchmarks/gpu/check_carried.py.
set -euo pipefail
LIST=benchmarks/gpu/carried_packages.txt
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
section() { awk -v want="[$1]" '/^\[/ { on = ($0 == want); next } on && !/^#/ && NF' "$LIST"; }
pinned() { python -c 'import sys, importlib.metadata as m; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"; }
pure=$(pinned $(section pure)); binary=$(pinned $(section binary))   # fails here if one is not installed
python -m pip wheel -q --no-deps --no-build-isolation -w .whl $pure .
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl $binary
# cc3d ships an unstripped 19 MB library, blosc2 its static library and headers, nibabel its tests: not needed there
trim() {
  local wheel=$1; shift
  local dir; dir=$(mktemp -d)
  (cd "$dir" && python -m zipfile -e "$OLDPWD/$wheel" . && "$@" && rm "$OLDPWD/$wheel" && python -m zipfile -c "$OLDPWD/$wheel" *)
  rm -rf "$dir"
}
for w in .whl/connected_components_3d-*.whl; do trim "$w" sh -c 'find . -name "*.so" -exec strip --strip-unneeded {} +'; done
for w in .whl/blosc2-*.whl; do trim "$w" sh -c 'find . \( -name "*.a" -o -path "*/include/*" \) -delete'; done
for w in .whl/nibabel-*.whl; do trim "$w" sh -c 'find . -type d -name tests -prune -exec rm -rf {} +'; done
ls .whl
# the device tool carries 64 MiB in all, the working tree (about 2 MiB) included
size=$(du -sm .whl | cut -f1); echo ".whl: $size MiB"
[ "$size" -le 62 ] || { echo "too large to carry with the working tree: trim more" >&2; exit 1; }
