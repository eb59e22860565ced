#!/usr/bin/env bash
# Writes shell completions and man pages for overlayd and overlayctl under
# OUT (a share/ tree: bash-completion/, zsh/, fish/, man/man1/), generated
# from the binaries in BIN_DIR so they match the options those binaries take.
#   usage: generate-docs.sh BIN_DIR OUT
# Each binary generates its own when it can (`completions <shell>`,
# `man <dir>`: clap_complete and clap_mangen over its clap definition);
# a binary without `man` gets one page from help2man over its --help.
set -euo pipefail
bin=$1
out=$2
mkdir -p "$out/man/man1"
for b in overlayd overlayctl; do
  exe=$bin/$b
  if "$exe" completions bash >/dev/null 2>&1; then
    mkdir -p "$out/bash-completion/completions" "$out/zsh/vendor-completions" \
      "$out/fish/vendor_completions.d"
    "$exe" completions bash >"$out/bash-completion/completions/$b"
    "$exe" completions zsh >"$out/zsh/vendor-completions/_$b"
    "$exe" completions fish >"$out/fish/vendor_completions.d/$b.fish"
  else
    echo "generate-docs: $b has no 'completions' command: no completions for it" >&2
  fi
  if ! "$exe" man "$out/man/man1" >/dev/null 2>&1; then
    help2man --no-info --section 1 --name "$("$exe" --help | head -1)" \
      --output "$out/man/man1/$b.1" "$exe"
  fi
done
# dpkg and man read pages gzipped (Debian policy 12.1).
gzip -9n "$out"/man/man1/*.1
