# Sourced by ./gmem and ./run-tests: finds a JDK >= 25 and exports JAVA_HOME for it.
# Order: $JAVA_HOME when it is >= 25, then the usual install places.

jdk_major() {
    # Prints the feature version of the JDK at $1, or nothing.
    local release="$1/release"
    [ -x "$1/bin/java" ] || return 0
    if [ -f "$release" ]; then
        sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$release"
    else
        "$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1
    fi
}

find_jdk25() {
    local candidate major
    for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/* /usr/java/* /opt/java/* /opt/jdk* "$HOME"/.sdkman/candidates/java/* "$HOME"/.jdks/*; do
        [ -n "$candidate" ] && [ -d "$candidate" ] || continue
        major=$(jdk_major "$candidate")
        if [ -n "$major" ] && [ "$major" -ge 25 ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

if ! JAVA_HOME=$(find_jdk25); then
    echo "guestmemfd needs a JDK 25 or newer (java.lang.foreign) and found none." >&2
    echo "Install one, e.g. 'apt-get install temurin-25-jdk' or 'openjdk-25-jdk', or set JAVA_HOME to it." >&2
    exit 1
fi
export JAVA_HOME
export PATH="$JAVA_HOME/bin:$PATH"

if ! command -v mvn >/dev/null 2>&1; then
    echo "guestmemfd builds with Maven 3.8 or newer and found no 'mvn'." >&2
    echo "Install it, e.g. 'apt-get install maven'." >&2
    exit 1
fi
