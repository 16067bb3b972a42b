#!/usr/bin/env python3
"""Fleet benchmark: 1 edge against 3 edges behind HAProxy (TCP mode), each with per-tenant limits
kept locally (`edge.limits_backend = "local"`) or shared through Redis (`"redis"`).

Starts, on 127.0.0.1 only: a trivial upstream (nginx `return 200`, one worker), a private
redis-server (no persistence), and four set-ups over one SQLite catalog of N tenants (limits set
high, so nothing is refused and both backends do the same proxying):
  - 1edge-local, 1edge-redis: one edge (release build, one thread), driven directly;
  - 3edge-local, 3edge-redis: three edges behind HAProxy in TCP mode (round robin).
Then drives each with wrk (keep-alive, requests spread over H tenant hosts), the set-ups in
alternating order each round, and prints per set-up: requests/s, p99, and CPU per request of the
edges (user + system from /proc; the HAProxy and Redis processes separately). The ratio that
matters is redis / local CPU per request within the same topology and round: what settling with
Redis costs per request (the issue allows at most +10 %).

Usage: benches/fleet.py [--duration 5] [--repeat 3] [--connections 32] [--tenants 1000]
                        [--hosts 200] [--port-base 19000] [--skip-build]
Needs nginx, wrk (scripts/ensure-deps.sh --bench), haproxy and redis-server
(scripts/ensure-deps.sh --test). See BENCHMARKS.md.
"""

import argparse
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import cpu_seconds, nginx_conf, run_wrk, seed_catalog, wait_port, wrk_script  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUPS = ("1edge-local", "1edge-redis", "3edge-local", "3edge-redis")


def edge_config(work, name, port, metrics, backend, redis_port, fleet_size, keys):
    path = os.path.join(work, f"{name}.toml")
    redis = f'redis_url = "redis://127.0.0.1:{redis_port}"\n' if backend == "redis" else ""
    with open(path, "w") as f:
        f.write(f"""mode = "dev"
[catalog]
url = "sqlite://{work}/catalog.db"
[edge]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics}"
default_rps = 1000000
default_burst = 1000000
threads = 1
grace_period_secs = 0
limits_backend = "{backend}"
fleet_size = {fleet_size}
{redis}[security]
signing_keys = {{ bench = "{keys[0]}" }}
credential_key = "{keys[1]}"
""")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--port-base", type=int, default=19000)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "haproxy", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: scripts/ensure-deps.sh --bench and --test install it")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "tenantgate"], cwd=ROOT, check=True)
    release = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    binary = os.path.join(release, "tenantgate")

    port = iter(range(args.port_base, args.port_base + 100))
    upstream, redis_port = next(port), next(port)
    work = tempfile.mkdtemp(prefix="tenantgate-fleet-")
    procs = []
    devnull = subprocess.DEVNULL
    keys = [base64.b64encode(os.urandom(32)).decode() for _ in range(2)]
    try:
        up_conf = nginx_conf(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{upstream} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""")
        procs.append(subprocess.Popen(["nginx", "-c", up_conf, "-p", work], stdout=devnull, stderr=devnull))
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port),
                                  "--save", "", "--appendonly", "no", "--dir", work],
                                 stdout=devnull, stderr=devnull)
        procs.append(redis)
        wait_port(upstream)
        wait_port(redis_port)
        first = edge_config(work, "seed", next(port), next(port), "local", redis_port, 1, keys)
        seed_catalog(work, binary, first, args.tenants, upstream)

        # Each set-up: the port wrk drives, its edges' processes, its HAProxy (if any).
        setups = {}
        for name in SETUPS:
            count = 3 if name.startswith("3") else 1
            backend = name.split("-")[1]
            edges, addrs = [], []
            for i in range(count):
                listen, metrics = next(port), next(port)
                config = edge_config(work, f"{name}-{i}", listen, metrics, backend, redis_port, count, keys)
                edges.append(subprocess.Popen([binary, "edge", "--config", config], stdout=devnull,
                                              stderr=open(os.path.join(work, f"{name}-{i}.log"), "w"),
                                              env={**os.environ, "TENANTGATE_LOG": "warn"}))
                addrs.append(listen)
            procs.extend(edges)
            front, lb = addrs[0], None
            if count > 1:
                front = next(port)
                servers = "".join(f"    server e{i} 127.0.0.1:{a}\n" for i, a in enumerate(addrs))
                cfg = os.path.join(work, f"{name}-haproxy.cfg")
                with open(cfg, "w") as f:
                    f.write("global\n    maxconn 4096\ndefaults\n    mode tcp\n    timeout connect 2s\n"
                            "    timeout client 30s\n    timeout server 30s\n"
                            f"frontend fleet\n    bind 127.0.0.1:{front}\n    default_backend edges\n"
                            f"backend edges\n    balance roundrobin\n{servers}")
                lb = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=devnull, stderr=devnull)
                procs.append(lb)
            for a in addrs + [front]:
                wait_port(a)
            setups[name] = {"port": front, "edges": edges, "lb": lb}

        script = wrk_script(work, args.hosts)
        for name, s in setups.items():  # warm-up: route caches, leases, connections
            subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s", "-s", script,
                            f"http://127.0.0.1:{s['port']}/"], capture_output=True, check=True)

        results = {name: [] for name in SETUPS}
        for round_ in range(args.repeat):
            order = list(SETUPS) if round_ % 2 == 0 else list(reversed(SETUPS))
            for name in order:
                s = setups[name]
                before = (sum(cpu_seconds(e.pid) for e in s["edges"]), cpu_seconds(redis.pid),
                          cpu_seconds(s["lb"].pid) if s["lb"] else 0.0)
                r = run_wrk(s["port"], args, script)
                after = (sum(cpu_seconds(e.pid) for e in s["edges"]), cpu_seconds(redis.pid),
                         cpu_seconds(s["lb"].pid) if s["lb"] else 0.0)
                n = max(r["requests"], 1)
                r["edge_us"] = (after[0] - before[0]) / n * 1e6
                r["redis_us"] = (after[1] - before[1]) / n * 1e6
                r["lb_us"] = (after[2] - before[2]) / n * 1e6
                results[name].append(r)
                print(f"round {round_ + 1} {name:12s} {r['rps']:8.0f} req/s  p99 {r['p99']:6.2f} ms  "
                      f"edges {r['edge_us']:5.1f} us/req  redis {r['redis_us']:4.1f}  haproxy {r['lb_us']:4.1f}  "
                      f"non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)

        def med(name, key):
            return statistics.median(r[key] for r in results[name])

        print()
        print(f"median of {args.repeat} runs, wrk -t1 -c{args.connections} -d{args.duration}s, "
              f"{args.tenants} tenants, {args.hosts} hosts, {os.cpu_count()} cores")
        print(f"{'set-up':12s} {'req/s':>8s} {'p99 ms':>7s} {'edges us/req':>12s} {'redis us/req':>12s} "
              f"{'haproxy us/req':>14s}")
        for name in SETUPS:
            print(f"{name:12s} {med(name, 'rps'):8.0f} {med(name, 'p99'):7.2f} {med(name, 'edge_us'):12.1f} "
                  f"{med(name, 'redis_us'):12.1f} {med(name, 'lb_us'):14.1f}")
        print()
        for topo in ("1edge", "3edge"):
            loc, red = results[f"{topo}-local"], results[f"{topo}-redis"]
            edge = [r["edge_us"] / l["edge_us"] for r, l in zip(red, loc)]
            whole = [(r["edge_us"] + r["redis_us"]) / l["edge_us"] for r, l in zip(red, loc)]
            thr = [r["rps"] / l["rps"] for r, l in zip(red, loc)]
            print(f"{topo} redis/local per round: edge CPU per request "
                  + " ".join(f"{x:.3f}" for x in edge) + f" (median {statistics.median(edge):.3f}x); "
                  f"with Redis's CPU {statistics.median(whole):.3f}x; throughput {statistics.median(thr):.3f}x")
        for backend in ("local", "redis"):
            one, three = results[f"1edge-{backend}"], results[f"3edge-{backend}"]
            thr = [t["rps"] / o["rps"] for t, o in zip(three, one)]
            cpu = [t["edge_us"] / o["edge_us"] for t, o in zip(three, one)]
            print(f"{backend}: 3 edges / 1 edge throughput {statistics.median(thr):.2f}x, "
                  f"edge CPU per request {statistics.median(cpu):.2f}x")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
