# Sourced by the scripts that test against a running local-api (scripts/api-contract,
# scripts/client-test).

# start_local_api BIN DIR: starts BIN (local-api) on a free loopback port with a fresh data
# directory DIR/data, its stdout in DIR/server.out and its log in DIR/server.log; sets
# `local_api_pid` and `api` (its URL, read from its listening line, at most 30 s). The caller
# stops it (kill "$local_api_pid") on exit.
start_local_api() {
  local bin=$1 dir=$2
  # Port 0: the server binds a free port and prints it.
  "$bin" --data-dir "$dir/data" --port 0 >"$dir/server.out" 2>"$dir/server.log" &
  local_api_pid=$!
  api=
  for _ in $(seq 150); do
    api=$(sed -n 's|^local-api listening on \(http://[0-9.]*:[0-9]*\).*|\1|p' "$dir/server.out")
    [ -n "$api" ] && return 0
    kill -0 "$local_api_pid" 2>/dev/null || break
    sleep 0.2
  done
  cat "$dir/server.out" "$dir/server.log" >&2
  echo "local-api did not start" >&2
  return 1
}
