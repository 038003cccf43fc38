#!/bin/sh
# @NAME@: Neo4j's @CLASS@ with lib/ on the class path, as the official bin/@NAME@ runs it.
# Written by ragvisor's tests/infra/neo4j_dist.py (the archive is assembled from Maven Central).
# NEO4J_HOME defaults to the folder above this script (symlinks resolved); NEO4J_CONF (the
# folder holding neo4j.conf, default $NEO4J_HOME/conf) is read by the bootloader itself;
# JAVA_HOME, when set, picks the Java (17 or 21); JAVA_OPTS go to the bootloader's JVM only
# (the server's JVM takes server.jvm.additional and the memory settings from neo4j.conf).
set -eu
if [ -z "${NEO4J_HOME:-}" ]; then
  NEO4J_HOME=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd -P)
fi
export NEO4J_HOME
if [ -n "${JAVA_HOME:-}" ]; then
  JAVA_CMD="$JAVA_HOME/bin/java"
else
  JAVA_CMD=java
fi
# shellcheck disable=SC2086 # JAVA_OPTS is a list of options
exec "$JAVA_CMD" ${JAVA_OPTS:-} -cp "$NEO4J_HOME/lib/*" @CLASS@ "$@"
