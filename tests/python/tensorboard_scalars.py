"""Reads a run's TensorBoard event files with TensorBoard's own EventAccumulator.

Usage: tensorboard_scalars.py DIR
Prints JSON {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width, height,
sha256 of the encoded image], ...]}} of every scalar and image, in file order.
"""
import hashlib
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in tags["scalars"]}
    images = {
        tag: [
            [e.step, e.width, e.height, hashlib.sha256(e.encoded_image_string).hexdigest()]
            for e in acc.Images(tag)
        ]
        for tag in tags["images"]
    }
    print(json.dumps({"scalars": scalars, "images": images}))


if __name__ == "__main__":
    main()
