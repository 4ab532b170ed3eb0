"""Cold start of each Lambda function's release binary against a loopback Lambda Runtime API,
beside an empty `lambda_runtime` hello function built with the same profile.

usage: cold_start.py RUNS BIN_DIR ENV_FILE [BEFORE_BIN_DIR BEFORE_ENV_FILE]
  ENV_FILE: the `export NAME=value` lines of `local-api setup-aws` (tables, keys, secrets), the
  functions' whole configuration beside this process's AWS_* (endpoint, region, credentials);
  see scripts/bench-cold-start, which sets it up on moto. With a second set (an older build),
  the sets run their rounds side by side, one process at a time: each function of one set starts
right after (or, in the next round, right before) the same function of the other, so a change
of load falls on both alike. A function the older build lacks is skipped, and said so. The two
are compared as ratios to each set's hello function, as the gap from the process's first poll
to its first response (set-up the first request waited for, and the handler), and paired: the
median over rounds of this build's first response over the older build's, started back to back.
The load average is printed: on a loaded machine read the paired quotients.

For every run of every binary: a fresh process with the Lambda environment, one event queued.
Measured from just before the process is spawned to (a) its first `GET .../invocation/next`
(init: the runtime and whatever the function does before it asks for work) and (b) the
moment its response for that event arrives (first response). The same event is then served
once more, warm, and timed from that poll to its answer (warm response: what the handler's own
work costs once set up; a function whose job changed, not its cold start, shows it here, so
the first response less the warm one is the cold start's own cost). Then VmHWM (peak RSS) is
read from /proc while the process waits for its next event, and it is killed. A process that exits,
reports an error or answers an HTTP event with a non-2xx status stops the bench: a function
that cannot serve must never show as a fast one. Prints median and p90 of each, the ratio of
the medians to the hello function's (of the same set), the stripped size and the peak RSS.
"""
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def api_event(method, path, sub=None, groups=None, body=None, query="", headers=None):
    v = fixture("apigw_v2_jwt_authorizer.json")
    v["rawPath"] = path
    v["rawQueryString"] = query
    v["requestContext"]["http"]["method"] = method
    v["requestContext"]["http"]["path"] = path
    claims = v["requestContext"]["authorizer"]["jwt"]["claims"]
    if sub is None:
        del v["requestContext"]["authorizer"]
    else:
        claims["sub"] = sub
        if groups is None:
            claims.pop("cognito:groups", None)
        else:
            claims["cognito:groups"] = groups
    if body is not None:
        v["body"] = body
    for k, val in (headers or {}).items():
        v["headers"][k] = val
    return v


def authorizer_event(token, method, path):
    v = fixture("apigw_v2_custom_authorizer_v2.json")
    v["rawPath"] = path
    v["routeArn"] = f"arn:aws:execute-api:us-east-1:123456789012:abcdef123/$default/{method}{path}"
    v["requestContext"]["http"]["method"] = method
    v["requestContext"]["http"]["path"] = path
    v["identitySource"] = [f"Bearer {token}"]
    v["headers"]["authorization"] = f"Bearer {token}"
    return v


SCHEDULED = {
    "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
    "source": "aws.events", "account": "123456789012", "time": "2026-11-25T12:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/support-access-checkpoint"], "detail": {},
}


class Api:
    """One loopback Runtime API; one function process at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.event = None
        self.polls = 0
        self.t_next = self.t_next2 = None
        self.t_response = self.t_response2 = None
        self.response = self.response2 = None
        self.repolled = False
        self.done = threading.Event()
        self.done2 = threading.Event()
        self.killed = threading.Event()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self.reply(404)
                with api.lock:
                    n = api.polls
                    api.polls += 1
                    if n == 0:
                        api.t_next = time.perf_counter()
                    elif n == 1:
                        api.t_next2 = time.perf_counter()
                    event = api.event
                if n > 1:
                    # The next event never comes: the process is killed while it waits here.
                    api.repolled = True
                    api.killed.wait(30)
                    self.close_connection = True
                    return
                deadline = int(time.time() * 1000) + 30_000
                self.reply(200, json.dumps(event).encode(), [
                    ("Lambda-Runtime-Aws-Request-Id", f"req-{n + 1}"),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                    ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"),
                    ("Lambda-Runtime-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
                    ("Content-Type", "application/json"),
                ])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/response") or self.path.endswith("/error") or self.path.endswith("/init/error"):
                    now, answer = time.perf_counter(), (self.path.rsplit("/", 1)[1], body)
                    second = "/req-2/" in self.path
                    if second:
                        api.t_response2, api.response2 = now, answer
                    else:
                        api.t_response, api.response = now, answer
                    self.reply(202, b'{"status":"OK"}')
                    (api.done2 if second else api.done).set()
                else:
                    self.reply(404)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"

    def run(self, binary, name, event, env):
        with self.lock:
            self.event, self.polls, self.t_next, self.t_response, self.response = event, 0, None, None, None
            self.t_next2, self.t_response2, self.response2 = None, None, None
            self.repolled = False
        self.done.clear()
        self.done2.clear()
        self.killed.clear()
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": self.addr,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/25/[$LATEST]bench",
            **env,
        }
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        for done in (self.done, self.done2):
            while not done.wait(0.01):
                if proc.poll() is not None:
                    raise SystemExit(
                        f"{binary}: exited ({proc.returncode}) before answering: {proc.stderr.read()[-600:]!r}")
                if time.monotonic() > deadline:
                    proc.kill()
                    raise SystemExit(f"{binary}: no answer within 60 s")
        # Let the process reach its next poll (the peak after the first event), then read it.
        for _ in range(2000):
            if self.repolled:
                break
            time.sleep(0.001)
        hwm = 0
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        proc.kill()
        proc.wait()
        proc.stderr.close()
        self.killed.set()
        response, failed = answered(*self.response)
        if failed:
            raise SystemExit(f"{binary}: {failed}")
        # The warm answer is not checked as the first is: the same event again may be refused
        # on purpose (a second revoke finds no consent); it is reported only when it succeeded.
        warm = (self.t_response2 - self.t_next2) * 1000 if not answered(*self.response2)[1] else None
        return (self.t_next - t0) * 1000, (self.t_response - t0) * 1000, warm, hwm, response


def answered(kind, body):
    """An invocation's answer (`kind` the Runtime API path it was posted to), parsed, and why it
    failed: an error posted, a body that is not JSON, or an HTTP answer outside 2xx (None when
    it succeeded)."""
    if kind != "response":
        return None, f"{kind}: {body[:300]!r}"
    try:
        response = json.loads(body or b"null")
    except ValueError:
        return None, f"not JSON: {body[:300]!r}"
    if isinstance(response, dict) and "statusCode" in response and not 200 <= response["statusCode"] < 300:
        return response, f"answered {response['statusCode']}: {body[:300]!r}"
    return response, None


def body_of(response):
    raw = response.get("body") if isinstance(response, dict) else None
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


FUNCTIONS = ("grant-consent", "get-consent", "mint-token", "authorizer", "introspect", "jwks", "query-audit",
             "access-log", "export-audit", "checkpoint", "revoke-consent", "expiry-recorder", "agent-requests",
             "user-requests", "operator", "request-expiry", "notifier", "sequencer")


def read_env(path):
    """The `export NAME=value` lines of `path` (what `local-api setup-aws` prints)."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                name, value = line[len("export "):].split("=", 1)
                env[name] = value
    return env


class Set:
    """One build's binaries, their configuration and their measurements."""

    def __init__(self, label, bin_dir, env_file):
        self.label, self.bin_dir = label, bin_dir
        self.env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        self.env.update(read_env(env_file))
        self.env["SUPPORT_ACCESS_GROUPS_CLAIM"] = "cognito:groups"
        self.env.setdefault("NOTIFICATION_BUS", "default")
        self.results = {}
        missing = [n for n in ("local-api", "examples/hello_lambda") if not os.path.exists(os.path.join(bin_dir, n))]
        if missing:
            raise SystemExit(f"not built in {bin_dir}: {', '.join(missing)}")
        # An older build lacks the functions added since (the sequencer...): those are skipped,
        # and said so, rather than stopping the comparison of the others.
        self.skipped = [n for n in FUNCTIONS if not os.path.exists(os.path.join(bin_dir, n))]
        if self.skipped:
            print(f"{label}: not in {bin_dir}, skipped: {', '.join(self.skipped)}", flush=True)
        for needed in ("grant-consent", "mint-token"):  # later events are made of their answers
            if needed in self.skipped:
                raise SystemExit(f"{label}: {needed} is needed by the rounds and not built in {bin_dir}")

    def round(self, api, turns, i):
        """One cold start of every binary, in an order where each event finds what it needs;
        with two sets, each start takes its turn from `turns` (the sets' starts alternate)."""

        def run(name, event, path=None):
            if name in self.skipped:
                return None
            path = path or os.path.join(self.bin_dir, name)
            with turns.turn(self):
                init, first, warm, hwm, response = api.run(path, name, event, self.env)
            r = self.results.setdefault(name, {"path": path, "init": [], "first": [], "warm": [], "cold": [], "hwm": []})
            r["init"].append(init)
            r["first"].append(first)
            if warm is not None:
                r["warm"].append(warm)
                r["cold"].append(first - warm)
            r["hwm"].append(hwm)
            return response

        alice = lambda m, p, **kw: api_event(m, p, sub="alice", **kw)  # noqa: E731
        run("hello_lambda", {"hello": i}, os.path.join(self.bin_dir, "examples", "hello_lambda"))
        granted = run("grant-consent", alice("POST", "/consents", body=json.dumps({"duration_seconds": 3600})))
        assert granted["statusCode"] == 201, granted
        consent = body_of(granted)
        run("get-consent", alice("GET", "/consents/current"))
        minted = run("mint-token", api_event("POST", "/tokens", sub="agent-7", groups="[support]", body=json.dumps(
            {"user_id": "alice", "reason": "ticket 4411: billing page broken"})))
        assert minted["statusCode"] == 201, minted
        token = body_of(minted)["access_token"]
        decided = run("authorizer", authorizer_event(token, "GET", "/orders"))
        assert decided is None or decided["isAuthorized"] is True, decided
        introspected = run("introspect", api_event("POST", "/introspect", sub="rs-1", groups="[introspect]",
                                                   body=f"token={token}",
                                                   headers={"content-type": "application/x-www-form-urlencoded"}))
        assert introspected is None or body_of(introspected)["active"] is True, introspected
        published = run("jwks", api_event("GET", "/.well-known/jwks.json"))
        assert published is None or body_of(published)["keys"]
        run("query-audit", api_event("GET", "/audit", sub="aud-1", groups="[auditor]", query="user_id=alice&limit=20"))
        run("access-log", alice("GET", "/me/access-log"))
        run("export-audit", api_event("GET", "/audit/export", sub="aud-1", groups="[auditor]", query="user_id=alice"))
        run("checkpoint", SCHEDULED)
        revoked = run("revoke-consent", alice("DELETE", "/consents/current"))
        assert revoked is None or revoked["statusCode"] == 204, revoked
        record = fixture("dynamodb_stream_consents.json")
        record["Records"][0]["dynamodb"]["OldImage"]["consent_id"] = {"S": consent["consent_id"]}
        run("expiry-recorder", record)
        # The rest only read (or find nothing to do), so every round finds the same state.
        run("agent-requests", api_event("GET", "/access-requests", sub="agent-7", groups="[support]"))
        run("user-requests", alice("GET", "/me/access-requests"))
        run("operator", api_event("GET", "/operator/emergency-stop", sub="op-1", groups="[operator]"))
        run("request-expiry", SCHEDULED)
        run("notifier", {"Records": []})  # nothing to publish: its set-up and the runtime alone
        run("sequencer", {"Records": []})  # no user named: its set-up and the runtime alone

    def ratios(self):
        base = self.results["hello_lambda"]
        base_init, base_first = statistics.median(base["init"]), statistics.median(base["first"])
        return {name: (statistics.median(r["init"]) / base_init, statistics.median(r["first"]) / base_first)
                for name, r in self.results.items()}

    def print(self):
        print(f"\n{self.label}: {self.bin_dir}")
        print(f"{'binary':16} {'init med':>9} {'p90':>7} {'x hello':>8} {'1st resp med':>13} {'p90':>7} "
              f"{'x hello':>8} {'warm med':>9} {'1st - warm':>11} {'x hello':>8} {'size MB':>8} {'peak RSS MB':>12}")
        ratios = self.ratios()
        for name, r in self.results.items():
            init, first = statistics.median(r["init"]), statistics.median(r["first"])
            size = os.path.getsize(r["path"]) / 1e6
            hwm = max(r["hwm"]) / 1024
            warm, cold_ms, cold = median_or_none(r["warm"]), median_or_none(r["cold"]), self.cold_ratio(name)
            warm_s = "-" if warm is None else f"{warm:.1f}ms"
            cold_s = "-" if cold_ms is None else f"{cold_ms:.1f}ms"
            ratio_s = "-" if cold is None else f"{cold:.2f}x"
            print(f"{name:16} {init:8.1f}ms {p90(r['init']):6.1f} {ratios[name][0]:7.2f}x {first:12.1f}ms "
                  f"{p90(r['first']):6.1f} {ratios[name][1]:7.2f}x {warm_s:>9} {cold_s:>11} {ratio_s:>8} "
                  f"{size:8.2f} {hwm:12.1f}")

    def cold_ratio(self, name):
        """The median of first response less warm response, over hello's: the cold start's own
        cost, whatever the handler's job (None when the warm event was refused)."""
        r, base = self.results[name], self.results["hello_lambda"]
        if not r["cold"] or not base["cold"]:
            return None
        return statistics.median(r["cold"]) / statistics.median(base["cold"])


class Turns:
    """Whose turn it is to start a process, among sets running their rounds side by side:
    each start passes the turn to the next set still running (a set that skips a function
    takes no turn for it)."""

    def __init__(self, order):
        self.order, self.active, self.i = list(order), set(order), 0
        self.cond = threading.Condition()
        self.error = None

    def _pass(self):
        for _ in range(len(self.order)):
            self.i = (self.i + 1) % len(self.order)
            if self.order[self.i] in self.active:
                break
        self.cond.notify_all()

    class _Turn:
        def __init__(self, turns, owner):
            self.turns, self.owner = turns, owner

        def __enter__(self):
            t = self.turns
            with t.cond:
                t.cond.wait_for(lambda: t.order[t.i] is self.owner or t.error is not None)
                if t.error is not None:
                    raise SystemExit("stopped: the other set failed")

        def __exit__(self, *exc):
            t = self.turns
            with t.cond:
                t._pass()

    def turn(self, owner):
        return Turns._Turn(self, owner)

    def guard(self, owner, fn, *args):
        """Runs `fn` (a set's round); when it ends, or fails, the set leaves the rotation."""
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 (SystemExit included: it names the failing binary)
            with self.cond:
                self.error = self.error or str(e) or repr(e)
        finally:
            with self.cond:
                self.active.discard(owner)
                if self.active and self.order[self.i] not in self.active:
                    self._pass()
                self.cond.notify_all()


def median_or_none(xs):
    return statistics.median(xs) if xs else None


def p90(xs):
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def main():
    runs, args = int(sys.argv[1]), sys.argv[2:]
    if len(args) not in (2, 4):
        raise SystemExit(__doc__)
    sets = [Set("this build", args[0], args[1])]
    if len(args) == 4:
        sets.append(Set("before", args[2], args[3]))
    api = Api()
    load_before = os.getloadavg()
    for i in range(runs + 1):  # round 0 warms the page cache and moto, and is dropped
        # With two sets, their rounds run side by side, one process at a time: the same
        # function of each set starts back to back (the first set to go alternates by round),
        # so a change of the machine's load falls on both alike.
        order = sets if i % 2 == 0 else sets[::-1]
        turns = Turns(order)
        threads = [threading.Thread(target=turns.guard, args=(s, s.round, api, turns, i)) for s in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if turns.error:
            raise SystemExit(turns.error)
        if i == 0:
            for s in sets:
                for r in s.results.values():
                    for series in r.values():
                        if isinstance(series, list):
                            series.clear()

    print(f"machine: {os.cpu_count()} cores; {runs} cold starts per binary and set (after one warm-up round); "
          f"load average (1, 5, 15 min) {' '.join(f'{x:.2f}' for x in load_before)} at the start, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    for s in sets:
        s.print()
    if len(sets) == 2:
        after, before = sets[0].ratios(), sets[1].ratios()
        a_res, b_res = sets[0].results, sets[1].results
        # Paired: the same function of both sets started back to back in each round, so the
        # median of their per-round quotient is the least disturbed by the machine's load.
        # Over the functions both sets ran (either may lack some: an older build, or a subset).
        paired = {name: statistics.median(a / b for a, b in zip(a_res[name]["first"], b_res[name]["first"]))
                  for name in b_res if name in a_res}
        print(f"\n{'binary':16} {'init x hello':>20} {'1st resp x hello':>20} {'1st resp - init, ms':>22} "
              f"{'1st - warm x hello':>20} {'1st resp this/before':>21}   (before -> this build; the last "
              f"paired per round)")
        for name in ("hello_lambda",) + FUNCTIONS:
            if name not in before or name not in after:
                print(f"{name:16} not in {'the before build' if name not in before else 'this build'}: skipped")
                continue
            (ai, af), (bi, bf) = after[name], before[name]
            a_wait = statistics.median(f - i for f, i in zip(a_res[name]["first"], a_res[name]["init"]))
            b_wait = statistics.median(f - i for f, i in zip(b_res[name]["first"], b_res[name]["init"]))
            ac, bc = sets[0].cold_ratio(name), sets[1].cold_ratio(name)
            cold = "-" if ac is None or bc is None else f"{bc:.2f}x -> {ac:.2f}x"
            print(f"{name:16} {bi:8.2f}x -> {ai:6.2f}x {bf:8.2f}x -> {af:6.2f}x {b_wait:9.1f} -> {a_wait:8.1f} "
                  f"{cold:>20} {paired[name]:20.2f}x"
                  f"{'' if ai <= 4 else '   init over 4x hello'}{'' if af <= bf else '   first response ratio up'}"
                  f"{'' if ac is None or bc is None or ac <= bc else '   cold start cost up'}")


if __name__ == "__main__":
    main()
