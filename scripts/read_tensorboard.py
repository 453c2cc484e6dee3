#!/usr/bin/env python3
"""Reads the TensorBoard event files under a folder with TensorBoard's own reader and prints every
scalar tag with its steps and values: an independent check of `--tensorboard`'s files.

    python3 -m pip install tensorboard
    python3 scripts/read_tensorboard.py save/representation/SelfCon/.../RUN_DIR
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(folder):
    acc = EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if not tags:
        sys.exit(f"no scalars in {folder}")
    for tag in sorted(tags):
        events = acc.Scalars(tag)
        shown = ", ".join(f"{e.step}:{e.value:.4g}" for e in events[:6])
        more = f", ... ({len(events)} in all)" if len(events) > 6 else ""
        print(f"{tag}: {shown}{more}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
