"""The placeholder backend's pictures: `_core.placeholder_images` against Pillow encoding
the same pixels as PNG, image by image (the pixels are decoded once, outside the timing).

Small pictures (filtered scanlines up to 1 KiB: 18x18 RGB) are stored in the PNG
uncompressed; larger ones are compressed (zlib level 3). The table gives, per side, the
median microseconds per image over the repeats, the ratio to Pillow and each one's bytes
per image.

    python benches/bench_placeholder.py
    python benches/bench_placeholder.py --sides 4 64 --images 2000 --repeats 7
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import time

from imagetask import _core


def placeholder_us(prompts: list[str], side: int) -> float:
    started = time.perf_counter()
    _core.placeholder_images(prompts, num_generations=1, seed=0, width=side, height=side)
    return (time.perf_counter() - started) / len(prompts) * 1e6


def pillow_us(pictures: list[object]) -> float:
    started = time.perf_counter()
    for picture in pictures:
        picture.save(io.BytesIO(), format="PNG")  # type: ignore[attr-defined]
    return (time.perf_counter() - started) / len(pictures) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[4, 8, 16, 32, 64, 256])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        from PIL import Image
    except ImportError:
        sys.exit("bench_placeholder needs Pillow: pip install '.[images]'")
    prompts = [f"a photo of object number {i}" for i in range(args.images)]
    print(
        f"# placeholder PNGs, {args.images:,} per run; {platform.machine()}, "
        f"Python {platform.python_version()}; repeats={args.repeats}"
    )
    print("| side | imagetask us/image | Pillow us/image | vs Pillow | bytes | Pillow's bytes |")
    print("|---:|---:|---:|---:|---:|---:|")
    for side in args.sides:
        made = _core.placeholder_images(prompts, num_generations=1, seed=0, width=side, height=side)
        pictures = [Image.open(io.BytesIO(images[0])).convert("RGB") for images in made]
        ours = statistics.median(placeholder_us(prompts, side) for _ in range(args.repeats))
        theirs = statistics.median(pillow_us(pictures) for _ in range(args.repeats))
        size = statistics.mean(len(images[0]) for images in made)
        buffer = io.BytesIO()
        pictures[0].save(buffer, format="PNG")
        print(
            f"| {side} | {ours:,.2f} | {theirs:,.2f} | {theirs / ours:.1f}x | {size:,.0f} "
            f"| {len(buffer.getvalue()):,} |"
        )


if __name__ == "__main__":
    main()
