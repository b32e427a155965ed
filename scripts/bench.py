"""The body of scripts/bench (run it through that script, which builds the
binaries, installs nginx/wrk/matplotlib and sets the BENCH_* variables).

Every phase runs on this machine, one after the other, against processes
started here on free loopback ports; every figure in the table is from this
run, so the ratios compare like with like. docs/PERFORMANCE.md explains the
rows and the targets.
"""

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

QUICK = os.environ["BENCH_QUICK"] == "1"
SECS = int(os.environ.get("BENCH_SECS") or (2 if QUICK else 10))
WARMUP = 1 if QUICK else 2
SWEEP = os.environ["BENCH_SWEEP"] == "1"
OUT = os.environ["BENCH_OUT"]
FLEET = os.environ["BENCH_FLEET"]
# The per-service binaries (dal, catalog, ratings, edge): what the images run.
BIN_DIR = os.path.dirname(FLEET)
ECHO = os.environ["BENCH_ECHO"]
NGINX = os.environ["BENCH_NGINX"]
WRK_SCRIPT = os.environ["BENCH_WRK_SCRIPT"]
PLOT_PYTHON = os.environ["BENCH_PLOT_PYTHON"]
PROFILE = os.environ["BENCH_PROFILE"]
CONNS = 32  # closed-loop connections/workers for every throughput row
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# The fixed-rate phases: the edge mix's target rate (issue 17's 3,000
# req/s), and the rate at which the proxies' p99 is compared.
MIX_RATE = 300 if QUICK else 3000
P99_RATE = 200 if QUICK else 1000
SWEEP_RATES = [200, 400] if QUICK else [500, 1000, 1500, 2000, 3000, 4000]
SWEEP_CATALOGS = [1] if QUICK else [1, 2, 4]
SWEEP_SECS = 1 if QUICK else 5

procs = []  # everything started, stopped at exit
raw = {}  # every phase's parsed output, written to results.json


def log(msg):
    print(f"scripts/bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_env():
    # Embedded defaults: the bench never touches backends a developer has
    # exported for the tests.
    drop = ("CONSUL_HTTP_ADDR", "SCYLLA_NODES", "REDIS_URL", "TOXIPROXY_URL")
    return {k: v for k, v in os.environ.items() if k not in drop}


def start(argv, **kw):
    p = subprocess.Popen(argv, **kw)
    procs.append(p)
    return p


def stop(p, timeout=60):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_measured(argv, timeout):
    """Runs argv to the end; returns (stdout, stderr, cpu seconds, exit)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (out.read().decode(), err.read().decode(),
                usage.ru_utime + usage.ru_stime, p.returncode)


def wrk(url, conns=CONNS, secs=None):
    secs = secs or SECS
    argv = ["wrk", f"-t2", f"-c{conns}", f"-d{secs}s", "--latency", "-s", WRK_SCRIPT, url]
    stdout, stderr, cpu, code = run_measured(argv, secs + 30)
    line = next((l for l in stdout.splitlines() if l.startswith("wrk-summary ")), None)
    if code != 0 or line is None:
        sys.exit(f"wrk {url} failed ({code}): {stdout[-1500:]} {stderr[-1500:]}")
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    r = {k: float(v) for k, v in f.items()}
    r["cpu_s"] = cpu
    r["errors_total"] = r["errors"] + r["non2xx"]
    return r


def fleet_load(target, extra, secs=None, warmup=None, service=None):
    secs = secs or SECS
    warmup = WARMUP if warmup is None else warmup
    argv = [FLEET, "load", "--target", target, "--duration", f"{secs}s",
            "--warmup", f"{warmup}s", "--json"] + extra
    if service:
        argv += ["--service", service]
    stdout, stderr, cpu, code = run_measured(argv, secs + warmup + 60)
    try:
        report = json.loads(stdout)
    except ValueError:
        sys.exit(f"fleet load {target} {extra} failed ({code}): {stderr[-2000:]}")
    report["cpu_s"] = cpu
    return report


def closed(target, mix="title", service=None, conns=CONNS):
    return fleet_load(target, ["--closed-loop", "--concurrency", str(conns), "--mix", mix],
                      service=service)


def open_loop(target, rate, mix="title", service=None, secs=None, warmup=None):
    return fleet_load(target, ["--rate", str(rate), "--mix", mix], secs=secs,
                      warmup=warmup, service=service)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KB
    except OSError:
        return 0


def private_kb(pid):
    """Private_Clean + Private_Dirty: what this instance alone holds. RSS
    also counts the pages of the (shared, multi-call) `fleet` binary that
    every instance maps."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        return 0
    return total


def wait_ready(admin, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} was not ready within {timeout} s")


def service_binaries_rss():
    """Idle RSS (and private pages) of one instance of each service run
    from its own binary, as the images run them: dal, then catalog and
    ratings on it, then the edge on those; measured 1 s after the edge is
    ready. `fleet up` runs every instance from the one multi-call `fleet`
    binary, whose code (every service's) each instance maps."""
    data = tempfile.mkdtemp(prefix="fleet-bench-bins-")
    ports = {s: (free_port(), free_port()) for s in ("dal", "catalog", "ratings", "edge")}
    addr = lambda s: f"127.0.0.1:{ports[s][0]}"
    admin = lambda s: f"127.0.0.1:{ports[s][1]}"
    extra = {
        "dal": {"GRPC_ADDR": addr("dal"), "DATA_DIR": os.path.join(data, "dal")},
        "catalog": {"GRPC_ADDR": addr("catalog"), "DAL_ADDRS": addr("dal")},
        "ratings": {"GRPC_ADDR": addr("ratings"), "DAL_ADDRS": addr("dal")},
        "edge": {"HTTP_ADDR": addr("edge"), "CATALOG_ADDRS": addr("catalog"),
                 "RATINGS_ADDRS": addr("ratings")},
    }
    started = {}
    try:
        for svc in ("dal", "catalog", "ratings", "edge"):
            env = fleet_env()
            env.update(extra[svc])
            env["ADMIN_ADDR"] = admin(svc)
            with open(os.path.join(data, f"{svc}.log"), "w") as log_file:
                started[svc] = start([os.path.join(BIN_DIR, svc)], env=env,
                                     stdout=log_file, stderr=subprocess.STDOUT)
            wait_ready(admin(svc), f"{svc} (its own binary)")
        time.sleep(1)
        return ({svc: rss_kb(p.pid) for svc, p in started.items()},
                {svc: private_kb(p.pid) for svc, p in started.items()})
    finally:
        for p in reversed(list(started.values())):
            stop(p)
        shutil.rmtree(data, ignore_errors=True)


class Fleet:
    """One `fleet up` on embedded defaults, with its registry."""

    def __init__(self, catalog_v12=2, catalog_v13=1, only_v12=False):
        self.data = tempfile.mkdtemp(prefix="fleet-bench-")
        self.edge = f"127.0.0.1:{free_port()}"
        argv = [FLEET, "up", "--edge-addr", self.edge, "--dashboard", "off",
                "--data-dir", self.data, "--catalog-v1-2", str(catalog_v12),
                "--catalog-v1-3", str(catalog_v13)]
        if only_v12:
            # Every title read goes to the 1.2 instances: the table the
            # edge reads is in force before anything starts.
            routes = os.path.join(self.data, "run", "routes")
            os.makedirs(routes)
            with open(os.path.join(routes, "catalog.json"), "w") as f:
                json.dump({"service": "catalog", "interface": 1,
                           "weights": {"1.2": 100}, "sticky": False}, f)
        started = time.monotonic()
        self.proc = start(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True, env=fleet_env())
        for line in self.proc.stdout:
            if line.startswith("all ") and "instances ready" in line:
                break
        else:
            sys.exit(f"fleet up did not start (logs under {self.data}/logs)")
        self.ready_s = time.monotonic() - started
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        with open(os.path.join(self.data, "run", "registry.json")) as f:
            self.registry = json.load(f)

    def instances(self, service, version_prefix=""):
        return [e for e in self.registry
                if e["service"] == service and e["version"].startswith(version_prefix)]

    def rss_by_service(self, measure=rss_kb):
        out = {}
        for e in self.registry:
            out.setdefault(e["service"], []).append(measure(e["pid"]))
        return out

    def stop(self):
        stop(self.proc)
        shutil.rmtree(self.data, ignore_errors=True)


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def start_nginx(body, edge):
    d = tempfile.mkdtemp(prefix="fleet-bench-nginx-")
    os.makedirs(os.path.join(d, "www"))
    with open(os.path.join(d, "www", "title.json"), "wb") as f:
        f.write(body)
    # nginx's workers drop root for Debian's www-data: let them read it.
    for path, mode in ((d, 0o755), (os.path.join(d, "www"), 0o755),
                       (os.path.join(d, "www", "title.json"), 0o644)):
        os.chmod(path, mode)
    static, proxy = free_port(), free_port()
    temp = "".join(f"  {k}_temp_path {d}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = f"""daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}  upstream edge {{ server {edge}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{static};
    root {d}/www;
    default_type application/json;
    location / {{ try_files /title.json =404; }}
  }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{
      proxy_pass http://edge;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = start([NGINX, "-c", path, "-e", f"{d}/error.log"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            get(f"http://127.0.0.1:{static}/api/v1/titles/t00001")
            get(f"http://127.0.0.1:{proxy}/api/v1/titles/t00001")
            return p, f"http://127.0.0.1:{static}", f"http://127.0.0.1:{proxy}"
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.1)
    sys.exit(f"nginx did not start: {open(os.path.join(d, 'error.log')).read()[-2000:]}")


def start_echo():
    p = start([ECHO, "--addr", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"fleet-bench-echo did not start: {line!r}")
    return p, line.split()[-1]


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "load_average_at_start": os.getloadavg()}


def fmt_ms(x):
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def main():
    facts = machine()
    raw["machine"] = facts
    raw["settings"] = {"quick": QUICK, "secs": SECS, "warmup": WARMUP, "conns": CONNS,
                       "profile": PROFILE, "mix_rate": MIX_RATE, "p99_rate": P99_RATE}
    log(f"{facts['cores']} cores, {facts['cpu']}, kernel {facts['kernel']}; "
        f"{SECS} s per phase, {PROFILE} build")

    fleet = Fleet()
    edge = f"http://{fleet.edge}"
    catalog = f"grpc://{fleet.instances('catalog', '1.2')[0]['addr']}"
    time.sleep(1)
    idle = fleet.rss_by_service()
    idle_private = fleet.rss_by_service(private_kb)
    own_rss, own_private = service_binaries_rss()
    raw["rss_kb"] = {"idle": idle, "idle_private": idle_private,
                     "own_binary_idle": own_rss, "own_binary_idle_private": own_private}
    body = get(f"{edge}/api/v1/titles/t00001")
    nginx, nginx_static, nginx_proxy = start_nginx(body, fleet.edge)
    echo, echo_addr = start_echo()
    echo_target = f"grpc://{echo_addr}"

    # Warm every path (the dal's cache, HTTP/2 connections) before measuring.
    log("warming up")
    fleet_load(edge, ["--rate", "200", "--mix", "title"], secs=1, warmup=1)

    rows = {}
    log("throughput (closed loop, 32 connections)")
    rows["nginx_static"] = wrk(nginx_static)
    rows["echo"] = closed(echo_target, service="catalog")
    rows["catalog"] = closed(catalog, service="catalog")
    rows["edge"] = closed(edge)
    rows["edge_wrk"] = wrk(edge)
    rows["nginx_edge_wrk"] = wrk(nginx_proxy)
    raw["throughput"] = rows

    log(f"latency at a fixed {P99_RATE} req/s (open loop)")
    fixed = {
        "catalog": open_loop(catalog, P99_RATE, service="catalog"),
        "edge": open_loop(edge, P99_RATE),
        "nginx_edge": open_loop(nginx_proxy, P99_RATE),
    }
    raw["fixed_rate"] = fixed

    log(f"the edge mix at {MIX_RATE} req/s (open loop)")
    peak = {}
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            for svc, kbs in fleet.rss_by_service().items():
                peak[svc] = [max(a, b) for a, b in zip(peak.get(svc, [0] * len(kbs)), kbs)]
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    mix = open_loop(edge, MIX_RATE, mix="title=70,browse=10,home=10,rate=5,progress=5")
    sampling.set()
    sampler.join()
    raw["mix"] = mix

    log("generators: wrk and fleet load on the same endpoint")
    gen_wrk = rows["edge_wrk"]
    gen_rate = max(100, int(gen_wrk["rate"]))
    gen_open = open_loop(edge, gen_rate)
    gen_closed = rows["edge"]
    raw["generators"] = {"wrk": gen_wrk, "fleet_load_open": gen_open,
                         "fleet_load_closed": gen_closed}
    up_ready = fleet.ready_s
    registry = fleet.registry
    stop(nginx)
    stop(echo)
    fleet.stop()

    sweep = []
    if SWEEP:
        for n in SWEEP_CATALOGS:
            log(f"sweep: catalog 1.2 x{n}, {SWEEP_RATES} req/s")
            f = Fleet(catalog_v12=n, catalog_v13=0, only_v12=True)
            target = f"http://{f.edge}"
            fleet_load(target, ["--rate", "200", "--mix", "title"], secs=1, warmup=1)
            for rate in SWEEP_RATES:
                r = open_loop(target, rate, secs=SWEEP_SECS, warmup=1)
                sweep.append({"catalogs": n, "rate": rate, "achieved": r["achieved_rate"],
                              "p50_ms": r["response"]["p50_ms"],
                              "p99_ms": r["response"]["p99_ms"],
                              "error_percent": r["error_percent"],
                              "late_percent": r["late"]["percent"],
                              "generator_saturated": r["generator_saturated"]})
            f.stop()
        raw["sweep"] = sweep

    with open(os.path.join(OUT, "results.json"), "w") as fh:
        json.dump(raw, fh, indent=1)
    raw["rss_kb"]["under_mix_max"] = peak
    report = render(facts, rows, fixed, mix, gen_wrk, gen_open, gen_closed, idle, idle_private,
                    peak, up_ready, registry, sweep)
    with open(os.path.join(OUT, "report.md"), "w") as fh:
        fh.write(report)
    print(report)
    if SWEEP:
        plot(sweep)


def render(facts, rows, fixed, mix, gen_wrk, gen_open, gen_closed, idle, idle_private, peak,
           up_ready, registry, sweep):
    L = []
    w = L.append
    w(f"# scripts/bench{' --quick' if QUICK else ''} ({PROFILE} build)")
    w("")
    w(f"{facts['cores']} cores, {facts['cpu']}, kernel {facts['kernel']}, "
      f"{facts['memory_gib']} GiB; load average at start "
      f"{', '.join(f'{x:.2f}' for x in facts['load_average_at_start'])}; "
      f"{SECS} s per phase after {WARMUP} s warm-up; "
      f"`fleet up` embedded defaults: {len(registry)} instances, all ready in {up_ready:.2f} s.")
    w("")
    echo = rows["echo"]["achieved_rate"]

    def pct(r):
        return f"{r['response']['p50_ms']:.2f} / {r['response']['p99_ms']:.2f}"

    w(f"## Throughput, closed loop ({CONNS} connections)")
    w("")
    w("| path | generator | req/s | vs raw hop | p50 / p99 ms | errors |")
    w("|---|---|---|---|---|---|")

    def wrow(name, r):
        w(f"| {name} | wrk | {r['rate']:.0f} | {r['rate'] / echo:.2f} | "
          f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['errors_total']:.0f} |")

    def frow(name, r):
        w(f"| {name} | fleet load | {r['achieved_rate']:.0f} | {r['achieved_rate'] / echo:.2f} | "
          f"{pct(r)} | {r['failed']} |")

    wrow("nginx: the title JSON as a static file (the limit)", rows["nginx_static"])
    frow("raw tonic hop (fleet-bench-echo, catalog.v1 GetTitle)", rows["echo"])
    frow("catalog over gRPC (catalog → dal)", rows["catalog"])
    frow("edge full path (edge → catalog → dal, ratings → dal)", rows["edge"])
    wrow("edge full path", rows["edge_wrk"])
    wrow("nginx → edge (reverse proxy in front)", rows["nginx_edge_wrk"])
    w("")
    w(f"## Latency at a fixed {P99_RATE} req/s, open loop (fleet load, GET title)")
    w("")
    w("| path | achieved req/s | p50 ms | p99 ms | p99 added by the hop | errors |")
    w("|---|---|---|---|---|---|")
    c, e, n = (fixed[k]["response"] for k in ("catalog", "edge", "nginx_edge"))
    w(f"| catalog over gRPC | {fixed['catalog']['achieved_rate']:.0f} | {fmt_ms(c['p50_ms'])} | "
      f"{fmt_ms(c['p99_ms'])} | | {fixed['catalog']['failed']} |")
    w(f"| edge → catalog | {fixed['edge']['achieved_rate']:.0f} | {fmt_ms(e['p50_ms'])} | "
      f"{fmt_ms(e['p99_ms'])} | edge: {e['p99_ms'] - c['p99_ms']:+.2f} | {fixed['edge']['failed']} |")
    w(f"| nginx → edge → catalog | {fixed['nginx_edge']['achieved_rate']:.0f} | "
      f"{fmt_ms(n['p50_ms'])} | {fmt_ms(n['p99_ms'])} | nginx: {n['p99_ms'] - e['p99_ms']:+.2f} | "
      f"{fixed['nginx_edge']['failed']} |")
    w("")
    w(f"## The edge mix at {MIX_RATE} req/s, open loop (title 70, browse 10, home 10, "
      f"rate 5, progress 5)")
    w("")
    w(f"achieved {mix['achieved_rate']:.0f} req/s, errors {mix['error_percent']:.2f} %, "
      f"late sends {mix['late']['percent']:.2f} %"
      f"{' (generator saturated)' if mix['generator_saturated'] else ''}, "
      f"overall p50 {mix['response']['p50_ms']:.2f} ms, p99 {mix['response']['p99_ms']:.2f} ms")
    w("")
    w("| operation | completed | errors | p50 ms | p99 ms |")
    w("|---|---|---|---|---|")
    for op in mix["operations"]:
        w(f"| {op['name']} | {op['completed']} | {op['errors']} | "
          f"{fmt_ms(op['response']['p50_ms'])} | {fmt_ms(op['response']['p99_ms'])} |")
    w("")
    w("## Generators on the same endpoint (edge GET title)")
    w("")
    w("| generator | mode | req/s | CPU ms per 1,000 req | vs wrk | late sends |")
    w("|---|---|---|---|---|---|")
    wrk_cost = gen_wrk["cpu_s"] * 1e6 / max(1.0, gen_wrk["requests"])

    def cost(r):
        n = r["completed"] + r.get("warmup_completed", 0)
        return r["cpu_s"] * 1e6 / max(1, n)

    w(f"| wrk | closed, {CONNS} conns | {gen_wrk['rate']:.0f} | {wrk_cost:.1f} | 1.00 | n/a |")
    w(f"| fleet load | closed, {CONNS} workers | {gen_closed['achieved_rate']:.0f} | "
      f"{cost(gen_closed):.1f} | {cost(gen_closed) / wrk_cost:.2f} | n/a |")
    w(f"| fleet load | open, {gen_open['run']['target_rate']:.0f}/s (wrk's rate) | "
      f"{gen_open['achieved_rate']:.0f} | {cost(gen_open):.1f} | {cost(gen_open) / wrk_cost:.2f} | "
      f"{gen_open['late']['percent']:.2f} %"
      f"{' (saturated)' if gen_open['generator_saturated'] else ''} |")
    w("")
    w("## Memory per instance (RSS, MB)")
    w("")
    own, own_private = raw["rss_kb"]["own_binary_idle"], raw["rss_kb"]["own_binary_idle_private"]
    w("| service | own binary, idle | own binary, idle, private | fleet up: instances | "
      "fleet up: idle (mean) | fleet up: idle (max) | fleet up: idle, private (mean) | "
      "fleet up: under the mix (max) |")
    w("|---|---|---|---|---|---|---|---|")
    for svc in sorted(idle):
        kbs, private = idle[svc], idle_private.get(svc, [0])
        w(f"| {svc} | {own.get(svc, 0) / 1024:.1f} | {own_private.get(svc, 0) / 1024:.1f} | "
          f"{len(kbs)} | {sum(kbs) / len(kbs) / 1024:.1f} | {max(kbs) / 1024:.1f} | "
          f"{sum(private) / len(private) / 1024:.1f} | {max(peak.get(svc, [0])) / 1024:.1f} |")
    w("")
    w("\"Own binary\": one instance of each service from its own binary (as the images "
      "run it), on embedded defaults. `fleet up` runs every instance from the one "
      "multi-call `fleet` binary, so its RSS also counts the pages of every other "
      "service's code it maps (shared between instances); private is what one more "
      "instance costs.")
    w("")
    w("## Targets")
    w("")
    targets = []
    edge_share = rows["edge"]["achieved_rate"] / echo
    targets.append(("edge full path ≥ 40 % of the raw tonic hop's req/s",
                    f"{edge_share * 100:.0f} %", edge_share >= 0.40))
    edge_adds, nginx_adds = e["p99_ms"] - c["p99_ms"], n["p99_ms"] - e["p99_ms"]
    targets.append(("the edge adds no more p99 than nginx in front of it",
                    f"edge {edge_adds:+.2f} ms, nginx {nginx_adds:+.2f} ms", edge_adds <= nginx_adds))
    cost_ratio = cost(gen_closed) / wrk_cost
    targets.append(("fleet load ≤ 1.5× wrk's CPU per request", f"{cost_ratio:.2f}×",
                    cost_ratio <= 1.5))
    rate_share = gen_open["achieved_rate"] / gen_wrk["rate"]
    targets.append(("fleet load sustains ≥ 90 % of wrk's rate (open loop at wrk's rate)",
                    f"{rate_share * 100:.0f} % ({gen_open['late']['percent']:.1f} % of sends "
                    f"more than 1 ms late)", rate_share >= 0.90))
    mix_ok = (mix["achieved_rate"] >= 0.98 * MIX_RATE and mix["response"]["p99_ms"] < 50
              and mix["error_percent"] < 0.1)
    targets.append((f"the edge mix holds {MIX_RATE} req/s open loop at p99 < 50 ms",
                    f"{mix['achieved_rate']:.0f} req/s, p99 {mix['response']['p99_ms']:.1f} ms, "
                    f"{mix['error_percent']:.2f} % errors", mix_ok))
    worst = max((kb, svc) for svc, kb in own.items())
    fleet_worst = max((sum(k) / len(k), s) for s, k in idle.items())
    targets.append(("idle RSS ≤ 15 MB per service (own binary, as deployed)",
                    f"largest: {worst[1]} {worst[0] / 1024:.1f} MB (under fleet up: "
                    f"{fleet_worst[1]} {fleet_worst[0] / 1024:.1f} MB)", worst[0] / 1024 <= 15))
    w("| target | this run | met |")
    w("|---|---|---|")
    for name, got, ok in targets:
        w(f"| {name} | {got} | {'yes' if ok else 'no'} |")
    if QUICK:
        w("")
        w("(--quick: phases too short and rates too low for the targets to mean anything.)")
    if sweep:
        w("")
        w(f"## Sweep: edge GET title, open loop, {SWEEP_SECS} s per point")
        w("")
        w("| catalog 1.2 instances | offered | achieved | p50 ms | p99 ms | errors % | late % |")
        w("|---|---|---|---|---|---|---|")
        for s in sweep:
            w(f"| {s['catalogs']} | {s['rate']} | {s['achieved']:.0f} | {fmt_ms(s['p50_ms'])} | "
              f"{fmt_ms(s['p99_ms'])} | {s['error_percent']:.2f} | {s['late_percent']:.1f}"
              f"{' (saturated)' if s['generator_saturated'] else ''} |")
        w("")
        w(f"plot: {os.path.join(OUT, 'sweep.png')}")
    w("")
    return "\n".join(L)


def plot(sweep):
    data = os.path.join(OUT, "sweep.json")
    with open(data, "w") as f:
        json.dump(sweep, f)
    png = os.path.join(OUT, "sweep.png")
    code = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
sweep, png, title = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
for ax, key, label in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
    for n in sorted({s["catalogs"] for s in sweep}):
        pts = [s for s in sweep if s["catalogs"] == n]
        # Successful answers per second: past saturation the edge sheds
        # (fast 503s), so the curve turns back instead of running on.
        ax.plot([s["achieved"] * (1 - s["error_percent"] / 100) for s in pts],
                [s[key] for s in pts], marker="o", label=f"catalog 1.2 x{n}")
        for s in pts:
            ax.annotate(str(s["rate"]), (s["achieved"] * (1 - s["error_percent"] / 100), s[key]),
                        textcoords="offset points", xytext=(3, 3), fontsize=7, alpha=0.6)
    ax.set_xlabel("successful requests/s (GET /api/v1/titles/{id}); labels: offered rate")
    ax.set_ylabel(f"{label} response time, ms (log)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(f"{label} vs throughput")
fig.suptitle(title)
fig.tight_layout()
fig.savefig(png, dpi=110)
"""
    title = f"fleet edge, open loop, {SWEEP_SECS} s per point, {os.cpu_count()} cores ({PROFILE})"
    r = subprocess.run([PLOT_PYTHON, "-c", code, data, png, title], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"plot failed: {r.stderr[-2000:]}")
    print(f"plot written: {png}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            stop(p, timeout=30)
