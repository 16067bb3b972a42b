#!/usr/bin/env python3
"""Load benchmark: tenantgate's edge against nginx with a host map and a bare Pingora proxy.

Starts, on this machine only (127.0.0.1):
  - a trivial upstream: nginx `return 200`, one worker;
  - nginx (one worker) as a reverse proxy with a `map` from Host to a tenant header and upstream
    keep-alive: what a user would pick instead;
  - a bare Pingora proxy (benches/bare_pingora.rs): fixed upstream, no tenant logic;
  - the tenantgate edge (release build) with N tenants in a SQLite catalog, rate limits set high,
    metrics on;
then drives each with wrk at the same connections and duration, one after the other, repeated,
with requests spread over H tenant hosts. Prints requests/s, p50/p99 latency, CPU seconds of the
proxy process, CPU per request, and the ratios tenantgate/nginx and tenantgate/bare-Pingora.

Usage: benches/load.py [--duration 10] [--repeat 3] [--connections 32] [--tenants 10000]
                       [--hosts 1000] [--port-base 18000] [--skip-build]
       benches/load.py --callgrind DIR [--duration 20]
       benches/load.py --scale [--scale-tenants 100000] [--flood-seconds 10]
       benches/load.py --tls [--duration 5] [--repeat 3] [--connections 32] [--tls-clients 2]
The --callgrind mode runs bare Pingora and the edge under valgrind's callgrind instead, counts
the instructions each executes while wrk drives it, and prints instructions per request: a count
that repeats from run to run on a shared machine, where requests per second do not. The profiles
(callgrind_annotate DIR/NAME.out.*) are left in DIR.
The --scale mode measures memory and scale instead: the edge's RSS with N tenants in a
PostgreSQL catalog after every one was requested, and the catalog queries per second during a
flood of distinct unknown hosts (against `catalog.miss_queries_per_sec`). It needs PostgreSQL
(TENANTGATE_BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres) and psql.
The --tls mode compares the edge's TLS listener (`edge.tls_listen`, the certificate by SNI from
the catalog, uploaded through the admin API) with HAProxy terminating TLS with the same ECDSA
P-256 certificate (one thread, forwarding to the same upstream): full handshakes per second
(Python ssl clients with SNI, a new connection and no session reuse per handshake, --tls-clients
processes; `openssl s_time` sends no SNI)
and keep-alive requests per second over TLS (wrk over https).
Needs: nginx and wrk (Debian packages), haproxy and openssl for --tls, valgrind for --callgrind, PostgreSQL for --scale, cmake for
the build; scripts/ensure-deps.sh --bench installs what is missing (as root). See BENCHMARKS.md.
"""

import argparse
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import socket
import base64

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its threads (children of nginx's master too)."""
    total = 0
    pids = [pid] + children(pid)
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / CLK_TCK


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except FileNotFoundError:
        return []


def nginx_conf(work, name, body):
    path = os.path.join(work, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    fastcgi_temp_path {work}/{name}-fastcgi;
    uwsgi_temp_path {work}/{name}-uwsgi;
    scgi_temp_path {work}/{name}-scgi;
    keepalive_requests 1000000;
{body}
}}
""")
    return path


def seed_catalog(work, binary, config, tenants, upstream_port, extra_host=None):
    """Shard `bench` and `tenants` tenants t00000… with host tNNNNN.bench.local; `extra_host` is a
    second domain of t00000. Returns the id of t00000."""
    subprocess.run([binary, "migrate", "catalog", "--config", config], check=True,
                   stdout=subprocess.DEVNULL)
    db = sqlite3.connect(os.path.join(work, "catalog.db"))
    now = int(time.time() * 1000)
    db.execute("INSERT INTO shards (name, status, app_upstreams, database_url, replicas, created_at, updated_at)"
               " VALUES ('bench', 'active', ?, ?, '[]', ?, ?)",
               (f'["127.0.0.1:{upstream_port}"]', f"sqlite://{work}/shards", now, now))
    rows, domains = [], []
    for i in range(tenants):
        tid = str(uuid.uuid4())
        rows.append((tid, f"t{i:05d}", f"Tenant {i}", "active", "bench", 1, 1_000_000, 1_000_000, "{}",
                     "t_" + tid.replace("-", ""), 1, now, now))
        domains.append((f"t{i:05d}.bench.local", "", tid, 1, now))
        if i == 0 and extra_host:
            domains.append((extra_host, "", tid, 0, now))
    db.executemany("INSERT INTO tenants (id, slug, name, status, shard, epoch, rate_limit_rps, rate_limit_burst,"
                   " settings, db_name, schema_version, created_at, updated_at)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.executemany("INSERT INTO tenant_domains (host, path_prefix, tenant_id, is_primary, created_at)"
                   " VALUES (?,?,?,?,?)", domains)
    db.commit()
    db.close()
    return rows[0][0]


def wrk_script(work, hosts):
    path = os.path.join(work, "hosts.lua")
    with open(path, "w") as f:
        f.write("local hosts = {}\n")
        f.write(f"for i = 0, {hosts - 1} do hosts[#hosts + 1] = string.format('t%05d.bench.local', i) end\n")
        f.write("local n = 0\n")
        f.write("request = function()\n  n = n + 1\n"
                "  return wrk.format('GET', '/', { ['Host'] = hosts[(n % #hosts) + 1] })\nend\n")
    return path


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port, args, script):
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", script,
           f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50": parse_latency(out, 50),
        "p99": parse_latency(out, 99),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--tenants", type=int, default=10000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--port-base", type=int, default=18000)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--edge-threads", type=int, default=1, help="edge.threads of tenantgate")
    ap.add_argument("--callgrind", metavar="DIR", help="count instructions per request under callgrind")
    ap.add_argument("--scale", action="store_true", help="memory and unknown-host flood instead")
    ap.add_argument("--scale-tenants", type=int, default=100000)
    ap.add_argument("--flood-seconds", type=int, default=10)
    ap.add_argument("--miss-cap", type=int, default=500)
    ap.add_argument("--tls", action="store_true", help="TLS handshakes and keep-alive vs HAProxy instead")
    ap.add_argument("--tls-clients", type=int, default=2, help="parallel handshake client processes")
    args = ap.parse_args()
    # What a fresh machine lacks (nginx, wrk, valgrind, PostgreSQL) is installed as for the tests.
    subprocess.run([os.path.join(ROOT, "scripts/ensure-deps.sh"), "--bench"], check=True)
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light wrk")

    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "tenantgate", "--example", "bare_pingora"],
                       cwd=ROOT, check=True)
    release = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    binary = os.path.join(release, "tenantgate")
    bare = os.path.join(release, "examples", "bare_pingora")
    if args.scale:
        return scale(args, binary)
    if args.tls:
        return tls(args, binary)

    p = args.port_base
    ports = {"upstream": p, "nginx": p + 1, "bare-pingora": p + 2, "tenantgate": p + 3, "metrics": p + 4}
    work = tempfile.mkdtemp(prefix="tenantgate-load-")
    procs = {}
    try:
        up_conf = nginx_conf(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{ports['upstream']} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""")
        mapping = "\n".join(f"        t{i:05d}.bench.local t{i:05d};" for i in range(args.tenants))
        px_conf = nginx_conf(work, "proxy", f"""
    map $host $tenant {{
        hostnames;
        default "";
{mapping}
    }}
    upstream app {{ server 127.0.0.1:{ports['upstream']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx']} backlog=4096;
        location / {{
            if ($tenant = "") {{ return 404; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Tenant $tenant;
            proxy_pass http://app;
        }}
    }}""")
        key = lambda: base64.b64encode(os.urandom(32)).decode()
        config = os.path.join(work, "edge.toml")
        with open(config, "w") as f:
            f.write(f"""mode = "dev"
[catalog]
url = "sqlite://{work}/catalog.db"
cache_capacity = {max(args.tenants * 2, 1000)}
[edge]
listen = "127.0.0.1:{ports['tenantgate']}"
metrics_listen = "127.0.0.1:{ports['metrics']}"
default_rps = 1000000
default_burst = 1000000
threads = {args.edge_threads}
[security]
signing_keys = {{ bench = "{key()}" }}
credential_key = "{key()}"
""")
        seed_catalog(work, binary, config, args.tenants, ports["upstream"])

        devnull = subprocess.DEVNULL
        def wrap(name):
            if not args.callgrind:
                return []
            os.makedirs(args.callgrind, exist_ok=True)
            return ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={os.path.abspath(args.callgrind)}/{name}.out"]
        procs["upstream"] = subprocess.Popen(["nginx", "-c", up_conf, "-p", work], stdout=devnull, stderr=devnull)
        procs["nginx"] = subprocess.Popen(["nginx", "-c", px_conf, "-p", work], stdout=devnull, stderr=devnull)
        procs["bare-pingora"] = subprocess.Popen(wrap("bare-pingora") + [bare, f"127.0.0.1:{ports['bare-pingora']}",
                                                  f"127.0.0.1:{ports['upstream']}"], stdout=devnull, stderr=devnull)
        procs["tenantgate"] = subprocess.Popen(wrap("tenantgate") + [binary, "edge", "--config", config], stdout=devnull,
                                               stderr=open(os.path.join(work, "edge.log"), "w"),
                                               env={**os.environ, "TENANTGATE_LOG": "warn"})
        for name in ("upstream", "nginx", "bare-pingora", "tenantgate"):
            wait_port(ports[name], timeout=120 if args.callgrind else 30)
        script = wrk_script(work, args.hosts)
        if args.callgrind:
            return count_instructions(args, ports, procs, script)
        # Warm up every proxy (the edge also fills its route cache for all hosts).
        for name in ("nginx", "bare-pingora", "tenantgate"):
            subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d3s", "-s", script,
                            f"http://127.0.0.1:{ports[name]}/"], capture_output=True, check=True)

        results = {name: [] for name in ("nginx", "bare-pingora", "tenantgate")}
        order = list(results)
        for round_ in range(args.repeat):
            for name in order if round_ % 2 == 0 else list(reversed(order)):
                before = cpu_seconds(procs[name].pid)
                r = run_wrk(ports[name], args, script)
                r["cpu"] = cpu_seconds(procs[name].pid) - before
                r["cpu_us_per_req"] = r["cpu"] / max(r["requests"], 1) * 1e6
                results[name].append(r)
                print(f"round {round_ + 1} {name:13s} {r['rps']:9.0f} req/s  p50 {r['p50']:.2f} ms  "
                      f"p99 {r['p99']:.2f} ms  cpu {r['cpu']:.2f} s  non-2xx {r['non2xx']} {r['socket_errors']}",
                      flush=True)

        def med(name, key):
            return statistics.median(r[key] for r in results[name])

        print()
        print(f"median of {args.repeat} runs, wrk -t1 -c{args.connections} -d{args.duration}s, "
              f"{args.tenants} tenants, {args.hosts} hosts, {os.cpu_count()} cores")
        print(f"{'proxy':13s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'cpu s':>7s} {'cpu us/req':>10s}")
        for name in results:
            print(f"{name:13s} {med(name, 'rps'):9.0f} {med(name, 'p50'):8.2f} {med(name, 'p99'):8.2f} "
                  f"{med(name, 'cpu'):7.2f} {med(name, 'cpu_us_per_req'):10.1f}")
        print()
        for base in ("nginx", "bare-pingora"):
            print(f"tenantgate/{base}: throughput {med('tenantgate', 'rps') / med(base, 'rps'):.2f}x, "
                  f"cpu per request {med('tenantgate', 'cpu_us_per_req') / med(base, 'cpu_us_per_req'):.2f}x, "
                  f"p99 {med('tenantgate', 'p99') / med(base, 'p99'):.2f}x")
        # The machine's speed drifts between rounds; a ratio within one round (the two runs are
        # back to back) is steadier than a ratio of medians.
        for base in ("nginx", "bare-pingora"):
            paired = [t["rps"] / b["rps"] for t, b in zip(results["tenantgate"], results[base])]
            print(f"tenantgate/{base} throughput per round: "
                  + " ".join(f"{r:.2f}" for r in paired) + f"  (median {statistics.median(paired):.2f}x)")
        rss = 0
        with open(f"/proc/{procs['tenantgate'].pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        print(f"tenantgate edge RSS after the runs: {rss} MiB")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def count_instructions(args, ports, procs, script):
    """Instructions per request of bare Pingora and the edge, counted by callgrind."""
    per_request = {}
    for name in ("bare-pingora", "tenantgate"):
        pid = str(procs[name].pid)
        # Warm up uninstrumented (the edge fills its route cache), then count one wrk run.
        subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d10s", "-s", script,
                        f"http://127.0.0.1:{ports[name]}/"], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True, check=True)
        r = run_wrk(ports[name], args, script)
        subprocess.run(["callgrind_control", "-i", "off", pid], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-d", name, pid], capture_output=True, check=True)
        dumps = sorted(f for f in os.listdir(args.callgrind) if f.startswith(f"{name}.out"))
        with open(os.path.join(args.callgrind, dumps[-1])) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
        per_request[name] = total / max(r["requests"], 1)
        print(f"{name:13s} {r['requests']:7d} requests (non-2xx {r['non2xx']})  "
              f"{per_request[name]:9.0f} instructions per request  profile: {dumps[-1]}", flush=True)
    print(f"tenantgate/bare-pingora: instructions per request "
          f"{per_request['tenantgate'] / per_request['bare-pingora']:.2f}x")


def psql(url, sql, stdin=None):
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], input=stdin, text=True,
                          capture_output=True, check=True).stdout.strip()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def scale(args, binary):
    """RSS with many cached tenants, and catalog queries during an unknown-host flood."""
    server = os.environ.get("TENANTGATE_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"tg_bench_{os.getpid()}"
    catalog_url = server.rsplit("/", 1)[0] + "/" + name
    p = args.port_base
    ports = {"upstream": p, "tenantgate": p + 3, "metrics": p + 4}
    work = tempfile.mkdtemp(prefix="tenantgate-scale-")
    procs = {}
    psql(server, f"CREATE DATABASE {name}")
    try:
        signing, credential = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))

        def write_config(path, miss_cap):
            with open(path, "w") as f:
                f.write(f"""mode = "dev"
[catalog]
url = "{catalog_url}"
cache_capacity = {args.scale_tenants * 2}
miss_queries_per_sec = {miss_cap}
negative_ttl_ms = 60000
[edge]
listen = "127.0.0.1:{ports['tenantgate']}"
metrics_listen = "127.0.0.1:{ports['metrics']}"
default_rps = 1000000
default_burst = 1000000
[security]
signing_keys = {{ bench = "{signing}" }}
credential_key = "{credential}"
""")
            return path

        def start_edge(config):
            proc = subprocess.Popen([binary, "edge", "--config", config], stdout=subprocess.DEVNULL,
                                    stderr=open(os.path.join(work, "edge.log"), "a"),
                                    env={**os.environ, "TENANTGATE_LOG": "warn"})
            wait_port(ports["tenantgate"])
            return proc

        # Warming 100,000 hosts under the default miss cap would take minutes: the memory phase
        # runs with the cap out of the way, the flood phase with the cap it measures.
        config = write_config(os.path.join(work, "warm.toml"), 1_000_000)
        flood_config = write_config(os.path.join(work, "flood.toml"), args.miss_cap)
        subprocess.run([binary, "migrate", "catalog", "--config", config], check=True, stdout=subprocess.DEVNULL)
        now = int(time.time() * 1000)
        psql(catalog_url, "INSERT INTO shards (name, status, app_upstreams, database_url, replicas, created_at, updated_at)"
                          f" VALUES ('bench', 'active', '[\"127.0.0.1:{ports['upstream']}\"]', '{server}', '[]', {now}, {now})")
        tenants, domains = [], []
        for i in range(args.scale_tenants):
            tid = str(uuid.uuid4())
            tenants.append(f"{tid}\tt{i:06d}\tTenant {i}\tactive\tbench\t1\t\\N\t\\N\t{{}}\tt_{tid.replace('-', '')}\t1\t{now}\t{now}")
            domains.append(f"t{i:06d}.scale.local\t\t{tid}\t1\t{now}")
        psql(catalog_url, "COPY tenants (id, slug, name, status, shard, epoch, rate_limit_rps, rate_limit_burst, settings,"
                          " db_name, schema_version, created_at, updated_at) FROM STDIN", "\n".join(tenants) + "\n")
        psql(catalog_url, "COPY tenant_domains (host, path_prefix, tenant_id, is_primary, created_at) FROM STDIN",
             "\n".join(domains) + "\n")
        up_conf = nginx_conf(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{ports['upstream']} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""")
        devnull = subprocess.DEVNULL
        procs["upstream"] = subprocess.Popen(["nginx", "-c", up_conf, "-p", work], stdout=devnull, stderr=devnull)
        wait_port(ports["upstream"])
        procs["tenantgate"] = start_edge(config)
        rss_start = rss_mib(procs["tenantgate"].pid)

        # Every tenant once: wrk walks the host list in order until all were requested.
        walk = os.path.join(work, "walk.lua")
        with open(walk, "w") as f:
            f.write(f"local n = -1\nrequest = function()\n  n = n + 1\n"
                    f"  return wrk.format('GET', '/', {{ ['Host'] = string.format('t%06d.scale.local', n % {args.scale_tenants}) }})\nend\n")
        started = time.time()
        subprocess.run(["wrk", "-t1", "-c8", f"-d{max(10, args.scale_tenants // 4000)}s", "-s", walk,
                        f"http://127.0.0.1:{ports['tenantgate']}/"], capture_output=True, check=True)
        metrics = metric_values(ports["metrics"])
        misses = metrics.get('tenantgate_catalog_cache_lookups_total{result="miss"}', 0)
        print(f"requested every host of {args.scale_tenants} tenants in {time.time() - started:.0f} s "
              f"({misses:.0f} cache misses, each a catalog query)")
        rss_full = rss_mib(procs["tenantgate"].pid)
        print(f"edge RSS: {rss_start:.0f} MiB at start, {rss_full:.0f} MiB with {args.scale_tenants} tenants cached "
              f"({(rss_full - rss_start) * 1024 * 1024 / args.scale_tenants:.0f} bytes per tenant)")

        # Flood of distinct unknown hosts: catalog transactions counted on the server.
        procs["tenantgate"].send_signal(signal.SIGINT)
        procs["tenantgate"].wait(timeout=30)
        procs["tenantgate"] = start_edge(flood_config)
        flood = os.path.join(work, "flood.lua")
        with open(flood, "w") as f:
            f.write("local n = 0\nrequest = function()\n  n = n + 1\n"
                    "  return wrk.format('GET', '/', { ['Host'] = string.format('u%d-%d.flood.local', math.random(1, 1000000000), n) })\nend\n")
        commits = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{name}'"
        before = int(psql(server, commits))
        started = time.time()
        out = subprocess.run(["wrk", "-t1", "-c32", f"-d{args.flood_seconds}s", "-s", flood,
                              f"http://127.0.0.1:{ports['tenantgate']}/"], capture_output=True, text=True, check=True).stdout
        elapsed = time.time() - started
        time.sleep(1.5)  # let the server publish its statistics
        after = int(psql(server, commits))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        qps = (after - before) / elapsed
        print(f"unknown-host flood: {rps:.0f} distinct hosts/s for {args.flood_seconds} s; catalog transactions "
              f"{qps:.0f}/s (cap catalog.miss_queries_per_sec = {args.miss_cap}, plus the feed's polls)")
        print(f"edge RSS after the flood (a fresh edge): {rss_mib(procs['tenantgate'].pid):.0f} MiB")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


def make_certificate(work, host):
    """A test CA and an ECDSA P-256 leaf for `host` signed by it (openssl); (chain, key) paths."""
    def run(*cmd):
        subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tenantgate bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("openssl", "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={host}")
    with open(os.path.join(work, "leaf.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", "leaf.pem", "-extfile", "leaf.ext")
    chain = os.path.join(work, "chain.pem")
    with open(chain, "w") as out:
        for name in ("leaf.pem", "ca.pem"):
            out.write(open(os.path.join(work, name)).read())
    return chain, os.path.join(work, "leaf.key")


def handshake_loop(job):
    """Full TLS handshakes for `seconds`, one new connection and no session reuse each; count."""
    import ssl
    port, host, seconds = job
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    done, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        with socket.create_connection(("127.0.0.1", port)) as raw:
            # No `session=`: each handshake is a full one (key exchange and signature).
            with ctx.wrap_socket(raw, server_hostname=host):
                done += 1
    return done


def handshakes(port, host, seconds, clients):
    """Full TLS handshakes per second with `clients` client processes in parallel."""
    import multiprocessing
    started = time.time()
    with multiprocessing.Pool(clients) as pool:
        total = sum(pool.map(handshake_loop, [(port, host, seconds)] * clients))
    return total / max(time.time() - started, 1e-9)


def tls(args, binary):
    """The edge's TLS listener against HAProxy with the same certificate."""
    if not shutil.which("haproxy"):
        raise SystemExit("haproxy is missing: apt-get install haproxy")
    p = args.port_base
    ports = {"upstream": p, "tenantgate": p + 3, "metrics": p + 4, "haproxy": p + 5,
             "tenantgate-tls": p + 6, "admin": p + 7}
    host = "localhost"  # wrk connects by this name, so it is the SNI name and the Host
    work = tempfile.mkdtemp(prefix="tenantgate-tls-")
    procs = {}
    devnull = subprocess.DEVNULL
    try:
        chain, key = make_certificate(work, host)
        haproxy_pem = os.path.join(work, "haproxy.pem")
        with open(haproxy_pem, "w") as out:
            out.write(open(chain).read() + open(key).read())
        up_conf = nginx_conf(work, "upstream", f"""
    server {{
        listen 127.0.0.1:{ports['upstream']} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""")
        haproxy_conf = os.path.join(work, "haproxy.cfg")
        with open(haproxy_conf, "w") as f:
            f.write(f"""global
    nbthread 1
    # Two descriptors per connection must fit the open-file limit (often 1024 to 20000).
    maxconn 4000
    tune.ssl.default-dh-param 2048
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend tls
    bind 127.0.0.1:{ports['haproxy']} ssl crt {haproxy_pem} alpn http/1.1
    http-request set-header X-Tenant t00000
    default_backend app
backend app
    server app 127.0.0.1:{ports['upstream']}
""")
        b64 = lambda: base64.b64encode(os.urandom(32)).decode()
        token = "bench-" + uuid.uuid4().hex
        config = os.path.join(work, "edge.toml")
        with open(config, "w") as f:
            f.write(f"""mode = "dev"
[catalog]
url = "sqlite://{work}/catalog.db"
poll_interval_ms = 100
[edge]
listen = "127.0.0.1:{ports['tenantgate']}"
metrics_listen = "127.0.0.1:{ports['metrics']}"
tls_listen = "127.0.0.1:{ports['tenantgate-tls']}"
default_rps = 1000000
default_burst = 1000000
threads = {args.edge_threads}
[admin]
listen = "127.0.0.1:{ports['admin']}"
bootstrap_token = "{token}"
[security]
signing_keys = {{ bench = "{b64()}" }}
credential_key = "{b64()}"
""")
        tenant = seed_catalog(work, binary, config, 10, ports["upstream"], extra_host=host)
        # The certificate goes in as an operator's upload, checked and sealed by the admin API.
        admin = subprocess.Popen([binary, "admin", "--config", config], cwd=ROOT, stdout=devnull,
                                 stderr=open(os.path.join(work, "admin.log"), "w"))
        procs["admin"] = admin
        wait_port(ports["admin"])
        import json
        import urllib.request
        body = json.dumps({"cert_pem": open(chain).read(), "key_pem": open(key).read()}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{ports['admin']}/v1/tenants/{tenant}/domains/{host}/certificate",
            data=body, method="PUT",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        urllib.request.urlopen(req).read()
        admin.send_signal(signal.SIGTERM)
        admin.wait(timeout=10)
        del procs["admin"]

        procs["upstream"] = subprocess.Popen(["nginx", "-c", up_conf, "-p", work], stdout=devnull, stderr=devnull)
        procs["haproxy"] = subprocess.Popen(["haproxy", "-db", "-f", haproxy_conf], stdout=devnull,
                                            stderr=open(os.path.join(work, "haproxy.log"), "w"))
        procs["tenantgate"] = subprocess.Popen([binary, "edge", "--config", config], stdout=devnull,
                                               stderr=open(os.path.join(work, "edge.log"), "w"),
                                               env={**os.environ, "TENANTGATE_LOG": "warn"})
        for name in ("upstream", "haproxy", "tenantgate"):
            wait_port(ports[name])
        # /readyz waits for the certificates, so the first handshake already gets one.
        import urllib.error
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/readyz").read()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise SystemExit("the edge did not become ready")
                time.sleep(0.1)
        tls_ports = {"haproxy": ports["haproxy"], "tenantgate": ports["tenantgate-tls"]}
        for name, port in tls_ports.items():
            out = subprocess.run(["curl", "-sk", "--resolve", f"{host}:{port}:127.0.0.1",
                                  f"https://{host}:{port}/", "-o", "/dev/null", "-w", "%{http_code}"],
                                 capture_output=True, text=True).stdout
            if out != "200":
                raise SystemExit(f"{name} over TLS answered {out!r}, not 200")
            subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s", f"https://{host}:{port}/"],
                           capture_output=True, check=True)

        results = {name: [] for name in tls_ports}
        order = list(results)
        for round_ in range(args.repeat):
            for name in order if round_ % 2 == 0 else list(reversed(order)):
                port = tls_ports[name]
                pid = procs[name].pid
                before = cpu_seconds(pid)
                hs = handshakes(port, host, args.duration, args.tls_clients)
                hs_cpu = cpu_seconds(pid) - before
                before = cpu_seconds(pid)
                cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
                       f"https://{host}:{port}/"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                ka_cpu = cpu_seconds(pid) - before
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                r = {"hs": hs, "hs_cpu": hs_cpu, "rps": rps, "ka_cpu": ka_cpu, "p99": parse_latency(out, 99),
                     "non2xx": int(non2xx.group(1)) if non2xx else 0}
                results[name].append(r)
                print(f"round {round_ + 1} {name:10s} handshakes {hs:7.0f}/s (cpu {hs_cpu:.2f} s)  "
                      f"keep-alive {rps:7.0f} req/s p99 {r['p99']:.2f} ms (cpu {ka_cpu:.2f} s)  "
                      f"non-2xx {r['non2xx']}", flush=True)

        def med(name, key):
            return statistics.median(r[key] for r in results[name])
        print()
        print(f"median of {args.repeat} runs of {args.duration} s; handshakes: {args.tls_clients} Python ssl clients, "
              f"full handshakes "
              f"(TLS 1.3, ECDSA P-256); keep-alive: wrk -t1 -c{args.connections} over https; {os.cpu_count()} cores")
        for name in results:
            print(f"{name:10s} handshakes/s {med(name, 'hs'):7.0f}  keep-alive req/s {med(name, 'rps'):7.0f}  "
                  f"p99 {med(name, 'p99'):.2f} ms")
        hs_pairs = [t["hs"] / h["hs"] for t, h in zip(results["tenantgate"], results["haproxy"])]
        ka_pairs = [t["rps"] / h["rps"] for t, h in zip(results["tenantgate"], results["haproxy"])]
        print(f"tenantgate/haproxy handshakes/s per round: " + " ".join(f"{r:.2f}" for r in hs_pairs)
              + f"  (median {statistics.median(hs_pairs):.2f}x)")
        print(f"tenantgate/haproxy keep-alive req/s per round: " + " ".join(f"{r:.2f}" for r in ka_pairs)
              + f"  (median {statistics.median(ka_pairs):.2f}x)")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def metric_values(port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


if __name__ == "__main__":
    sys.exit(main())
