#!/usr/bin/env python3
"""Time sonosam in headless Chromium on the onnxruntime-web yardstick's inputs.

Serves a built app folder (scripts/build-web.sh) on 127.0.0.1 with the COOP/COEP headers
that make the page cross-origin isolated (needed for wasm threads), opens its bench.html in
Chromium through ChromeDriver (Selenium) once per configuration, and prints one JSON line
per configuration with the yardstick's fields, then one line with the first visit's
download size. Called by scripts/bench-web.sh.
"""
import argparse
import functools
import gzip
import http.server
import json
import os
import statistics
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


def serve(folder):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def quantile(sorted_values, p):
    """Linear interpolation between closest ranks (numpy's default), as the yardstick."""
    idx = (len(sorted_values) - 1) * p
    lo, hi = int(idx // 1), int(-(-idx // 1))
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (idx - lo)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def run_config(driver, base, config, part, build, threads, warmup, runs, timeout, refs):
    query = f"part={part}&warmup={warmup}&runs={runs}"
    if build == "mt":
        query += f"&build=mt&threads={threads}"
    t0 = time.time()
    driver.get(f"{base}/bench.html?{query}")
    status = ""
    while time.time() - t0 < timeout:
        status = driver.find_element("id", "status").text
        if status in ("done", "failed"):
            break
        time.sleep(0.25)
    out = {"config": config, "ok": False, "build": build, "part": part, "wall_s": round(time.time() - t0, 1)}
    if status != "done":
        out["error"] = driver.find_element("id", "error").text or f"timed out ({status})"
        return out
    r = json.loads(driver.find_element("id", "result").text)
    times = sorted(r["times_ms"])
    out.update({
        "ok": True,
        "median_ms": round(quantile(times, 0.5), 3), "p10_ms": round(quantile(times, 0.1), 3),
        "p90_ms": round(quantile(times, 0.9), 3), "mean_ms": round(statistics.fmean(times), 3),
        "min_ms": round(times[0], 3), "max_ms": round(times[-1], 3),
        "threads_requested": threads, "threads_effective": r["threads_effective"],
        "crossOriginIsolated": r["crossOriginIsolated"], "runs": len(times),
        "warmup_ms": [round(v, 3) for v in r["warmup_ms"]],
    })
    for key in ("wasm_memory_bytes", "js_heap_bytes", "in_worker"):
        if r.get(key) is not None:
            out[key] = r[key]
    if r.get("prepare_ms") is not None:
        out["prepare_ms"] = round(r["prepare_ms"], 3)
    # The yardstick's reference outputs: one mask (decoder), the embedding (encoder).
    if refs:
        if part == "decoder":
            ref = refs["decoder"]
            out["iou_diff_vs_ort_cpu"] = abs(r["iou"] - ref["iou"][0])
            out["mask_abs_sum_rel_diff_vs_ort_cpu"] = abs(r["abs_sum"] - ref["mask_abs_sum"]) / ref["mask_abs_sum"]
        elif part == "encoder":
            ref = refs["encoder"]
            out["emb_abs_sum_rel_diff_vs_ort_cpu"] = abs(r["abs_sum"] - ref["abs_sum"]) / ref["abs_sum"]
    return out


def transferred(path):
    """Bytes sent for `path`: its precompressed copy as `sonosam serve` sends it to Chromium
    (.br, else .gz, made by a release build), else gzip -9 as a static host would."""
    for ext, encoding in ((".br", "br"), (".gz", "gzip")):
        if os.path.exists(path + ext):
            return os.path.getsize(path + ext), encoding
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9)), "gzip -9"


def download(folder):
    """Bytes of a first visit as transferred: the app shell — the page, its UI module and the
    engine module its worker loads — and the weights the app downloads (the manifest's int8
    files when it lists them, else f16, as src/engine.rs). `bytes_shell`: a page that is not
    cross-origin isolated, on the CPU (the single-threaded engine, engine/);
    `bytes_shell_isolated`: one that is (the threaded engine, mt/, and its thread pool's
    scripts); `bytes_shell_webgpu`: a page on WebGPU (engine-webgpu/); `bytes_ui`: the page
    and its UI module alone."""
    ui = ["index.html", "style.css", "sonosam-web.js", "sonosam-web_bg.wasm", "worker.js", "sw.js"]
    engine = ["engine/sonosam-engine.js", "engine/sonosam-engine_bg.wasm"]
    webgpu = ["engine-webgpu/sonosam-engine.js", "engine-webgpu/sonosam-engine_bg.wasm"]
    threaded = ["mt/sonosam-engine.js", "mt/sonosam-engine_bg.wasm"]
    snippets = os.path.join(folder, "mt", "snippets")
    for root, _, names in os.walk(snippets):
        threaded += [os.path.relpath(os.path.join(root, n), folder) for n in names if n.endswith(".js")]
    with open(os.path.join(folder, "weights", "litemedsam.json")) as f:
        files = json.load(f)["files"]
    dtype = "i8" if {e["component"] for e in files if e["dtype"] == "i8"} >= {"image_encoder", "decoder"} else "f16"
    weights = ["weights/litemedsam.json"] + [f"weights/{e['file']}" for e in files if e["dtype"] == dtype]
    every = ui + engine + webgpu + threaded + weights
    sent = {f: transferred(os.path.join(folder, f)) for f in every if os.path.exists(os.path.join(folder, f))}
    sizes = {f: n for f, (n, _) in sent.items()}
    total = lambda names: sum(sizes.get(f, 0) for f in names)
    out = {"config": "sonosam-download", "encoding": {f: e for f, (_, e) in sent.items()}, "weights_dtype": dtype,
           "bytes_shell": total(ui + engine), "bytes_weights": total(weights),
           "bytes_shell_isolated": total(ui + threaded), "bytes_shell_webgpu": total(ui + webgpu),
           "bytes_ui": total(ui), "files": sizes}
    return out


def load_refs(yardstick):
    try:
        with open(os.path.join(yardstick, "web/models/ref_outputs.json")) as f:
            dec = json.load(f)["refs"]["decoder_single"]
        with open(os.path.join(yardstick, "web/models/encoder_ref.json")) as f:
            enc = json.load(f)["refs"]["encoder"]
        return {"decoder": dec, "encoder": enc}
    except (OSError, KeyError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", required=True)
    ap.add_argument("--group", default="all", choices=["all", "decoder", "encoder"])
    ap.add_argument("--yardstick", default="../shared/bench/onnxruntime-web")
    args = ap.parse_args()
    n = os.cpu_count() or 1
    dec_runs, dec_warm = int(os.environ.get("RUNS", 30)), int(os.environ.get("WARMUP", 3))
    enc_runs, enc_warm = int(os.environ.get("ENC_RUNS", 5)), int(os.environ.get("ENC_WARMUP", 1))
    timeout = float(os.environ.get("TIMEOUT_S", 600))
    threaded = os.path.isdir(os.path.join(args.dist, "mt"))
    configs = []
    parts = [("decoder", "decoder", "dec", dec_runs, dec_warm), ("decoder", "decoder3", "dec3", dec_runs, dec_warm),
             ("encoder", "encoder", "enc", enc_runs, enc_warm)]
    for group, part, tag, runs, warm in parts:
        if args.group in ("all", group):
            configs.append((f"sonosam-{tag}-t1", part, "st", 1, warm, runs))
            if threaded:
                configs.append((f"sonosam-{tag}-t{n}", part, "mt", n, warm, runs))
                # The threaded build on one thread: its kernel's fused multiply-adds alone.
                configs.append((f"sonosam-{tag}-t1-mt", part, "mt", 1, warm, runs))
    if not threaded:
        print(f"bench-web: no threaded build in {args.dist}/mt: single-thread configurations only", file=sys.stderr)
    refs = load_refs(args.yardstick)
    server = serve(args.dist)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    driver = browser()
    ok = True
    try:
        for config, part, build, threads, warm, runs in configs:
            print(f"bench-web: {config} ...", file=sys.stderr)
            out = run_config(driver, base, config, part, build, threads, warm, runs, timeout, refs)
            ok &= out["ok"]
            print(json.dumps(out), flush=True)
    finally:
        driver.quit()
        server.shutdown()
    print(json.dumps(download(args.dist)), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
