#!/usr/bin/env bash
# voicebridge in containers with Podman (Debian's podman + runc) and podman-compose.
#
#   containers.sh available        exit 0 if Podman answers with our settings (else 1, says why)
#   containers.sh base             the local Debian base images (debootstrap + podman import), once
#   containers.sh build [SERVICE]  base images, then the images of docker-compose.yml (layer cache)
#   containers.sh compose ARGS...  podman-compose on docker-compose.yml with our settings
#
# Settings, all optional:
#   VOICEBRIDGE_STANDINS=1       add docker/compose.standins.yml (the bridge with the stand-ins)
#   VOICEBRIDGE_PROJECT=NAME     compose project (default voicebridge): container names NAME_*
#   VOICEBRIDGE_NETWORK=MODE     network_mode of every service (default host; ns:/run/netns/X)
#   VOICEBRIDGE_BASE_SID / VOICEBRIDGE_BASE_BOOKWORM   base images; set them to debian:sid and
#                                debian:bookworm-slim where a registry serves them (no debootstrap)
#   VOICEBRIDGE_HOST_CA=FILE     CA bundle pip trusts in the build (default the host's)
#   PODMAN_COMPOSE=PATH          podman-compose >= 1.1 (default: the one in .venv, from make install)
#
# Podman reads docker/containers.conf (CONTAINERS_CONF): runc with cgroupfs and no default ulimits,
# measured to work on these hosts where crun does not; the user's own containers.conf is not read
# and not changed. Needs root (debootstrap; rootful Podman).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VOICEBRIDGE_CACHE:-/var/cache/voicebridge}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_BASE=localhost/voicebridge-base
export CONTAINERS_CONF=${VOICEBRIDGE_CONTAINERS_CONF:-$REPO/docker/containers.conf}
export BUILDAH_FORMAT=docker # keeps HEALTHCHECK (the OCI format drops it)
export VOICEBRIDGE_BASE_SID=${VOICEBRIDGE_BASE_SID:-$LOCAL_BASE:sid}
export VOICEBRIDGE_BASE_BOOKWORM=${VOICEBRIDGE_BASE_BOOKWORM:-$LOCAL_BASE:bookworm}
export VOICEBRIDGE_NETWORK=${VOICEBRIDGE_NETWORK:-host}
HOST_CA=${VOICEBRIDGE_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}

log() { printf 'containers.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cmd_available() {
    command -v podman >/dev/null 2>&1 || { log "podman is not installed (make system-deps)"; return 1; }
    command -v runc >/dev/null 2>&1 || { log "runc is not installed (make system-deps)"; return 1; }
    podman info >/dev/null 2>&1 || { log "podman info fails: $(podman info 2>&1 | tail -n 1)"; return 1; }
    compose_exe >/dev/null || return 1
}

# Prints the podman-compose to use. 1.0.3 (Debian 12's) passes `--net PROJECT_default` after
# network_mode, so `host` silently becomes a bridge network, and it knows no `ns:` mode.
compose_exe() {
    local exe version seen=" "
    for exe in "${PODMAN_COMPOSE:-}" "$REPO/.venv/bin/podman-compose" "$(command -v podman-compose || true)"; do
        [[ -n $exe && -x $exe && $seen != *" $exe "* ]] || continue
        seen+="$exe "
        version=$("$exe" --version 2>/dev/null | sed -n 's/^podman-composer\{0,1\} version *\([0-9.]*\).*/\1/p' | head -n 1)
        if [[ -n $version ]] && printf '1.1\n%s\n' "$version" | sort -V -C; then
            echo "$exe"
            return 0
        fi
        log "$exe is podman-compose ${version:-of unknown version}; need >= 1.1"
    done
    log "no podman-compose >= 1.1 found: run make install (puts it into .venv) or set PODMAN_COMPOSE"
    return 1
}

# $1: suite (sid, bookworm). A minimal debootstrap root, without apt's caches, as a local image.
make_base() {
    local suite=$1 image=$LOCAL_BASE:$1 root t0
    podman image exists "$image" && return 0
    [[ $EUID -eq 0 ]] || die "building $image needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (make system-deps)"
    t0=$(now)
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/base-$suite.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "rm -rf --one-file-system '$root'" EXIT
    log "building $image: debootstrap --variant=minbase $suite (about 30 s)"
    debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >"$CACHE/debootstrap-$suite.log" 2>&1 ||
        { tail -n 30 "$CACHE/debootstrap-$suite.log" >&2; die "debootstrap $suite failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/*
    tar --one-file-system -C "$root" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
    rm -rf --one-file-system "$root"
    trap - EXIT
    log "$image imported in $(elapsed "$t0") s ($(podman image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f", $1 / 1e6}') MB)"
}

cmd_base() {
    # Both at once: debootstrap mostly waits for the mirror.
    local pids=() pid failed=0
    if [[ $VOICEBRIDGE_BASE_SID == "$LOCAL_BASE:sid" ]]; then make_base sid & pids+=($!); fi
    if [[ $VOICEBRIDGE_BASE_BOOKWORM == "$LOCAL_BASE:bookworm" ]]; then make_base bookworm & pids+=($!); fi
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    ((failed == 0)) || die "a base image could not be built (see above)"
}

compose() {
    local exe files=(-f "$REPO/docker-compose.yml")  # and global options
    exe=$(compose_exe) || exit 1
    [[ ${VOICEBRIDGE_STANDINS:-} == 1 ]] && files+=(-f "$REPO/docker/compose.standins.yml")
    # Podman runs healthchecks from systemd timers; without systemd it only logs errors.
    [[ -d /run/systemd/system ]] || files+=(--podman-run-args=--no-healthcheck)
    (cd "$REPO" && "$exe" --project-name "${VOICEBRIDGE_PROJECT:-voicebridge}" "${files[@]}" "$@")
}

cmd_build() {
    local t0
    cmd_available || exit 1
    cmd_base
    t0=$(now)
    # The RUN steps reach Debian and PyPI through the host's network, trusting the host's CAs
    # (a TLS-inspecting proxy's CA is often only there).
    local build_args="--network=host"
    [[ -s $HOST_CA ]] && build_args+=" --volume=$HOST_CA:/run/host-ca.crt:ro"
    compose --podman-build-args="$build_args" build "$@" >&2 || die "image build failed"
    log "images built in $(elapsed "$t0") s"
}

case ${1:-} in
available) cmd_available ;;
base) cmd_base ;;
build) shift; cmd_build "$@" ;;
compose) shift; compose "$@" ;;
*) echo "usage: $0 {available|base|build [SERVICE...]|compose ARGS...}" >&2; exit 2 ;;
esac
