#!/usr/bin/env bash
# Run the real Asterisk 22 that the e2e tests and the demo talk to, on 127.0.0.1 only.
#
#   asterisk.sh up       build (once) and start it, wait until ARI answers, print the version
#   asterisk.sh down     stop it (graceful "core stop now", then by pid) and unmount
#   asterisk.sh status   print whether it runs (exit 0) or not (exit 3)
#   asterisk.sh logs     tail its log (LINES=N to choose how much; "logs -f" to follow)
#
# VOICEBRIDGE_ASTERISK picks how (default chroot):
#   chroot     Debian sid's asterisk package in a debootstrap chroot cached outside the repo in
#              $VOICEBRIDGE_CACHE (default /var/cache/voicebridge), rebuilt only when its
#              completion marker is missing. What CI and `make test` use.
#   container  service "asterisk" of docker-compose.yml, host network: docker compose if a
#              Docker engine with the compose plugin answers, else Podman (docker/containers.sh
#              builds the image, without a registry).
#   auto       the chroot if it already runs, else a container if an engine answers, else the
#              chroot (`make demo`).
# Needs root (debootstrap, chroot, bind mounts; rootful Podman).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF_SRC="$REPO/asterisk_conf"
CACHE=${VOICEBRIDGE_CACHE:-/var/cache/voicebridge}
ROOT="$CACHE/asterisk-sid-chroot"
MARKER="$ROOT/.voicebridge-chroot-complete"   # written last: its presence means "complete"
PIDFILE="$CACHE/asterisk.pid"
MODEFILE="$CACHE/asterisk.mode"               # "docker" or "podman" while a container runs
CONTAINERS_SH="$REPO/docker/containers.sh"
HASHFILE="$CACHE/asterisk.confhash"
OUT="$CACHE/asterisk.out"
CONF_DIR=/etc/voicebridge                     # inside the chroot / container
ASTERISK_CONF="$CONF_DIR/asterisk.conf"
LOGFILE="$ROOT/var/log/asterisk/messages.log"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARI_URL=${ARI_URL:-http://127.0.0.1:8088}
ARI_AUTH=${ARI_AUTH:-voicebridge:voicebridge}
WAIT_S=${ASTERISK_WAIT_S:-60}

log() { printf 'asterisk.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

docker_answers() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 &&
        docker compose version >/dev/null 2>&1
}

# Prints what `up` starts: docker, podman or chroot (dies on a bad VOICEBRIDGE_ASTERISK, and when
# a container is required but no engine answers).
pick_engine() {
    local mode=${VOICEBRIDGE_ASTERISK:-chroot}
    [[ ${VOICEBRIDGE_NO_DOCKER:-} == 1 ]] && mode=chroot # the older switch
    case $mode in
    chroot) echo chroot; return ;;
    auto) running_pid >/dev/null && { echo chroot; return; } ;;
    container) ;;
    *) die "VOICEBRIDGE_ASTERISK=$mode: expected chroot, container or auto" ;;
    esac
    if docker_answers; then
        echo docker
    elif bash "$CONTAINERS_SH" available 2>/dev/null; then
        echo podman
    elif [[ $mode == container ]]; then
        bash "$CONTAINERS_SH" available || true
        die "VOICEBRIDGE_ASTERISK=container, but neither Docker nor Podman answers"
    else
        echo chroot
    fi
}

# The engine of the container we started (from $MODEFILE), or fails: the chroot then.
running_engine() { [[ -f $MODEFILE ]] && cat "$MODEFILE"; }

compose() {  # $1: engine; the rest: compose arguments
    local engine=$1
    shift
    # Without descriptors above 2: the engine's long-lived helpers (conmon, the Docker CLI's
    # plugins) must not inherit our lock or a caller's, which would then stay held.
    (
        for fd in $(ls "/proc/$BASHPID/fd"); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
        cd "$REPO"
        if [[ $engine == docker ]]; then
            exec docker compose "$@"
        else
            exec bash "$CONTAINERS_SH" compose "$@"
        fi
    )
}

# Prints the Asterisk version if ARI answers with our credentials.
ari_version() {
    curl -fsS --max-time 2 -u "$ARI_AUTH" "$ARI_URL/ari/asterisk/info" 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["system"]["version"])' 2>/dev/null
}

wait_for_ari() {  # $1: start timestamp; $2: pid to watch (empty under docker)
    local deadline=$((SECONDS + WAIT_S)) version
    while ((SECONDS < deadline)); do
        if version=$(ari_version); then
            log "Asterisk $version: ARI answers on $ARI_URL (up in $(elapsed "$1") s)"
            echo "$version"
            return 0
        fi
        if [[ -n $2 ]] && ! kill -0 "$2" 2>/dev/null; then
            log "Asterisk (pid $2) exited during startup"
            show_log_tail
            return 1
        fi
        sleep 0.25
    done
    log "ARI did not answer on $ARI_URL within ${WAIT_S} s"
    show_log_tail
    return 1
}

show_log_tail() {
    if [[ -f $LOGFILE ]]; then
        log "last lines of $LOGFILE:"
        tail -n 40 "$LOGFILE" >&2
    fi
    if [[ -s $OUT ]]; then
        log "last lines of $OUT:"
        tail -n 20 "$OUT" >&2
    fi
}

conf_hash() { (cd "$CONF_SRC" && find . -type f ! -name '*.md' ! -name '*.sh' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1); }

running_pid() {  # prints the pid of our Asterisk if it runs
    [[ -f $PIDFILE ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "asterisk .*-C $ASTERISK_CONF" && echo "$pid"
}

mounted_under_root() { findmnt -rn -o TARGET | grep -qE "^$ROOT(/|$)"; }

unmount_all() {
    local m
    for m in dev proc; do
        if mountpoint -q "$ROOT/$m" 2>/dev/null; then
            umount "$ROOT/$m" 2>/dev/null || umount -l "$ROOT/$m"
        fi
    done
}

build_chroot() {
    [[ -f $MARKER ]] && return 0
    [[ $EUID -eq 0 ]] || die "building the chroot needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (make system-deps)"
    mkdir -p "$CACHE"
    if [[ -e $ROOT ]]; then
        log "chroot $ROOT is incomplete (no marker): rebuilding"
        unmount_all
        # Never rm -rf through a live bind mount of /dev or /proc.
        mounted_under_root && die "something is still mounted under $ROOT; unmount it first"
        rm -rf --one-file-system "$ROOT"
    fi
    local t0
    t0=$(now)
    log "building the Asterisk chroot in $ROOT (debootstrap sid, about a minute)"
    debootstrap --variant=minbase --include=asterisk,asterisk-modules,asterisk-core-sounds-en \
        sid "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    chroot "$ROOT" asterisk -V >/dev/null || die "asterisk does not run inside $ROOT"
    date -u +%FT%TZ >"$MARKER"
    log "chroot built in $(elapsed "$t0") s"
}

install_conf() {
    rm -rf "$ROOT$CONF_DIR"
    mkdir -p "$ROOT$CONF_DIR"
    find "$CONF_SRC" -maxdepth 1 -type f -name '*.conf' -exec cp {} "$ROOT$CONF_DIR/" \;
    # /run is a tmpfs on a booted Debian; in the chroot it is empty. Recordings need their spool dir.
    mkdir -p "$ROOT/run/asterisk" "$ROOT/var/spool/asterisk/recording" "$ROOT/var/log/asterisk"
    conf_hash >"$HASHFILE"
}

mount_all() {
    local m
    for m in proc dev; do
        mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"
    done
}

start_chroot() {
    local t0 pid
    t0=$(now)
    install_conf
    mount_all
    if ari_version >/dev/null; then
        die "something else already answers ARI on $ARI_URL (another Asterisk?); stop it first"
    fi
    : >"$OUT"
    # -f: stay in the foreground so $! is Asterisk itself (chroot execs it) and we own its pid.
    # The daemon inherits no descriptor above 2: neither our lock (fd 9) nor a caller's (e.g.
    # `flock FILE asterisk.sh up`), or that lock would stay held as long as Asterisk runs. The
    # subshell execs setsid, which execs chroot, which execs Asterisk: $! is still its pid.
    (
        for fd in $(ls "/proc/$BASHPID/fd"); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
        exec setsid chroot "$ROOT" asterisk -f -C "$ASTERISK_CONF" </dev/null >>"$OUT" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$PIDFILE"
    log "started Asterisk, pid $pid"
    wait_for_ari "$t0" "$pid"
}

stop_chroot() {
    local pid i
    if pid=$(running_pid); then
        timeout 10 chroot "$ROOT" asterisk -C "$ASTERISK_CONF" -rx "core stop now" >/dev/null 2>&1 || true
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "Asterisk (pid $pid) ignored core stop; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 20; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped Asterisk (pid $pid)"
    else
        log "Asterisk is not running"
    fi
    rm -f "$PIDFILE"
    [[ -d $ROOT ]] && unmount_all
    return 0
}

container_up() {  # $1: engine
    local engine=$1 t0 version
    t0=$(now)
    if [[ $(running_engine) == "$engine" && -f $HASHFILE && $(<"$HASHFILE") == "$(conf_hash)" ]] &&
        version=$(ari_version); then
        log "already running ($engine container), config unchanged"
        echo "$version"
        return 0
    fi
    if [[ -z $(running_engine) ]] && ari_version >/dev/null; then
        die "something else already answers ARI on $ARI_URL (another Asterisk?); stop it first"
    fi
    [[ $engine == podman ]] && bash "$CONTAINERS_SH" build asterisk
    echo "$engine" >"$MODEFILE" # from here on, `down` removes what `up` leaves
    conf_hash >"$HASHFILE"
    # --force-recreate: Asterisk reads the configuration at start (a changed one needs a restart).
    if [[ $engine == docker ]]; then
        compose docker up -d --build --force-recreate asterisk >&2
    else
        compose podman up -d --no-build --force-recreate asterisk >&2
    fi
    wait_for_ari "$t0" ""
}

cmd_up() {
    local engine
    engine=$(running_engine) || engine=$(pick_engine) || exit 1
    if [[ $engine != chroot ]]; then
        container_up "$engine"
        return
    fi
    local pid
    if pid=$(running_pid); then
        # Restart rather than reload: transports, http and module changes do not reload reliably.
        if [[ -f $HASHFILE && $(<"$HASHFILE") == "$(conf_hash)" ]]; then
            local version
            version=$(ari_version) || die "Asterisk runs (pid $pid) but ARI does not answer; try: $0 down"
            log "already running (pid $pid), config unchanged"
            echo "$version"
            return 0
        fi
        [[ $EUID -eq 0 ]] || die "config changed; restarting Asterisk needs root"
        log "config changed: restarting"
        stop_chroot
    fi
    [[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot and bind mounts)"
    build_chroot
    start_chroot
}

cmd_down() {
    local engine
    if engine=$(running_engine); then
        compose "$engine" stop -t 10 asterisk >&2  # `up` recreates it
        rm -f "$MODEFILE"
        log "stopped the Asterisk container ($engine)"
        return
    fi
    stop_chroot
}

cmd_status() {
    local version pid engine
    if engine=$(running_engine); then
        compose "$engine" ps # podman-compose takes no service name here
    elif pid=$(running_pid); then
        log "running, pid $pid"
    else
        log "not running"
        return 3
    fi
    if version=$(ari_version); then
        log "ARI answers: Asterisk $version"
    else
        log "ARI does not answer on $ARI_URL"
        return 3
    fi
}

cmd_logs() {
    local engine
    if engine=$(running_engine); then
        compose "$engine" exec -T asterisk tail -n "${LINES:-100}" "$@" /var/log/asterisk/messages.log
        return
    fi
    [[ -f $LOGFILE ]] || die "no log yet at $LOGFILE"
    tail -n "${LINES:-100}" "$@" "$LOGFILE"
}

exec 9>>"${TMPDIR:-/tmp}/voicebridge-asterisk-sh.lock"  # not the lock tests hold around it
flock -w 300 9 || die "another asterisk.sh is running"

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
logs) shift; cmd_logs "$@" ;;
*) echo "usage: $0 {up|down|status|logs [-f]}" >&2; exit 2 ;;
esac
