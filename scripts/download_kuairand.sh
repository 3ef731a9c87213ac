#!/usr/bin/env bash
# Downloads the official KuaiRand release (Zenodo record 10439422) and checks its md5.
#
# Usage: scripts/download_kuairand.sh TARGET_DIR [pure] [1k] [27k]
#        (no variant = pure only; 1K is ~1.1 GB compressed / 4.3 GB extracted, 27K ~46 GB extracted)
# Result: TARGET_DIR/KuaiRand-Pure/data/*.csv, which
#         recjax.data.kuairand.load_kuairand(TARGET_DIR/KuaiRand-Pure, variant="pure") reads.
#
# md5 values: the KuaiRand README (chongminggao/KuaiRand), also listed in
# shared/research/papers.md section 7. License: CC BY-SA 4.0 (attribution, share-alike).
set -euo pipefail

BASE_URL="https://zenodo.org/records/10439422/files"

archive_of() {
  case "$1" in
    pure) echo "KuaiRand-Pure" ;;
    1k)   echo "KuaiRand-1K" ;;
    27k)  echo "KuaiRand-27K" ;;
    *) return 1 ;;
  esac
}

md5_of() {
  case "$1" in
    pure) echo "0820331067a3784d9691136f772b35a7" ;;
    1k)   echo "6b0b9c8222d67fcd4c676218edca3f1f" ;;
    27k)  echo "3e3c799a24e2d23a4d2c757fbf9adf59" ;;
    *) return 1 ;;
  esac
}

usage() {
  echo "usage: $0 TARGET_DIR [pure] [1k] [27k]" >&2
  exit 2
}

fetch() {   # fetch URL OUT, resuming a partial download when possible
  local url="$1" out="$2"
  if command -v curl >/dev/null 2>&1; then
    curl --fail --location --retry 3 --connect-timeout 20 --continue-at - -o "$out" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget --tries=3 --timeout=20 --continue -O "$out" "$url"
  else
    echo "error: need curl or wget" >&2
    return 1
  fi
}

md5_file() {
  if command -v md5sum >/dev/null 2>&1; then
    md5sum "$1" | awk '{print $1}'
  else
    md5 -q "$1"
  fi
}

download_one() {
  local variant="$1" target="$2"
  local name expected tarball actual
  name="$(archive_of "$variant")" || { echo "error: unknown variant '$variant' (pure, 1k, 27k)" >&2; exit 2; }
  expected="$(md5_of "$variant")"
  if [[ -d "$target/$name" ]]; then
    echo "$variant: $target/$name already exists, skipping (delete it to download again)"
    return 0
  fi
  tarball="$target/$name.tar.gz"
  if [[ ! -f "$tarball" ]]; then
    echo "$variant: downloading $BASE_URL/$name.tar.gz"
    if ! fetch "$BASE_URL/$name.tar.gz?download=1" "$tarball.part"; then
      echo "error: could not download $BASE_URL/$name.tar.gz (offline, or Zenodo refused)." >&2
      echo "       A partial file is kept at $tarball.part; run again to resume, or download by hand." >&2
      exit 1
    fi
    mv "$tarball.part" "$tarball"
  fi
  actual="$(md5_file "$tarball")"
  if [[ "$actual" != "$expected" ]]; then
    echo "error: md5 mismatch for $tarball: got $actual, expected $expected (file left for inspection)" >&2
    exit 1
  fi
  echo "$variant: md5 ok ($actual)"
  tar -xzf "$tarball" -C "$target"
  rm -f "$tarball"
  echo "$variant: extracted to $target/$name"
}

main() {
  [[ $# -ge 1 ]] || usage
  local target="$1"
  shift
  local variants=("$@")
  [[ ${#variants[@]} -gt 0 ]] || variants=(pure)
  mkdir -p "$target"
  for variant in "${variants[@]}"; do
    download_one "$variant" "$target"
  done
}

main "$@"
