#!/usr/bin/env python3
"""The official SelfCon training step, written from the specification (SPEC §2, §4) in PyTorch, for
side-by-side checks and measurements against selfcon-rs on the same machine.

  python bench/pytorch_reference.py trace WEIGHTS   # 3 SGD steps from WEIGHTS on a fixed input
  python bench/pytorch_reference.py overfit         # loss over steps on one fixed random batch
  python bench/pytorch_reference.py bench [--method SelfCon|SupCon] [--precision fp16|bf16|fp32]
      [--batch_size 1024] [--device cuda|cpu] [--steps 20] [--warmup_steps 5] [--channels_last]
      [--end_to_end --dataset cifar10 --data_folder DIR --num_workers 16]
                                                    # what the official main_represent.py step costs

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
    """ResNet-18, CIFAR stem, one fc exit after layer2 (selfcon_pos [False,True,False], size fc),
    or no exit (SupCon's ConResNet)."""

    def __init__(self, exit=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            layers.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.selfcon_layer = nn.ModuleList([nn.Identity(), nn.Linear(128, 512)]) if exit else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        subs = [] if self.selfcon_layer is None else [self.selfcon_layer[1](torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))]
        out = self.layer4(self.layer3(out))
        return subs, torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class ConModel(nn.Module):
    def __init__(self, exit=True):
        super().__init__()
        self.encoder = Encoder(exit)
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))
        self.sub_heads = nn.ModuleList(
            [nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))] if exit else [])

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
    not_self = 1 - torch.eye(views * bsz, device=features.device)
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


def bench(argv):
    """Times the official pre-training step: ConResNet forward under autocast (fp16 + GradScaler on
    CUDA, as main_represent.py --precision), ConLoss, SGD, loss.item() every step; compute only on a
    fixed batch, or end to end with torchvision's PIL loader and the official transforms. NCHW as
    the official code runs; --channels_last puts the model and each batch in channels-last (for a
    like-for-like comparison with selfcon's --channels_last). Per step the host waits for the device
    at loss.item() and, with fp16, at GradScaler's found_inf check in scaler.step."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="pytorch_reference.py bench")
    p.add_argument("--method", default="SelfCon", choices=["SelfCon", "SupCon"])
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup_steps", type=int, default=5)
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--end_to_end", action="store_true")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data_folder", default="datasets")
    p.add_argument("--num_workers", type=int, default=16)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    selfcon = args.method == "SelfCon"
    model = ConModel(exit=selfcon).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    views = 1 if selfcon else 2
    bsz = args.batch_size

    if args.end_to_end:
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from torchvision_loader import open_train_set, pretrain_transform

        base = pretrain_transform(args.dataset)
        transform = base if selfcon else (lambda img: [base(img), base(img)])
        data = open_train_set(args.dataset, args.data_folder, transform)
        loader = torch.utils.data.DataLoader(data, batch_size=bsz, shuffle=True, num_workers=args.num_workers,
                                             pin_memory=cuda, drop_last=True, persistent_workers=True)

        def batches():
            while True:
                for x, y in loader:
                    yield (x if selfcon else torch.cat(x, dim=0)), y
        source = batches()
    else:
        x = torch.randn(bsz * views, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (bsz,), device=device)
        source = iter(lambda: (x, y), None)

    def one_step():
        images, labels = next(source)
        images = images.to(device, non_blocking=True).to(memory_format=fmt)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            subs, feat = model(images)
            if selfcon:
                features = torch.stack(subs + [feat], dim=1)
            else:
                f1, f2 = torch.split(feat, [bsz, bsz], dim=0)
                features = torch.stack([f1, f2], dim=1)
            loss = con_loss(features, labels)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.item()

    for _ in range(args.warmup_steps):
        one_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        last = one_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(), "cuda caching allocator, peak allocated"
    else:
        import resource
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak resident set (ru_maxrss)"
    print(json.dumps({
        "bench": "pytorch_reference", "mode": "end_to_end" if args.end_to_end else "compute", "device": str(device),
        "method": args.method, "batch_size": bsz, "precision": args.precision, "channels_last": args.channels_last,
        "num_workers": args.num_workers if args.end_to_end else 0, "steps": args.steps, "seconds": seconds,
        "ms_per_step": 1000 * seconds / args.steps, "images_per_s": bsz * args.steps / seconds,
        "peak_memory_bytes": peak, "peak_memory_kind": kind, "last_loss": last, "torch": torch.__version__,
        # Where each step makes the host wait for the device (as main_represent.py's loop does).
        "host_syncs_per_step": ["loss.item()"] + (["GradScaler found_inf (scaler.step)"] if scaler.is_enabled() else []),
    }))


def main():
    torch.manual_seed(0)
    mode = sys.argv[1] if len(sys.argv) > 1 else "overfit"
    if mode == "bench":
        return bench(sys.argv[2:])
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


if __name__ == "__main__":
    main()
