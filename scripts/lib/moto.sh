# Sourced by scripts/test and scripts/bench-aws: the pinned Python test tools in ./.venv, and
# moto's DynamoDB/KMS API server on a free loopback port (tests/moto_server.py), stopped when
# the calling script exits. After `start_moto`, SUPPORT_ACCESS_TEST_AWS_ENDPOINT is moto.

. "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
venv=.venv
ensure_test_venv() {
  ensure_test_tools
  export SUPPORT_ACCESS_TEST_PYTHON="$PWD/$venv/bin/python"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until GET $1 answers (at most $2 tries, 0.2 s apart), or fails saying to read $3.
wait_for() {
  "$venv/bin/python" - "$1" "$2" "$3" <<'PY'
import sys, time, urllib.request
for _ in range(int(sys.argv[2])):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(f"{sys.argv[1]} did not answer; see {sys.argv[3]}")
PY
}

start_moto() {
  mkdir -p target
  local port
  port=$(free_port)
  "$venv/bin/python" tests/moto_server.py -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
  moto_pid=$!
  trap 'kill "$moto_pid" ${proxy_pid:-} 2>/dev/null || true' EXIT
  wait_for "http://127.0.0.1:$port/moto-api/" 150 target/moto.log
  export SUPPORT_ACCESS_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
  echo "== moto server on $SUPPORT_ACCESS_TEST_AWS_ENDPOINT"
}
