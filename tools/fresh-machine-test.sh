#!/bin/sh
# Time `make test` as a fresh machine of ours would run it: a fresh clone of HEAD and every cache
# empty (ragvisor's, Go's build and module caches, pip's, Maven's local repository), so
# llama.cpp, Ollama, Neo4j's artifacts, the container images and the model files are all
# built or fetched again. Debian packages the Makefile installs stay installed. Prints the
# minutes it took and pytest's counts; leaves everything in the printed folder for a look
# (delete it afterwards: a few GB).
#
#   tools/fresh-machine-test.sh            # the 45-minute budget is what it checks against
set -u
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
root=$(mktemp -d /var/tmp/ragvisor-fresh.XXXXXX)
git clone -q "$repo" "$root/clone"
export RAGVISOR_CACHE="$root/cache" GOCACHE="$root/go-build" GOMODCACHE="$root/go-mod" \
    GOPATH="$root/go" PIP_CACHE_DIR="$root/pip" MAVEN_OPTS="-Dmaven.repo.local=$root/m2"
echo "fresh-machine make test of $(git -C "$root/clone" rev-parse --short HEAD) in $root"
start=$(date +%s)
(cd "$root/clone" && make test) > "$root/make-test.log" 2>&1
rc=$?
minutes=$(awk -v s="$(( $(date +%s) - start ))" 'BEGIN { printf "%.1f", s / 60 }')
echo "make test: exit $rc after $minutes min (budget 45); log $root/make-test.log"
grep -E "^=+ .*(passed|failed|error).* =+$" "$root/make-test.log" | tail -1
exit $rc
