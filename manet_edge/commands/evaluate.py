"""``manet-edge eval seg|cls``: metrics on the saved test split, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    ev = typer.Typer(help="Evaluate trained checkpoints on the saved split (needs the 'train' extra).", no_args_is_help=True)

    @ev.command("seg")
    def eval_seg(
        checkpoint: Path = typer.Argument(..., exists=True, dir_okay=False, help="Segmenter checkpoint (.pt)."),
        data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Data root with seg/images, seg/masks."),
        splits: Path = typer.Option(Path("splits/seg.json"), exists=True, dir_okay=False, help="Split file from training."),
        split: str = typer.Option("test", help="train, val or test."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full result (per image) as JSON."),
    ) -> None:
        """IoU and Dice per class, per source and overall, before and after post-processing."""
        from manet_edge.fileutil import atomic_write_text
        from manet_edge.train.evaluate import eval_segmenter, seg_table

        result = eval_segmenter(checkpoint, data, splits, split)
        typer.echo(seg_table(result))
        paper = result.get("paper_iou_percent") or {}
        typer.echo("\npaper (512 px ResUNet34), IoU %: " + ", ".join(f"{k} {v:.2f}" for k, v in paper.items()))
        if json_out:
            atomic_write_text(json_out, json.dumps(result, indent=1) + "\n")

    @ev.command("cls")
    def eval_cls(
        checkpoints: List[Path] = typer.Argument(..., exists=True, dir_okay=False, metavar="CHECKPOINT",
                                                 help="Classifier checkpoints; several seeds are aggregated like Table 2."),
        data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Data root with cls/<class>/."),
        splits: Path = typer.Option(Path("splits/cls.json"), exists=True, dir_okay=False,
                                    help="Split file from training."),
        split: str = typer.Option("test", help="train, val or test."),
        segmenter: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                                 help="Override the segmenter recorded in the checkpoint."),
        cache: Path = typer.Option(Path("runs/cache"), help="Segmented-image cache folder."),
        sources: str = typer.Option("", help=(
            "Evaluate on every image of these sources, whatever its split (CLASS:SOURCE[+SOURCE][,...]): "
            "the test of a run trained with --exclude-sources.")),
        reliability: Optional[Path] = typer.Option(None, help="Write a reliability diagram (PNG) per checkpoint; "
                                                             "with several checkpoints, the seed is added to the name."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write all reports as JSON."),
    ) -> None:
        """Accuracy, per-class precision/recall/F1 (Table 4), confusion matrix (Table 5), runs and mean (Table 2)."""
        from manet_edge.fileutil import atomic_write_text
        from manet_edge.train.evaluate import aggregate_runs, cls_tables, eval_classifier, reliability_png, runs_table

        reports = [eval_classifier(c, data, splits, split, cache_dir=cache, segmenter=segmenter, sources=sources)
                   for c in checkpoints]
        for i, r in enumerate(reports):
            typer.echo(f"\n## {r['model']} seed {r['seed']} ({r['checkpoint']})\n")
            typer.echo(cls_tables(r))
            if reliability is not None:
                png = reliability if len(reports) == 1 else reliability.with_name(f"{reliability.stem}_{i}{reliability.suffix}")
                reliability_png(r, png)
                typer.echo(f"reliability diagram: {png}")
        agg = aggregate_runs(reports)
        typer.echo("\n" + runs_table(agg))
        if json_out:
            atomic_write_text(json_out, json.dumps({"reports": reports, "aggregate": agg}, indent=1) + "\n")

    app.add_typer(ev, name="eval")
