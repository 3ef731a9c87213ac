#!/usr/bin/env bash
# Downloads official MovieLens releases from files.grouplens.org and checks their md5.
#
# Usage: scripts/download_movielens.sh TARGET_DIR [ml-100k] [ml-1m] [ml-20m]
#        (no dataset names = all three)
# Result: TARGET_DIR/ml-1m/{ratings.dat,movies.dat,users.dat,README}, TARGET_DIR/ml-100k/u.data, ...
#         which recjax.data.movielens.load_movielens(name, TARGET_DIR/name) reads.
#
# License: GroupLens terms (research use, no redistribution). Keep the files out of the repo.
set -euo pipefail

BASE_URL="https://files.grouplens.org/datasets/movielens"

# md5 of the official zips (the same values GroupLens publishes in <name>.zip.md5).
md5_of() {
  case "$1" in
    ml-100k) echo "0e33842e24a9c977be4e0107933c0723" ;;
    ml-1m)   echo "c4d9eecfca2ab87c1945afe126590906" ;;
    ml-20m)  echo "cd245b17a1ae2cc31bb14903e1204af3" ;;
    *) return 1 ;;
  esac
}

usage() {
  echo "usage: $0 TARGET_DIR [ml-100k] [ml-1m] [ml-20m]" >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is required but not installed" >&2; exit 1; }
}

fetch() {   # fetch URL OUT: curl or wget, failing with a clear message when offline
  local url="$1" out="$2"
  if command -v curl >/dev/null 2>&1; then
    curl --fail --location --retry 3 --connect-timeout 20 -o "$out" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget --tries=3 --timeout=20 -O "$out" "$url"
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
  local name="$1" target="$2"
  local expected zip actual
  expected="$(md5_of "$name")" || { echo "error: unknown dataset '$name'" >&2; exit 2; }
  if [[ -d "$target/$name" ]]; then
    echo "$name: $target/$name already exists, skipping (delete it to download again)"
    return 0
  fi
  zip="$target/$name.zip"
  if [[ ! -f "$zip" ]]; then
    echo "$name: downloading $BASE_URL/$name.zip"
    if ! fetch "$BASE_URL/$name.zip" "$zip.part"; then
      rm -f "$zip.part"
      echo "error: could not download $BASE_URL/$name.zip (offline, or the server refused)." >&2
      echo "       Download it by hand into $target and run this script again." >&2
      exit 1
    fi
    mv "$zip.part" "$zip"
  fi
  actual="$(md5_file "$zip")"
  if [[ "$actual" != "$expected" ]]; then
    echo "error: md5 mismatch for $zip: got $actual, expected $expected (file left for inspection)" >&2
    exit 1
  fi
  echo "$name: md5 ok ($actual)"
  unzip -q -o "$zip" -d "$target"
  rm -f "$zip"
  echo "$name: extracted to $target/$name"
}

main() {
  [[ $# -ge 1 ]] || usage
  local target="$1"
  shift
  local names=("$@")
  [[ ${#names[@]} -gt 0 ]] || names=(ml-100k ml-1m ml-20m)
  need unzip
  mkdir -p "$target"
  for name in "${names[@]}"; do
    download_one "$name" "$target"
  done
}

main "$@"
