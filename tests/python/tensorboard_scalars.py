"""Reads a run's TensorBoard event files with TensorBoard's own EventAccumulator.

Usage: tensorboard_scalars.py DIR
Prints JSON {tag: [[step, value], ...]} of every scalar, in file order.
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
