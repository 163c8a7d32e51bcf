"""`frameseek embed FILE` — the development command of the media pipeline.

Registered on the main `frameseek` typer app through `register(app)` (frameseek/cli/ owns the app).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

from .embed import EmbedderSettings, load_embedder
from .media import MediaError
from .pipeline import SamplingSettings, embed_media


def embed_command(
    file: Path = typer.Argument(..., help="video or image file", exists=False),
    fps: float = typer.Option(1.0, "--fps", help="samples per second of presentation time (<=0: every frame)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object with a `samples` list"),
    model: str = typer.Option("sscd_distilled", "--model", help="builtin model name or path to an .onnx file"),
    backend: str = typer.Option("auto", "--backend", help="embedder backend: auto | onnx | tensorrt"),
    decoder: str = typer.Option("auto", "--decoder", help="decoder: auto | cpu | nvdec"),
    keyframes_only: bool = typer.Option(False, "--keyframes-only", help="decode key frames only"),
    keep_blank: bool = typer.Option(False, "--keep-blank", help="do not drop blank / uniform frames"),
    dedup: float | None = typer.Option(None, "--dedup", help="drop consecutive samples with cosine >= this"),
) -> None:
    """Embed FILE and print the samples, the backends used and the throughput (x realtime)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        embedder = load_embedder(EmbedderSettings(model=model, backend=backend))  # type: ignore[arg-type]
        result = embed_media(
            file,
            embedder,
            SamplingSettings(
                fps=fps,
                drop_blank=not keep_blank,
                dedup_threshold=dedup,
                keyframes_only=keyframes_only,
                decoder=decoder,  # type: ignore[arg-type]
            ),
        )
    except MediaError as exc:
        if as_json:
            typer.echo(json.dumps({"error": {"reason": exc.reason, "message": exc.message}}))
        else:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    rt = result.stats.get("realtime_factor")
    if as_json:
        out = {
            "file": str(file),
            "decoder": result.decoder,
            "embedder": result.embedder,
            "duration": result.duration,
            "width": result.width,
            "height": result.height,
            "codec": result.codec,
            "is_image": result.is_image,
            "dropped_blank": result.dropped_blank,
            "dropped_duplicates": result.dropped_duplicates,
            "realtime_factor": rt,
            "stats": result.stats,
            "samples": [
                {"t": float(t), "vector": [round(float(x), 6) for x in v]}
                for t, v in zip(result.timestamps, result.vectors)
            ],
        }
        typer.echo(json.dumps(out))
        return
    typer.echo(
        f"{file}: {result.width}x{result.height} {result.codec}, {result.duration:.2f} s, "
        f"decoder={result.decoder}, embedder={result.embedder}"
    )
    for t, v in zip(result.timestamps, result.vectors):
        typer.echo(f"  {t:10.3f} s  [{v[0]:+.3f} {v[1]:+.3f} {v[2]:+.3f} ...]")
    s = result.stats
    typer.echo(
        f"{len(result)} samples ({result.dropped_blank} blank, {result.dropped_duplicates} duplicates dropped); "
        f"decode {s['decode_s']:.2f} s, preprocess {s['preprocess_s']:.2f} s, embed {s['embed_s']:.2f} s, "
        f"wall {s['wall_s']:.2f} s" + (f", {rt:.1f}x realtime" if rt else "")
    )


def register(app: typer.Typer) -> None:
    """Add `embed` to the frameseek CLI."""
    app.command("embed")(embed_command)
