# Sourced by tools/build and tools/orbit: finds a JDK 25 and exports JAVA_HOME, or explains.
orbit_find_jdk() {
  local candidates=()
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
  candidates+=(/usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-25-jdk /usr/lib/jvm/java-25-openjdk-amd64 /usr/lib/jvm/jdk-25*)
  local c v
  for c in "${candidates[@]}"; do
    [ -x "$c/bin/java" ] || continue
    v=$("$c/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ "$v" = "25" ]; then export JAVA_HOME="$c"; return 0; fi
  done
  echo "orbit: JDK 25 not found. Orbit needs JDK 25 (Temurin 25: /usr/lib/jvm/temurin-25-jdk-amd64 on these machines)." >&2
  echo "orbit: install it, or set JAVA_HOME to a JDK 25. JAVA_HOME is now '${JAVA_HOME:-unset}'." >&2
  return 1
}
