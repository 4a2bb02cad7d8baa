"""Issue 20's branding figures: what an upload costs to check (decode, re-encode)
at the sizes the service accepts, what the input guard costs on a body that
carries one, and the public branding read over HTTP (known and unknown ids).

    .venv/bin/python -m bench.branding          # SQLite in a temporary directory
    DATABASE_URL=postgresql://... .venv/bin/python -m bench.branding
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Client, Sample, pct, serve, timed  # noqa: E402
from billing.cli import run_migrations  # noqa: E402
from billing.input_guard import json_too_deep  # noqa: E402
from billing.organizations import pictures  # noqa: E402


def best_of(rounds: int, work: Callable[[], Any]) -> float:
    """The best time of `rounds` runs, in ms (the machine is shared: the best is the cost)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def photo_jpeg(limit: int) -> bytes:
    """A noisy photo of 2048x1536, at the highest quality that fits in `limit` bytes."""
    rng = random.Random(20)
    small = Image.frombytes("RGB", (512, 384), bytes(rng.getrandbits(8) for _ in range(512 * 384 * 3)))
    image = small.resize((2048, 1536), Image.Resampling.BICUBIC)
    for quality in (90, 80, 70, 60, 50, 40, 30, 20):
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        if out.tell() <= limit:
            return out.getvalue()
    raise RuntimeError("no quality fits")


def flat_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (side, side), (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


def frames_gif(count: int, side: int) -> bytes:
    frames = [Image.new("L", (side, side), (i * 7) % 256) for i in range(count)]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return out.getvalue()


def upload(media_type: str, raw: bytes) -> pictures.DataUri:
    parsed = pictures.parse(f"data:{media_type};base64,{base64.b64encode(raw).decode()}")
    assert isinstance(parsed, pictures.DataUri)
    return parsed


def decode_section() -> None:
    cases = [
        ("JPEG photo 2048x1536 (just under 2 MiB)", upload("image/jpeg", photo_jpeg(pictures.MAX_BYTES))),
        ("PNG 2048x2048 flat (the pixel cap)", upload("image/png", flat_png(2048))),
        ("PNG 512x512 flat (a logo)", upload("image/png", flat_png(512))),
        ("GIF 100 frames of 409x409 (the frame and pixel caps)", upload("image/gif", frames_gif(100, 409))),
    ]
    print("upload checked (decode + re-encode), best of 3:")
    for name, data in cases:
        size = len(data.base64_text) * 3 // 4
        print(f"  {name:45s} {size / 1024:8.0f} KiB  {best_of(3, partial(pictures.decode, data)):8.1f} ms")
    body = json.dumps({"picture": "data:image/jpeg;base64," + cases[0][1].base64_text})
    print(
        f"input guard's depth scan of that JPEG's body ({len(body) / 1e6:.1f} MB): "
        f"{best_of(3, lambda: json_too_deep(body)):.1f} ms"
    )


def public_read_section(database_url: str, rounds: int = 300) -> None:
    with serve(database_url, extra={"PUBLIC_RATE_LIMIT_PER_MINUTE": "1000000"}) as server:
        client = Client(server.base, "bench-branding")
        ws = client.call("POST", "/workspaces", json={"name": "Brand", "billing_mode": "pooled"})["id"]
        org = client.call(
            "POST",
            f"/workspaces/{ws}/organizations",
            json={
                "name": "Acme",
                "picture": "https://cdn.acme.example/logo.png",
                "branding": {"display_name": "ACME", "colors": {"primary": "#007bff"}},
            },
        )
        anonymous = client.session.__class__()
        samples = {name: Sample() for name in ("known id", "known external_id", "unknown id")}
        keys = {"known id": org["id"], "known external_id": org["external_id"], "unknown id": "org_" + "Z" * 16}
        for _ in range(rounds):
            for name, key in keys.items():
                timed(anonymous, "GET", f"{server.base}/organizations/{key}/branding", samples[name])
        print(f"public branding read over HTTP ({rounds} rounds, in-app ms from Server-Timing):")
        for name, sample in samples.items():
            print(
                f"  {name:20s} p50 {pct(sample.in_app, 0.5):6.2f}  p95 {pct(sample.in_app, 0.95):6.2f}  "
                f"(latency p50 {pct(sample.latency, 0.5):6.2f})"
            )


def main() -> int:
    decode_section()
    with tempfile.TemporaryDirectory() as tmp:
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
        run_migrations(database_url)
        public_read_section(database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
