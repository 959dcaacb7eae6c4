# Shared by scripts/bench and scripts/bench-fleet (sourced): a work dir cleaned up on exit, starting servers and
# one wrk run. Expects SECONDS_PER_CASE, CONNS and THREADS to be set.

WORK=$(mktemp -d)
PIDS=()
CLEANUPS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in "${CLEANUPS[@]}"; do eval "$c" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME CMD...: runs CMD with stderr to $WORK/NAME.log, waits for "listening on ADDR", sets ADDR and PID.
start() {
  local name=$1; shift
  "$@" 2>"$WORK/$name.log" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 1 "${START_TRIES:-200}"); do
    ADDR=$(grep -o 'listening on [^ ]*' "$WORK/$name.log" | head -1 | sed 's/listening on //; s#http://##') || true
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1
}

# load URL TOKEN BODY [CONNECTIONS]: one wrk run; prints the BENCH_JSON line. TOKEN may be several,
# space-separated: the requests take them in turn.
load() {
  local token=$2 tokens=
  case "$2" in *" "*) token= tokens=$2 ;; esac
  BENCH_TOKEN=$token BENCH_TOKENS=$tokens BENCH_BODY=$3 wrk -t"$THREADS" -c"${4:-$CONNS}" -d"${SECONDS_PER_CASE}s" \
    -s scripts/bench.d/post.lua "$1" | grep '^BENCH_JSON' | sed 's/^BENCH_JSON //'
}
