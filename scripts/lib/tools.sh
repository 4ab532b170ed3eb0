# Sourced by the test and benchmark scripts: every tool they install, each in one function,
# pinned, installed on first use and again only when its pins change (a stamp file beside it
# holds the pins it was installed from). `install_tools` installs them all: scripts/test runs
# it in the background while the Rust code compiles, since installing is network-bound and
# compiling is CPU-bound (on a fresh 2-core machine the installs take about 4 minutes).
# Each function is safe to call again once installed (a few milliseconds), never twice at once.

# ensure_venv DIR REQUIREMENTS CONSTRAINTS LABEL: a virtualenv with REQUIREMENTS installed,
# every package, transitive ones included, pinned by CONSTRAINTS (pip freeze), so a new
# release on PyPI cannot change what the tests run with.
ensure_venv() {
  local dir=$1 requirements=$2 constraints=$3 label=$4
  local stamp="$dir/.requirements-installed"
  if [ ! -x "$dir/bin/python" ] || ! cat "$requirements" "$constraints" | cmp -s - "$stamp"; then
    echo "== installing $label into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" -c "$constraints"
    cat "$requirements" "$constraints" >"$stamp"
  fi
}

# The Python test tools (moto, the Lambda event fixtures' helpers...): ./.venv.
ensure_test_tools() {
  ensure_venv .venv tests/requirements.txt tests/constraints.txt "Python test tools"
}
# The SAM CLI and cfn-lint (aws-sam-cli pins an older boto3, hence a virtualenv of its own).
ensure_sam_tools() {
  ensure_venv .venv-sam infra/requirements.txt infra/constraints.txt "SAM template tools"
}
# checkov, the infrastructure scanner (it pins boto3 apart from SAM's).
ensure_checkov() {
  ensure_venv .venv-checkov infra/requirements-checkov.txt infra/constraints-checkov.txt checkov
}
# schemathesis, for scripts/api-contract.
ensure_api_contract_tools() {
  ensure_venv .venv-api tests/requirements-api.txt tests/constraints-api.txt "the API contract tools"
}
# cargo-lambda and zig, for scripts/build-lambdas, and the aarch64 standard library of the
# pinned toolchain (rust-toolchain.toml; adding an installed target is a no-op).
ensure_lambda_tools() {
  ensure_venv .venv-lambda infra/requirements-lambda.txt infra/constraints-lambda.txt "cargo-lambda and zig"
  rustup target add --toolchain "$(pinned_toolchain)" aarch64-unknown-linux-gnu
}
pinned_toolchain() {
  sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml
}

# ensure_npm DIR: DIR/node_modules exactly as DIR/package-lock.json pins it (npm ci).
ensure_npm() {
  local dir=$1
  local stamp="$dir/node_modules/.package-lock-installed"
  if [ ! -d "$dir/node_modules" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
    echo "== npm ci ($dir)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
  fi
}
# The generated clients' tools: the node ones (Redocly, Spectral, openapi-ts, tsc) and the
# Python generator, for scripts/client-test.
ensure_client_tools() {
  ensure_npm tests/client
  ensure_venv .venv-client tests/client/requirements.txt tests/client/constraints.txt "the Python client generator"
}
# Debian's chromium and the pinned playwright-core, for scripts/browser-test.
ensure_browser_tools() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (Debian package)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  ensure_npm tests/browser
}
# A nightly toolchain and cargo-fuzz (pinned), for the fuzz step; the harness lives outside
# the workspace.
ensure_fuzz_tools() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
  fi
}

# Everything the test command installs, one after the other.
install_tools() {
  ensure_test_tools
  ensure_sam_tools
  ensure_checkov
  ensure_api_contract_tools
  ensure_client_tools
  ensure_browser_tools
  ensure_lambda_tools
  ensure_fuzz_tools
}
