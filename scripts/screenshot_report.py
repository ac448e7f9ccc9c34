"""Render an HTML report in headless Chromium to a PNG and check the picture is not blank.

    python scripts/screenshot_report.py lake/report.html report.png [--width 1400] [--height 6000]

Needs `chromium` (Debian: `apt-get install -y chromium`; also found as chromium-browser / google-chrome).
Exit 0 and the PNG path on stdout when the screenshot has real content; exit 1 when Chromium fails or the
picture is (nearly) one colour; exit 2 when no Chromium is installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage"]


def find_chromium() -> str | None:
    for c in CANDIDATES:
        path = c if os.path.isabs(c) and os.access(c, os.X_OK) else shutil.which(c)
        if path:
            return path
    return None


def screenshot(html_path: str, png_path: str, width: int = 1400, height: int = 6000, timeout: int = 180) -> str:
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium found (apt-get install -y chromium)")
    png_path = os.path.abspath(png_path)
    os.makedirs(os.path.dirname(png_path), exist_ok=True)
    if os.path.exists(png_path):
        os.remove(png_path)
    with tempfile.TemporaryDirectory(prefix="lmr-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png_path}",
               f"--window-size={width},{height}", "file://" + os.path.abspath(html_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not os.path.exists(png_path) or os.path.getsize(png_path) == 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {' | '.join(tail)}")
    return png_path


def image_stats(png_path: str) -> dict:
    """Shape, pixel standard deviation, share of non-white pixels, and rows holding anything but background."""
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(png_path)  # float32 in [0, 1], H x W x (3|4)
    rgb = img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
    bg = rgb[0, 0]
    differs = np.abs(rgb - bg).max(axis=2) > 0.02
    return {"height": int(rgb.shape[0]), "width": int(rgb.shape[1]), "std": float(rgb.std()),
            "non_background": float(differs.mean()), "content_rows": int(differs.any(axis=1).sum()),
            "colourful": float((rgb.max(axis=2) - rgb.min(axis=2) > 0.15).mean())}


def check_not_blank(stats: dict, min_std: float = 0.02, min_content_rows: int = 200) -> None:
    if stats["std"] < min_std or stats["content_rows"] < min_content_rows:
        raise RuntimeError(f"screenshot looks blank: pixel std {stats['std']:.4f}, "
                           f"{stats['content_rows']} rows with content")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="screenshot_report", description=__doc__.split("\n\n")[0])
    p.add_argument("html", help="report HTML file")
    p.add_argument("png", help="PNG to write")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=6000)
    args = p.parse_args(argv)
    if not os.path.exists(args.html):
        print(f"screenshot_report: error: {args.html} does not exist", file=sys.stderr)
        return 2
    try:
        path = screenshot(args.html, args.png, args.width, args.height)
    except FileNotFoundError as e:
        print(f"screenshot_report: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"screenshot_report: failed: {e}", file=sys.stderr)
        return 1
    stats = image_stats(path)
    try:
        check_not_blank(stats)
    except RuntimeError as e:
        print(f"screenshot_report: failed: {e}", file=sys.stderr)
        return 1
    print(f"{path}: {stats['width']}x{stats['height']}, pixel std {stats['std']:.3f}, "
          f"{100 * stats['non_background']:.1f}% non-background, {stats['content_rows']} content rows, "
          f"{100 * stats['colourful']:.1f}% coloured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
