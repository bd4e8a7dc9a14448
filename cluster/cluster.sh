#!/usr/bin/env bash
# A voicebridge cluster on this machine: Kamailio (dispatcher) in front of N nodes, each one
# Asterisk + one `voicebridge serve --standins`, and one Redis shared by all nodes.
#
#   cluster.sh up [N]             start Redis, N nodes (default 2) and Kamailio; wait until every
#                                 node is ready and the dispatcher has every node active
#   cluster.sh down               stop everything started by `up` (by pid)
#   cluster.sh status             processes, the dispatcher's view (flags, calls in progress per
#                                 node) and the node registry
#   cluster.sh call [N] [S]       place N test calls (default 1) of S seconds each (default 10)
#                                 through the proxy with sipp; prints which node answered each
#   cluster.sh disable I          no new calls to node I (dispatcher state D: not probed, not chosen)
#   cluster.sh enable I           node I takes new calls again (state A)
#   cluster.sh drain I            SIGTERM node I's voicebridge (graceful drain)
#   cluster.sh kill-asterisk I    SIGKILL node I's Asterisk
#   cluster.sh start-asterisk I   (re)start node I's Asterisk
#   cluster.sh start-voicebridge I  (re)start node I's voicebridge
#   cluster.sh add-node I         start node I (Asterisk + voicebridge), then put it in the proxy's set
#   cluster.sh remove-node I      take node I out of the proxy's set (no new calls), then drain it
#
# Addresses: all on loopback, 127.0.77.0/24 (Linux answers on all of 127/8 without adding them):
# Redis 127.0.77.1:6379, Kamailio 127.0.77.10:5060, node I on 127.0.77.(10+I) with the
# standard ports (SIP 5060, ARI 8088, AudioSocket 9092, admin 9180), so nothing collides with the
# shared Asterisk on 127.0.0.1 or between nodes, and no namespace has to be created or cleaned.
# Asterisk: the chroot binary of asterisk_conf/asterisk.sh (built by `make asterisk-up`) with
# each node's own config (/etc/voicebridge-cluster-nodeI in the chroot) and state dirs.
# State, logs and pids: $CLUSTER_DIR (default /tmp/voicebridge-cluster).
# Needs root (chroot, bind mounts).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$REPO/cluster"
DIR=${CLUSTER_DIR:-/tmp/voicebridge-cluster}
CACHE=${VOICEBRIDGE_CACHE:-/var/cache/voicebridge}
ROOT="$CACHE/asterisk-sid-chroot"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
NET=${CLUSTER_NET:-127.0.77}
PROXY_IP="$NET.10"
PROXY_PORT=5060
REDIS_IP="$NET.1"
REDIS_PORT=6379
DS_PING_S=${DS_PING_S:-2}
FR_TIMER_MS=${FR_TIMER_MS:-1500}
DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S:-60}
WAIT_S=${CLUSTER_WAIT_S:-60}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

node_ip() { echo "$NET.$((10 + $1))"; }
node_conf() { echo "/etc/voicebridge-cluster-node$1"; }          # inside the chroot
node_state() { echo "/var/lib/voicebridge-cluster/node$1"; }     # inside the chroot
ctl_socket() { echo "$DIR/kamailio_ctl"; }
# The node in the dispatcher's set: its OPTIONS probes ask for the extension `vbready`, which the
# node's health follower keeps in its dialplan only while its voicebridge is ready (/readyz).
ds_uri() { echo "sip:vbready@$(node_ip "$1"):5060"; }

alive() {  # $1: pid file; prints the pid if that process runs
    [[ -f $1 ]] || return 1
    local pid
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Starts "$@" in its own session, without our descriptors above 2 (a caller's lock must not stay
# held by a daemon), output to $1, pid to $2.
spawn() {
    local out=$1 pidfile=$2
    shift 2
    (
        for fd in $(ls "/proc/$BASHPID/fd"); do ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null; done
        cd "$REPO"
        exec setsid "$@" </dev/null >>"$out" 2>&1
    ) &
    echo $! >"$pidfile"
}

stop_pid() {  # $1: pid file, $2: what; TERM, then KILL after 10 s
    local pid i
    if pid=$(alive "$1"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && { log "$2 (pid $pid) ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
        log "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

fill() {  # $1: template, $2: output, then NAME=value pairs
    local src=$1 dst=$2 text kv
    shift 2
    text=$(<"$src")
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    [[ $text == *@[A-Z_]*@* ]] && grep -o '@[A-Z_]*@' <<<"$text" | sort -u | grep -q . &&
        die "$src: unfilled placeholder(s): $(grep -o '@[A-Z_]*@' <<<"$text" | sort -u | tr '\n' ' ')"
    printf '%s\n' "$text" >"$dst"
}

wait_until() {  # $1: what, then a command that succeeds when done
    local what=$1 deadline=$((SECONDS + WAIT_S))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what: not within ${WAIT_S} s (logs in $DIR)"
        sleep 0.2
    done
}

start_redis() {
    alive "$DIR/redis.pid" >/dev/null && return 0
    spawn "$DIR/redis.log" "$DIR/redis.pid" redis-server --bind "$REDIS_IP" --port "$REDIS_PORT" \
        --save "" --appendonly no --protected-mode no
    wait_until "Redis on $REDIS_IP:$REDIS_PORT" redis-cli -h "$REDIS_IP" -p "$REDIS_PORT" ping
    log "Redis on $REDIS_IP:$REDIS_PORT (pid $(<"$DIR/redis.pid"))"
}

install_node_conf() {  # $1: node number
    local i=$1 conf state f
    conf="$ROOT$(node_conf "$i")"
    state="$ROOT$(node_state "$i")"
    rm -rf "$conf"
    mkdir -p "$conf" "$state"/{run,spool/recording,log,db} "$DIR/node$i"
    # The shared Asterisk's configuration, then this node's own files over it.
    find "$REPO/asterisk_conf" -maxdepth 1 -type f -name '*.conf' -exec cp {} "$conf/" \;
    for f in "$HERE"/node/*.conf; do
        fill "$f" "$conf/$(basename "$f")" NODE_NAME="node$i" NODE_IP="$(node_ip "$i")" \
            PROXY_IP="$PROXY_IP" NODE_CONF="$(node_conf "$i")" NODE_STATE="$(node_state "$i")"
    done
    fill "$HERE/node/voicebridge.toml" "$DIR/node$i/voicebridge.toml" NODE_IP="$(node_ip "$i")" NODE_NAME="node$i" \
        REDIS_IP="$REDIS_IP" REDIS_PORT="$REDIS_PORT" DRAIN_TIMEOUT_S="$DRAIN_TIMEOUT_S"
}

ari_answers() { curl -fsS --max-time 1 -u voicebridge:voicebridge "http://$(node_ip "$1"):8088/ari/asterisk/info"; }
node_ready() { curl -fsS --max-time 1 "http://$(node_ip "$1"):9180/readyz"; }

start_asterisk() {  # $1: node number
    local i=$1
    alive "$DIR/node$i/asterisk.pid" >/dev/null && return 0
    [[ -f $ROOT/.voicebridge-chroot-complete ]] || die "no Asterisk chroot in $ROOT: run make asterisk-up once"
    local m
    for m in proc dev; do mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"; done
    rm -f "$ROOT$(node_state "$i")/run/"*
    spawn "$DIR/node$i/asterisk.out" "$DIR/node$i/asterisk.pid" \
        chroot "$ROOT" asterisk -f -C "$(node_conf "$i")/asterisk.conf"
    wait_until "node $i's Asterisk ARI" ari_answers "$i"
    log "node $i: Asterisk on $(node_ip "$i") (pid $(<"$DIR/node$i/asterisk.pid"))"
}

start_voicebridge() {  # $1: node number
    local i=$1
    alive "$DIR/node$i/voicebridge.pid" >/dev/null && return 0
    spawn "$DIR/node$i/voicebridge.log" "$DIR/node$i/voicebridge.pid" \
        "$PYTHON" -m bridge.cli serve --standins --config "$DIR/node$i/voicebridge.toml"
    wait_until "node $i's voicebridge ready" node_ready "$i"
    log "node $i: voicebridge ready on $(node_ip "$i") (pid $(<"$DIR/node$i/voicebridge.pid"))"
}

ast_rx() {  # $1: node number, $2: an Asterisk CLI command for that node's Asterisk
    chroot "$ROOT" asterisk -C "$(node_conf "$1")/asterisk.conf" -rx "$2"
}

# Node $1's health follower (runs until killed): keeps the extension vbready@vb-health in the
# node's dialplan while its voicebridge's /readyz answers 200, removes it otherwise (draining,
# stopped, ARI lost). Asterisk answers an OPTIONS for sip:vbready@node 200 while the extension
# exists and 404 otherwise, so the proxy's probes see the voicebridge, not only the Asterisk.
# Acts on a change of readiness or of the Asterisk process (a restarted one forgot the extension).
follow_health() {
    local i=$1 want have="" ready
    while :; do
        if node_ready "$i" >/dev/null 2>&1; then ready=1; else ready=0; fi
        want="$ready:$(alive "$DIR/node$i/asterisk.pid" || echo down)"
        if [[ $want != "$have" && $want != *:down ]]; then
            if ((ready)); then
                ast_rx "$i" "dialplan add extension vbready,1,Hangup() into vb-health replace" >/dev/null 2>&1
            else
                ast_rx "$i" "dialplan remove extension vbready@vb-health" >/dev/null 2>&1
                true  # removing what is not there fails, and is fine
            fi && have=$want && log "node $i: voicebridge ready=$ready, probe answers $( ((ready)) && echo 200 || echo 404)"
        fi
        sleep 0.5
    done
}

start_health() {  # $1: node number
    alive "$DIR/node$1/health.pid" >/dev/null && return 0
    spawn "$DIR/node$1/health.log" "$DIR/node$1/health.pid" bash "$HERE/cluster.sh" follow-health "$1"
}

kamcmd_() { kamcmd -s "unix:$(ctl_socket)" "$@"; }

# Prints "uri flags load" per dispatcher destination (flags: AP active+probing, IP inactive,
# DX disabled, ...; load: the calls in progress the proxy routed there, DLGLOAD).
ds_state() {
    kamcmd_ dispatcher.list | awk '/URI:/ {u=$2} /FLAGS:/ {f=$2} /DLGLOAD:/ {print u, f, $2}'
}

all_active() {  # every node of 1..$1 active in the dispatcher
    local state
    state=$(ds_state) || return 1
    [[ $(grep -c ' A' <<<"$state") -eq $1 ]]
}

start_kamailio() {  # $1: number of nodes
    local n=$1 i
    alive "$DIR/kamailio.pid" >/dev/null && return 0
    : >"$DIR/dispatcher.list"
    for ((i = 1; i <= n; i++)); do
        echo "1 $(ds_uri "$i") 0 0 duid=node$i" >>"$DIR/dispatcher.list"
    done
    fill "$HERE/kamailio.cfg" "$DIR/kamailio.cfg" PROXY_IP="$PROXY_IP" PROXY_PORT="$PROXY_PORT" \
        DISPATCHER_LIST="$DIR/dispatcher.list" DS_PING_S="$DS_PING_S" FR_TIMER_MS="$FR_TIMER_MS" \
        CTL_SOCKET="$(ctl_socket)"
    kamailio -c -f "$DIR/kamailio.cfg" >"$DIR/kamailio-check.log" 2>&1 ||
        { tail -n 20 "$DIR/kamailio-check.log" >&2; die "kamailio.cfg does not check"; }
    spawn "$DIR/kamailio.log" "$DIR/kamailio.pid" kamailio -DD -E -f "$DIR/kamailio.cfg" -Y "$DIR"
    wait_until "Kamailio with all $n nodes active" all_active "$n"
    log "Kamailio on $PROXY_IP:$PROXY_PORT (pid $(<"$DIR/kamailio.pid")), all $n nodes active"
}

cmd_up() {
    local n=${1:-2} i
    [[ $n =~ ^[1-9]$ ]] || die "up N: N is 1..9, got $n"
    [[ $EUID -eq 0 ]] || die "needs root (chroot, bind mounts)"
    command -v kamailio >/dev/null || die "kamailio is not installed (make system-deps)"
    mkdir -p "$DIR"
    echo "$n" >"$DIR/nodes"
    alive "$DIR/kamailio.pid" >/dev/null || rm -f "$DIR"/*.log "$DIR"/node*/*.log "$DIR"/node*/*.out
    start_redis
    for ((i = 1; i <= n; i++)); do install_node_conf "$i"; start_asterisk "$i"; done
    for ((i = 1; i <= n; i++)); do start_voicebridge "$i"; start_health "$i"; done
    start_kamailio "$n"
}

cmd_down() {
    local n i
    n=$(cat "$DIR/nodes" 2>/dev/null || echo 9)
    stop_pid "$DIR/kamailio.pid" Kamailio
    for ((i = 1; i <= n; i++)); do
        # SIGINT: voicebridge stops at once (SIGTERM would drain).
        if pid=$(alive "$DIR/node$i/voicebridge.pid"); then kill -INT "$pid" 2>/dev/null || true; fi
        stop_pid "$DIR/node$i/health.pid" "node $i's health follower"
        stop_pid "$DIR/node$i/voicebridge.pid" "node $i's voicebridge"
        stop_pid "$DIR/node$i/asterisk.pid" "node $i's Asterisk"
    done
    stop_pid "$DIR/redis.pid" Redis
}

cmd_status() {
    local n i p
    n=$(cat "$DIR/nodes" 2>/dev/null) || { log "not up"; return 3; }
    for p in redis kamailio; do echo "$p: $(alive "$DIR/$p.pid" || echo down)"; done
    for ((i = 1; i <= n; i++)); do
        echo "node$i $(node_ip "$i"): asterisk $(alive "$DIR/node$i/asterisk.pid" || echo down)," \
            "voicebridge $(alive "$DIR/node$i/voicebridge.pid" || echo down)," \
            "health follower $(alive "$DIR/node$i/health.pid" || echo down)"
    done
    echo "dispatcher (uri flags calls-in-progress):"
    ds_state | sed 's/^/  /'
    local key
    echo "registry (Redis $REDIS_IP:$REDIS_PORT):"
    for key in $(redis-cli -h "$REDIS_IP" -p "$REDIS_PORT" --scan --pattern 'voicebridge:node:*' | sort); do
        echo "  $key: $(redis-cli -h "$REDIS_IP" -p "$REDIS_PORT" hgetall "$key" | paste -sd' ')"
    done
}

signal_node() {  # $1: signal, $2: pid file, $3: what
    local pid
    pid=$(alive "$2") || die "$3 is not running"
    kill "-$1" "$pid"
    log "sent SIG$1 to $3 (pid $pid)"
}

ds_reload() {  # the dispatcher refuses a reload within 5 s of the last one (reload_delta): retry
    local deadline=$((SECONDS + 15)) out
    until out=$(kamcmd_ dispatcher.reload 2>&1) && [[ $out != *error* ]]; do  # kamcmd exits 0 on "500 - Ongoing reload"
        ((SECONDS < deadline)) || die "dispatcher.reload: $out"
        sleep 0.5
    done
}

cmd_add_node() {
    local i=$1 n
    n=$(cat "$DIR/nodes")
    install_node_conf "$i"
    start_asterisk "$i"
    start_voicebridge "$i"
    start_health "$i"
    grep -q "$(ds_uri "$i") " "$DIR/dispatcher.list" ||
        echo "1 $(ds_uri "$i") 0 0 duid=node$i" >>"$DIR/dispatcher.list"
    ((i > n)) && echo "$i" >"$DIR/nodes"
    ds_reload
    log "node $i is in the proxy's set"
}

cmd_remove_node() {
    local i=$1
    sed -i "\|$(ds_uri "$i") |d" "$DIR/dispatcher.list"
    ds_reload
    log "node $i is out of the proxy's set; draining it"
    if alive "$DIR/node$i/voicebridge.pid" >/dev/null; then
        signal_node TERM "$DIR/node$i/voicebridge.pid" "node $i's voicebridge"
    fi
}

ds_set_state() {  # $1: a (active) or d (disabled), $2: node number
    kamcmd_ dispatcher.set_state "$1" 1 "$(ds_uri "$2")" >/dev/null
    log "node $2: dispatcher state $1"
}

cmd_call() {  # $1: number of calls, $2: seconds each
    local n=${1:-1} hold=${2:-10} work rc=0 ci
    [[ $n =~ ^[0-9]+$ && $hold =~ ^[0-9]+$ && $n -ge 1 ]] || die "call [N] [S]: whole numbers, got '$n' '$hold'"
    alive "$DIR/kamailio.pid" >/dev/null || die "the cluster is not up (cluster.sh up)"
    work=$(mktemp -d "$DIR/call.XXXXXX")
    # The test's caller scenario without its recorded audio: the caller stays silent.
    sed -e "s|@HOLD_MS@|$((hold * 1000))|" -e "s|@ANSWER_TIMEOUT_MS@|15000|" -e '/<nop>/,/<\/nop>/d' \
        "$HERE/sipp/uac_call.xml" >"$work/call.xml"
    log "$n call(s) of $hold s through $PROXY_IP:$PROXY_PORT (sipp; its files in $work)"
    sipp "$PROXY_IP:$PROXY_PORT" -sf "$work/call.xml" -s 100 -i "$NET.3" -p 5080 -mi "$NET.3" \
        -m "$n" -r 1 -l "$n" -nostdin -timeout "$((n + hold + 60))s" -timeout_error \
        -trace_err -error_file "$work/errors.log" -trace_msg -message_file "$work/messages.log" \
        >"$work/screen.log" 2>&1 || rc=$?
    # Which node answered each call: the proxy's log line for its final answer (VBCLUSTER reply).
    for ci in $(grep -o '^Call-ID: .*' "$work/messages.log" | sort -u | cut -d' ' -f2 | tr -d '\r'); do
        grep "VBCLUSTER.* reply ci=$ci " "$DIR/kamailio.log" | tail -n 1 |
            awk -v ci="$ci" -v net="$NET." '{split($0, a, "code="); split(a[2], b, " src="); n = b[2];
                sub(net, "", n); printf "call %s: %s from node%d (%s)\n", ci, b[1], n - 10, b[2]}'
    done
    if ((rc == 0)); then log "all $n call(s) completed"; else log "sipp exited $rc: see $work/errors.log"; fi
    return "$rc"
}

node_arg() { [[ ${1:-} =~ ^[1-9]$ ]] || die "expected a node number 1..9, got '${1:-}'"; echo "$1"; }

case ${1:-} in
up) cmd_up "${2:-2}" ;;
down) cmd_down ;;
status) cmd_status ;;
call) cmd_call "${2:-1}" "${3:-10}" ;;
ds-state) ds_state ;;
disable) i=$(node_arg "${2:-}"); ds_set_state d "$i" ;;
enable) i=$(node_arg "${2:-}"); ds_set_state a "$i" ;;
follow-health) i=$(node_arg "${2:-}"); follow_health "$i" ;;
drain) i=$(node_arg "${2:-}"); signal_node TERM "$DIR/node$i/voicebridge.pid" "node $i's voicebridge" ;;
kill-asterisk) i=$(node_arg "${2:-}"); signal_node KILL "$DIR/node$i/asterisk.pid" "node $i's Asterisk" ;;
start-asterisk) i=$(node_arg "${2:-}"); start_asterisk "$i" ;;
start-voicebridge) i=$(node_arg "${2:-}"); start_voicebridge "$i" ;;
add-node) i=$(node_arg "${2:-}"); cmd_add_node "$i" ;;
remove-node) i=$(node_arg "${2:-}"); cmd_remove_node "$i" ;;
*) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
