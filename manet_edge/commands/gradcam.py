"""``manet-edge gradcam``: Grad-CAM overlays and the fraction of heat inside the lungs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("gradcam")
    def gradcam_cmd(
        checkpoints: List[Path] = typer.Argument(..., exists=True, dir_okay=False, metavar="CHECKPOINT", help="Classifier checkpoints (.pt)."),
        data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Data root with cls/<class>/."),
        splits: Path = typer.Option(Path("splits/cls.json"), exists=True, dir_okay=False,
                                    help="Split file from training."),
        split: str = typer.Option("test", help="train, val or test."),
        out: Path = typer.Option(Path("runs/gradcam"), help="Folder for overlay PNGs and gradcam.json."),
        limit: int = typer.Option(0, help="Only the first N images per checkpoint (0 = all)."),
        overlays: int = typer.Option(10, help="Save overlay PNGs for the first N images."),
        cache: Path = typer.Option(Path("runs/cache"), help="Segmented-image cache folder."),
        segmenter: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                 help="Override the segmenter recorded in the checkpoint."),
    ) -> None:
        """Grad-CAM at the last block of each model; reports the mean heat fraction inside the lung mask."""
        import numpy as np

        from manet_edge import CLASSES
        from manet_edge.datasets import find_cls_items, load_splits, select
        from manet_edge.fileutil import atomic_write_text
        from manet_edge.train.checkpoint import build_model_from_checkpoint, load_checkpoint
        from manet_edge.train.cls import segment_items
        from manet_edge.train.data import ClsDataset
        from manet_edge.train.gradcam import gradcam, inside_fraction, overlay_png

        results = {}
        for ck_path in checkpoints:
            ckpt = load_checkpoint(ck_path)
            model = build_model_from_checkpoint(ckpt)
            name, seed = ckpt["model_config"]["name"], ckpt.get("train_config", {}).get("seed")
            key, folder = f"{name} seed {seed}", f"{name}_s{seed}"
            if key in results:  # another recipe of the same model and seed: tell them apart by run folder
                key, folder = f"{key} ({ck_path.parent.name})", f"{folder}_{ck_path.parent.name}"
            size = int(ckpt["model_config"]["image_size"])
            items = select(find_cls_items(data), load_splits(splits)[split])
            if limit:
                items = items[:limit]
            x, m = segment_items(data, items, Path(segmenter or ckpt["segmenter"]["path"]), size, cache_dir=cache, quiet=True)
            ds = ClsDataset(x, m, np.array([CLASSES.index(it.label) for it in items]))
            fractions = []
            for i, it in enumerate(items):
                img, msk, _ = ds[i]
                heat, cls = gradcam(model, img[None], msk[None])
                fractions.append(inside_fraction(heat, msk[0].numpy()))
                if i < overlays:
                    overlay_png(x[i, 0], heat, m[i, 0], out / folder / (Path(it.path).stem + ".png"),
                                f"{name}: {CLASSES[cls]} (true {it.label}); inside lungs {fractions[-1]:.2f}")
            results[key] = {"checkpoint": str(ck_path), "n": len(items), "inside_lung_fraction_mean": float(np.nanmean(fractions)),
                            "inside_lung_fraction_median": float(np.nanmedian(fractions))}
            typer.echo(f"{key}: mean heat fraction inside lungs {results[key]['inside_lung_fraction_mean']:.3f} over {len(items)} images")
        atomic_write_text(out / "gradcam.json", json.dumps(results, indent=1) + "\n")
