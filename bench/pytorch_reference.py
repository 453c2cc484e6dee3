#!/usr/bin/env python3
"""The official SelfCon training step, written from the specification (SPEC §2, §4) in PyTorch, for
side-by-side checks and measurements against selfcon-rs on the same machine.

  python bench/pytorch_reference.py trace WEIGHTS   # 3 SGD steps from WEIGHTS on a fixed input
  python bench/pytorch_reference.py overfit         # loss over steps on one fixed random batch

WEIGHTS is written by `cargo run --release --example step_trace -- WEIGHTS`, which prints the same
3 steps computed by selfcon-rs (ResNet-18, CIFAR stem, fc exit after layer2); the weights are loaded
here strictly by their state-dict names. Needs torch.
"""
import json
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Encoder(nn.Module):
    """ResNet-18, CIFAR stem, one fc exit after layer2 (selfcon_pos [False,True,False], size fc)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.selfcon_layer = nn.ModuleList([nn.Identity(), nn.Linear(128, 512)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        sub = self.selfcon_layer[1](torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        out = self.layer4(self.layer3(out))
        return [sub], torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class ConModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))
        self.sub_heads = nn.ModuleList([nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))])

    def forward(self, x):
        subs, feat = self.encoder(x)
        return [F.normalize(h(s), dim=1) for h, s in zip(self.sub_heads, subs)], F.normalize(self.head(feat), dim=1)


def con_loss(features, labels, temperature=0.1, base_temperature=0.07):
    """SPEC §4.1, default mode, labels on."""
    bsz, views = features.shape[0], features.shape[1]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float().repeat(views, views)
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    logits = contrast @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    not_self = 1 - torch.eye(views * bsz)
    mask = mask * not_self
    log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = t.clone()
    return out


def step(model, opt, x, y):
    subs, feat = model(x)
    loss = con_loss(torch.stack(subs + [feat], dim=1), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main():
    torch.manual_seed(0)
    mode = sys.argv[1] if len(sys.argv) > 1 else "overfit"
    model = ConModel()
    if mode == "trace":
        model.load_state_dict(read_safetensors(sys.argv[2]), strict=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        x = (torch.arange(16 * 3 * 32 * 32, dtype=torch.float32) * 0.37).sin().view(16, 3, 32, 32)
        y = torch.arange(16) % 4
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(32, 3, 32, 32, generator=g)
        y = torch.arange(32) % 4
    for i in range(3 if mode == "trace" else 15):
        print(f"step {i} loss {step(model, opt, x, y):.10f}")


main()
