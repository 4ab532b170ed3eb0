"""Send recorded DynamoDB calls again, one at a time, to a fresh test server: its cost per call.

usage: moto_replay.py SERVER.py RECORDING [--answers FILE] [--cprofile FILE]

RECORDING is what tests/moto_server.py wrote with MOTO_SERVER_RECORD=FILE (for instance
during `cargo test -p e2e --test end_to_end -- sequencer::`). SERVER.py (this tree's
tests/moto_server.py, or another version of it) is started on a free loopback port with
MOTO_SERVER_PROFILE; each call goes to it in the recorded order, so it meets the tables the
recording met. Prints each operation's calls and wall time as the client saw it, then the
server's own thread CPU and wall time per call. --answers FILE writes each answer (status,
headers but the request id and date, body) as a JSON line, to compare two servers' answers;
--cprofile FILE profiles every request to FILE.pstats as well.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

AUTH = (
    "AWS4-HMAC-SHA256 Credential=test/20261203/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00"
)


def main():
    args = argparse.ArgumentParser()
    args.add_argument("server")
    args.add_argument("recording")
    args.add_argument("--answers")
    args.add_argument("--cprofile")
    args = args.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = args.cprofile or tempfile.mktemp(suffix=".txt")
    env = dict(os.environ, MOTO_SERVER_PROFILE=profile)
    env.pop("MOTO_SERVER_RECORD", None)
    if args.cprofile:
        env["MOTO_SERVER_CPROFILE"] = "1"
    server = subprocess.Popen(
        [sys.executable, args.server, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(150):
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            probe.request("GET", "/moto-api/")
            probe.getresponse().read()
            break
        except OSError:
            time.sleep(0.2)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = {}
    answers = open(args.answers, "w") if args.answers else None
    with open(args.recording) as recording:
        for line in recording:
            call = json.loads(line)
            op = call["target"].split(".")[-1]
            started = time.perf_counter()
            conn.request(
                "POST",
                "/",
                json.dumps(call["body"]).encode(),
                {"X-Amz-Target": call["target"], "Content-Type": "application/x-amz-json-1.0", "Authorization": AUTH},
            )
            answer = conn.getresponse()
            body = answer.read()
            times.setdefault(op, []).append(time.perf_counter() - started)
            if answers:
                headers = {k.lower(): v for k, v in answer.getheaders()}
                for k in ("x-amzn-requestid", "date", "server", "connection"):
                    headers.pop(k, None)
                answers.write(json.dumps({"op": op, "status": answer.status, "headers": headers, "body": body.decode()}) + "\n")
    server.send_signal(signal.SIGTERM)
    server.wait()
    for op, spent in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        spent.sort()
        n = len(spent)
        print(f"client {op:21} {n:6} calls  wall ms mean {1000 * sum(spent) / n:7.3f} p50 {1000 * spent[n // 2]:7.3f}")
    print("server (thread CPU and wall per call):")
    with open(profile) as server_times:
        print(server_times.read(), end="")


if __name__ == "__main__":
    main()
