"""Makes model inputs from the sample images (fixtures/images): random crops, each turned by
0, 90, 180 or 270 degrees, resized to the model's input and normalized. One float32 .npy file
per sample, shaped like the input (batch 1, NCHW). A seed picks the samples, so a calibration
set and a held-out set come from different seeds.

usage: make_inputs.py OUT_DIR --shape 1,3,224,224 --count 32 --seed 1 [--norm imagenet|half]
                      [--raw-nhwc FILE]

--raw-nhwc also writes all samples, before normalization, as one [N, H, W, 3] array in [0, 1]:
the calibration file onnx2tf takes (it normalizes with the mean and std it is given).
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

IMAGES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "images"
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--norm", choices=["imagenet", "half"], default="imagenet")
    ap.add_argument("--raw-nhwc")
    args = ap.parse_args()
    n, c, h, w = map(int, args.shape.split(","))
    assert n == 1 and c == 3, "batch 1, 3 channels"
    images = [Image.open(p).convert("RGB") for p in sorted(IMAGES.iterdir())]
    assert images, f"no images in {IMAGES}: run fixtures/fetch.sh"
    rng = np.random.default_rng(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = []
    for i in range(args.count):
        img = images[rng.integers(len(images))]
        img = img.rotate(90 * int(rng.integers(4)), expand=True)
        side_w, side_h = img.size
        scale = rng.uniform(0.3, 1.0)
        cw = max(8, int(min(side_w, side_h * w / h) * scale))
        ch = max(8, int(cw * h / w))
        x0 = int(rng.integers(0, max(1, side_w - cw + 1)))
        y0 = int(rng.integers(0, max(1, side_h - ch + 1)))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
        x = np.asarray(crop, dtype=np.float32) / 255.0
        raw.append(x)
        x = (x - MEAN) / STD if args.norm == "imagenet" else (x - 0.5) / 0.5
        np.save(out / f"sample_{i:04d}.npy", x.transpose(2, 0, 1)[None].astype(np.float32))
    if args.raw_nhwc:
        np.save(args.raw_nhwc, np.stack(raw).astype(np.float32))


if __name__ == "__main__":
    main()
