#!/usr/bin/env python3
"""Loads what `selfcon export` wrote from crates/selfcon/tests/data/official/selfcon_r18.pth into
PyTorch and checks it against the features PyTorch computed for that checkpoint (expected.json).
Optional (needs torch); the Rust tests check the same files with our own readers.

  python scripts/check_exports.py EXPORT_DIR   # holds r18.pth, r18.pt (torchscript), r18.onnx
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_official_checkpoints import ConResNet, inputs  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
expected = json.load(open(os.path.join(here, "..", "crates/selfcon/tests/data/official/expected.json")))
want_backbone = torch.tensor(expected["backbone"])
want_sub = torch.tensor(expected["sub_network.0"])
out = sys.argv[1]


def close(a, b, what):
    diff = (a - b).abs().max().item()
    assert diff <= 1e-4 * max(1.0, b.abs().max().item()), f"{what}: max diff {diff}"
    print(f"{what}: ok (max diff {diff:.2e})")


ckpt = torch.load(os.path.join(out, "r18.pth"), weights_only=True)
model = ConResNet()
model.load_state_dict(ckpt["model"], strict=True)
model.eval()
with torch.no_grad():
    sub, backbone = model.encoder(inputs())
close(backbone, want_backbone, "pth: torch.load(weights_only=True) + ConResNet.load_state_dict(strict=True), backbone")
close(sub[0], want_sub, "pth: sub-network")
print("pth epoch:", ckpt["epoch"])

ts = torch.jit.load(os.path.join(out, "r18.pt"))
with torch.no_grad():
    got = ts(inputs())
assert isinstance(got, tuple) and len(got) == 2, type(got)
close(got[0], want_backbone, "torchscript: backbone")
close(got[1], want_sub, "torchscript: sub-network")
with torch.no_grad():
    more = ts(torch.cat([inputs(), inputs()]))
close(more[0][4:], want_backbone, "torchscript: another batch size")

try:
    import onnx
    import onnxruntime
except ImportError:
    print("onnx / onnxruntime not installed: r18.onnx not checked")
else:
    path = os.path.join(out, "r18.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session = onnxruntime.InferenceSession(path)
    backbone, sub = session.run(None, {"images": inputs().numpy()})
    close(torch.from_numpy(backbone), want_backbone, "onnx (onnxruntime): backbone")
    close(torch.from_numpy(sub), want_sub, "onnx (onnxruntime): sub-network")
