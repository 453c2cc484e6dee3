#!/usr/bin/env python3
"""Official-format checkpoints written by PyTorch's own torch.save, for crates/selfcon/tests/integration/interop.rs.

Run with torch installed (outputs committed):
  python scripts/make_official_checkpoints.py crates/selfcon/tests/data/official

The model is the official ConResNet as ../shared/reference/SPEC.md describes it (§2.1-2.3):
ResNet-18, CIFAR stem, SelfCon `fc` exit after layer2 (`selfcon_pos [False,True,False]`), projection
heads, registered in the official order (so state-dict order and `model.parameters()` order are
the official ones). Weights are a short periodic pattern instead of random numbers, so that each
45 MB archive compresses to a few kilobytes (gzip applied twice); every value is still distinct
within a period and the forward pass is an ordinary one.

Files (each `NAME.pth.gz.gz`, the torch.save output gzipped twice):
  selfcon_r18.pth    {'opt': argparse.Namespace, 'model', 'optimizer' (SGD with momentum buffers), 'epoch': 3}
  module_prefix.pth  the same, saved with the encoder wrapped in DataParallel (`encoder.module.*`) and
                     the shortcut modules named `downsample` (older official code)
  state_dict.pth     torch.save(model.state_dict())
  forbidden.pth      a checkpoint whose pickle calls os.system (creates /tmp/selfcon_forbidden_global_ran)
  state_dict_f16_p5.pth  the state dict in float16, pickle protocol 5
  state_dict_f64_p4.pth  the state dict in float64, pickle protocol 4
  views.pth          tensors that are views into one shared storage (offsets), pickle protocol 3
  transposed.pth     a non-contiguous (transposed) tensor: must be refused with a clear error
  ce_selfcon_r18.pth main_ce.py's checkpoint of `--method selfcon` (CEResNet: encoder, logit_fc, l_fc,
                     feat_fc, frozen f_fc), CIFAR-10, SGD momentum for every trainable parameter, epoch 2
and expected.json: the encoder's eval-mode features of fixed inputs, and the parameters' sums after
one official SGD step (lr 0.05, momentum 0.9, weight decay 1e-4) from the saved momentum with a
patterned gradient; under "ce" the same for the CEResNet, with its logits.
"""
import argparse
import gzip
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def pattern(n, j, period=29):
    """n values in [-1, 1], periodic in the flat index, shifted by the tensor's number j."""
    i = torch.arange(n, dtype=torch.int64)
    return (((i * 37 + j * 11) % period) - (period // 2)).to(torch.float32) / (period // 2)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut_name="shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut_name = shortcut_name
        sc = nn.Sequential()
        if stride != 1 or cin != cout:
            sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        setattr(self, shortcut_name, sc)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + getattr(self, self.shortcut_name)(x))


class Encoder(nn.Module):
    """ResNet-18 (CIFAR stem) with an fc exit after layer2: returns ([exit features], backbone features)."""

    def __init__(self, shortcut_name="shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for s, (width, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            blocks = [BasicBlock(cin, width, stride, shortcut_name), BasicBlock(width, width, 1, shortcut_name)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            cin = width
        # One slot per candidate exit; only position 1 (after layer2) is enabled.
        self.selfcon_layer = nn.ModuleList([nn.Identity(), nn.Linear(128, 512), nn.Identity()])

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        sub = [self.selfcon_layer[1](torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))]
        out = self.layer4(self.layer3(out))
        return sub, torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def head():
    return nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))


class ConResNet(nn.Module):
    def __init__(self, shortcut_name="shortcut"):
        super().__init__()
        self.encoder = Encoder(shortcut_name)
        self.head = head()
        self.sub_heads = nn.ModuleList([head()])


class CEResNet(nn.Module):
    """main_ce.py's model for --method selfcon (resnet_big.CEResNet): modules in the official order."""

    def __init__(self, num_classes=10, dim_out=128):
        super().__init__()
        self.encoder = Encoder()
        self.logit_fc = nn.ModuleList([nn.Linear(512, num_classes)])
        self.l_fc = nn.Linear(512, num_classes)
        self.feat_fc = nn.ModuleList([nn.Linear(512, dim_out)])
        self.f_fc = nn.Linear(512, dim_out)
        for p in self.f_fc.parameters():
            p.requires_grad = False


def fill(model):
    with torch.no_grad():
        for j, (name, t) in enumerate(model.state_dict().items()):
            if name.endswith("num_batches_tracked"):
                t.fill_(1000 + j)
                continue
            p = pattern(t.numel(), j).view(t.shape)
            if name.endswith("running_var"):
                t.copy_(1.0 + 0.5 * p.abs())
            elif name.endswith("running_mean"):
                t.copy_(0.1 * p)
            elif ".bn" in name or "shortcut.1" in name or "downsample.1" in name or name.startswith("encoder.bn1"):
                t.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * p)
            else:
                fan_in = t[0].numel() if t.dim() > 1 else t.numel()
                t.copy_(p * (6.0 / fan_in) ** 0.5 * 0.5)


def options():
    # What main_represent.py's argparse produces for the README recipe (values as the official defaults).
    return argparse.Namespace(
        exp_name="resnet_fc_[False,True,False]", seed=2022, print_freq=10, save_freq=0,
        save_dir="./save/representation", resume="", dataset="cifar100", data_folder="datasets/",
        batch_size=1024, num_workers=16, model="resnet18", selfcon_pos="[False,True,False]",
        selfcon_arch="resnet", selfcon_size="fc", feat_dim=128, epochs=1000, learning_rate=0.5,
        lr_decay_epochs=[700, 800, 900], lr_decay_rate=0.1, weight_decay=1e-4, momentum=0.9,
        precision=True, cosine=True, warm=True, temp=0.1, method="SelfCon", multiview=False, label=True,
        alpha=0.0, randaug=False, weakaug=False, n_cls=100, warm_epochs=10, warmup_from=0.01,
        warmup_to=0.498877, model_name="SelfCon_cifar100_resnet18_lr_0.5", save_folder="./save/x",
    )


def ce_options():
    # main_ce.py's argparse for `--method selfcon` on CIFAR-10 with a ResNet-18 fc exit.
    return argparse.Namespace(
        exp_name="", seed=0, print_freq=10, resume="", dataset="cifar10", data_folder="datasets/",
        batch_size=256, num_workers=16, model="resnet18", selfcon_pos="[False,True,False]",
        selfcon_arch="resnet", selfcon_size="fc", dim_out=128, epochs=500, learning_rate=0.2,
        lr_decay_epochs=[350, 400, 450], lr_decay_rate=0.1, weight_decay=1e-4, momentum=0.9,
        cosine=True, warm=False, method="selfcon", alpha=1.0, beta=0, gamma=0.8, temperature=3.0,
        model_path="./save/distill/selfcon/cifar10_models", n_cls=10, n_data=50000,
        model_name="selfcon_cifar10_resnet18_lr_0.2_decay_0.0001_bsz_256_seed_0_cosine", save_folder="./save/x",
    )


def optimizer_with_momentum(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for j, p in enumerate(model.parameters()):
        if p.requires_grad:  # a frozen parameter never gets a gradient, so never a buffer
            opt.state[p]["momentum_buffer"] = 0.01 * pattern(p.numel(), 500 + j).view(p.shape)
    return opt


def sgd_step(model, opt):
    """One official SGD step from the saved momentum, gradient = a pattern; the result, by name."""
    for j, p in enumerate(model.parameters()):
        if p.requires_grad:
            p.grad = 0.001 * pattern(p.numel(), 900 + j).view(p.shape)
    opt.step()
    names = [k for k in model.state_dict() if not k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")]
    params = list(model.parameters())
    return {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4,
            "grad": "0.001 * pattern(numel, 900 + index) for each trainable parameter",
            "param_sums": {n: float(p.detach().double().sum()) for n, p in zip(names, params)},
            "param_first": {n: float(p.detach().reshape(-1)[0]) for n, p in zip(names, params)},
            "momentum_first": {n: float(opt.state[p]["momentum_buffer"].reshape(-1)[0])
                               for n, p in zip(names, params) if p.requires_grad}}


def save_gz2(obj, path, protocol=2):
    tmp = path + ".tmp"
    torch.save(obj, tmp, pickle_protocol=protocol)
    with open(tmp, "rb") as f:
        once = gzip.compress(f.read(), 9, mtime=0)
    os.remove(tmp)
    with open(path + ".gz.gz", "wb") as f:
        f.write(gzip.compress(once, 9, mtime=0))


class Forbidden:
    def __reduce__(self):
        return (os.system, ("touch /tmp/selfcon_forbidden_global_ran",))


def inputs():
    return pattern(4 * 3 * 32 * 32, 7, period=31).view(4, 3, 32, 32)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = ConResNet()
    fill(model)
    opt = optimizer_with_momentum(model)
    save_gz2({"opt": options(), "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
             os.path.join(out, "selfcon_r18.pth"))

    old = ConResNet(shortcut_name="downsample")
    old.load_state_dict({k.replace("shortcut", "downsample"): v for k, v in model.state_dict().items()})
    old.encoder = nn.DataParallel(old.encoder)
    old_opt = optimizer_with_momentum(old)
    save_gz2({"opt": options(), "model": old.state_dict(), "optimizer": old_opt.state_dict(), "epoch": 3},
             os.path.join(out, "module_prefix.pth"))

    save_gz2(model.state_dict(), os.path.join(out, "state_dict.pth"))
    save_gz2({"opt": options(), "model": {"encoder.conv1.weight": Forbidden()}, "epoch": 1},
             os.path.join(out, "forbidden.pth"))

    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_gz2(half, os.path.join(out, "state_dict_f16_p5.pth"), protocol=5)
    double = {k: (v.double() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_gz2(double, os.path.join(out, "state_dict_f64_p4.pth"), protocol=4)
    shared = torch.arange(100, dtype=torch.float32)
    save_gz2({"first": shared[10:20], "matrix": shared[40:60].view(4, 5), "scalar": shared[99]},
             os.path.join(out, "views.pth"), protocol=3)
    save_gz2({"t": torch.arange(12, dtype=torch.float32).view(3, 4).t()}, os.path.join(out, "transposed.pth"))

    model.eval()
    with torch.no_grad():
        sub, backbone = model.encoder(inputs())
    step = sgd_step(model, opt)

    ce = CEResNet()
    fill(ce)
    ce_opt = optimizer_with_momentum(ce)
    save_gz2({"opt": ce_options(), "model": ce.state_dict(), "optimizer": ce_opt.state_dict(), "epoch": 2},
             os.path.join(out, "ce_selfcon_r18.pth"))
    ce.eval()
    with torch.no_grad():
        ce_sub, ce_backbone = ce.encoder(inputs())
        ce_logits, ce_sub_logits = ce.l_fc(ce_backbone), ce.logit_fc[0](ce_sub[0])
    ce_step = sgd_step(ce, ce_opt)
    expected = {
        "torch_version": torch.__version__,
        "inputs": "pattern(4*3*32*32, 7, period=31) as [4, 3, 32, 32]",
        "backbone": backbone.tolist(),
        "sub_network.0": sub[0].tolist(),
        "sgd_step": step,
        "ce": {"logits": ce_logits.tolist(), "sub_logits.0": ce_sub_logits.tolist(), "sgd_step": ce_step},
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
