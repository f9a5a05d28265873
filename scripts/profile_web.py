#!/usr/bin/env python3
"""Profile sonosam's encoder or decoder in headless Chromium: where the time goes.

Opens the bench page of a built app folder (scripts/build-web.sh) like scripts/bench_web.py,
with Chromium's sampling profiler (DevTools protocol `Profiler`) running on the page, and
prints the functions with the most self time (wasm functions by their names in the module's
name section), grouped by a short name, with their share of the samples.

    target/bench-venv/bin/python scripts/profile_web.py --dist target/bench-dist [--part encoder] [--top 40]

Single-threaded build only: the threaded build's pool runs in other workers, which the page's
profiler does not see.
"""
import argparse
import collections
import json
import re
import time

from bench_web import browser, serve


def short(name):
    """`burn_flex::ops::matmul::gemm_call::h1234` → `burn_flex::ops::matmul::gemm_call`."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return name[:140]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", required=True)
    ap.add_argument("--part", default="encoder", choices=["encoder", "decoder", "decoder3"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", help="also write the raw .cpuprofile here (opens in Chromium's DevTools)")
    args = ap.parse_args()
    server = serve(args.dist)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    driver = browser()
    try:
        driver.execute_cdp_cmd("Profiler.enable", {})
        driver.execute_cdp_cmd("Profiler.setSamplingInterval", {"interval": 500})
        driver.execute_cdp_cmd("Profiler.start", {})
        driver.get(f"{base}/bench.html?part={args.part}&warmup=0&runs={args.runs}&worker=0")
        t0 = time.time()
        while time.time() - t0 < 900:
            if driver.find_element("id", "status").text in ("done", "failed"):
                break
            time.sleep(0.25)
        profile = driver.execute_cdp_cmd("Profiler.stop", {})["profile"]
    finally:
        driver.quit()
        server.shutdown()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(profile, f)
    nodes = {n["id"]: n for n in profile["nodes"]}
    counts = collections.Counter(profile["samples"])
    self_time = collections.Counter()
    for node_id, n in counts.items():
        frame = nodes[node_id]["callFrame"]
        name = frame["functionName"] or f"({frame['url'].rsplit('/', 1)[-1] or 'program'})"
        self_time[short(name)] += n
    busy = sum(n for name, n in self_time.items() if name not in ("(idle)", "(program)"))
    total = sum(self_time.values())
    print(f"{total} samples, {busy} busy")
    for name, n in self_time.most_common(args.top):
        print(f"{100 * n / busy:6.2f}%  {name}")


if __name__ == "__main__":
    main()
