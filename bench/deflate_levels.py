"""Deflate level against size on realistic images (not part of the tests).

    python bench/deflate_levels.py [--repeat 3]

Compresses the voxel data of two images shaped like the HBCD benchmark tree (T1w 176x176x160 and
BOLD 64x64x36x40 int16, smooth head + noise, as ``bench/hbcd_deid.py`` writes them) with zlib and
isal (igzip) at several levels, and inflates the result, on one thread. Prints a Markdown table:
seconds, MB/s and output size relative to zlib level 6 (what the platform used to write).
Writes ``bench/deflate_levels_results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from hbcd_deid import synthetic_volume  # bench/ is on sys.path: run as a script
from isal import isal_zlib

OUT = Path(__file__).with_name("deflate_levels_results.json")


def _image(shape: tuple[int, ...], seed: int) -> bytes:
    return nib.Nifti1Image(synthetic_volume(shape, seed), np.eye(4)).to_bytes()


def _deflate(lib, level: int) -> Callable[[bytes], bytes]:  # noqa: ANN001
    def run(data: bytes) -> bytes:
        c = lib.compressobj(level, lib.DEFLATED, -15)
        return c.compress(data) + c.flush()

    return run


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    images = {"T1w": _image((176, 176, 160), 1), "BOLD": _image((64, 64, 36, 40), 2)}
    codecs = {
        "zlib 6": _deflate(zlib, 6),
        "zlib 1": _deflate(zlib, 1),
        "isal 0": _deflate(isal_zlib, 0),
        "isal 1": _deflate(isal_zlib, 1),
        "isal 2": _deflate(isal_zlib, 2),
        "isal 3": _deflate(isal_zlib, 3),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    print("| image | codec | deflate s | MB/s | size / zlib 6 | inflate s (zlib / isal) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, data in images.items():
        ref = len(codecs["zlib 6"](data))
        results[name] = {}
        for codec, fn in codecs.items():
            out = fn(data)
            secs = _best(lambda fn=fn, data=data: fn(data), args.repeat)
            inf_z = _best(lambda out=out: zlib.decompress(out, -15), args.repeat)
            inf_i = _best(lambda out=out: isal_zlib.decompress(out, -15), args.repeat)
            results[name][codec] = {
                "deflate_seconds": secs,
                "deflate_mb_per_s": len(data) / secs / 1e6,
                "size_ratio_vs_zlib6": len(out) / ref,
                "inflate_seconds_zlib": inf_z,
                "inflate_seconds_isal": inf_i,
                "input_bytes": len(data),
            }
            print(
                f"| {name} ({len(data) / 1e6:.1f} MB) | {codec} | {secs:.3f} | "
                f"{len(data) / secs / 1e6:.0f} | {len(out) / ref:.3f} | {inf_z:.3f} / {inf_i:.3f} |"
            )
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
