#!/usr/bin/env bash
# Fetch the books of the book question-answering set (books.jsonl) from Debian packages
# into assets/books/docs/. Idempotent: a book already there is skipped.
# Usage: bash assets/books/fetch.sh   (from any directory; needs apt-get and dpkg-deb, as root
# for `apt-get update` when the package lists are missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
docs="$here/docs"
mkdir -p "$docs"

# file in docs/ | Debian package | path inside the package (.gz: gunzipped)
books=(
  "R-intro.pdf|r-doc-pdf|usr/share/R/doc/manual/R-intro.pdf"
  "bashref.pdf|bash-doc|usr/share/doc/bash/bashref.pdf"
  "beameruserguide.pdf|texlive-latex-recommended-doc|usr/share/doc/texlive-doc/latex/beamer/beameruserguide.pdf"
  "gnuplot.pdf|gnuplot-doc|usr/share/doc/gnuplot/gnuplot.pdf"
  "mit-scheme-ref.pdf|mit-scheme-doc|usr/share/doc/mit-scheme-doc/pdf/mit-scheme-ref.pdf.gz"
  "debian-policy.epub|debian-policy|usr/share/doc/debian-policy/policy.epub"
)

die() { echo "fetch.sh: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found (a Debian/Ubuntu system is needed)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
updated=0

for entry in "${books[@]}"; do
  IFS='|' read -r file pkg inner <<<"$entry"
  dest="$docs/$file"
  if [ -s "$dest" ]; then
    echo "$file: present ($(wc -c <"$dest") bytes), skipped"
    continue
  fi
  if [ -z "$tmp" ]; then
    tmp="$(mktemp -d)"
    chmod 755 "$tmp" # lets apt's _apt user write there (no 'unsandboxed' warning)
  fi
  # Download the package (the newest version the package lists know).
  if ! (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/apt.err"); then
    if [ "$updated" = 0 ]; then
      echo "$pkg: not downloadable yet, running apt-get update" >&2
      apt-get update >/dev/null || die "apt-get update failed"
      updated=1
    fi
    (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>"$tmp/apt.err") \
      || die "$pkg: apt-get download failed: $(cat "$tmp/apt.err")"
  fi
  deb="$(ls "$tmp"/"${pkg}"_*.deb 2>/dev/null | head -n1)"
  [ -n "$deb" ] || die "$pkg: no .deb downloaded"
  mkdir -p "$tmp/x-$pkg"
  dpkg-deb -x "$deb" "$tmp/x-$pkg" || die "$pkg: dpkg-deb -x failed"
  src="$tmp/x-$pkg/$inner"
  [ -f "$src" ] || die "$pkg: $inner not found in $(basename "$deb") (has the package moved its files?)"
  case "$inner" in
    *.gz) gunzip -c "$src" >"$dest.part" || die "$pkg: gunzip of $inner failed" ;;
    *) cp "$src" "$dest.part" ;;
  esac
  mv "$dest.part" "$dest"
  [ -s "$dest" ] || die "$file: missing or empty after extraction"
  echo "$file: from $(basename "$deb") ($(wc -c <"$dest") bytes)"
done
