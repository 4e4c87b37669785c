"""``manet-edge train seg|cls``: train the stage-1 segmenter or a stage-2 classifier.

Runs as one process, or under ``torchrun --nproc-per-node N -m cli train ...`` with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from manet_edge.choices import AMP_MODES, AUGMENTS, BALANCES, OPTIMIZERS, PRESET_SCALES
from manet_edge.commands import choices_enum
from manet_edge.preprocess import CLS_NORMALISATIONS


SegPreset = choices_enum("SegPreset", PRESET_SCALES)


Optimizer = choices_enum("Optimizer", OPTIMIZERS)
Amp = choices_enum("Amp", AMP_MODES)


AMP_HELP = ("Mixed precision: bf16 autocast + channels_last (bf16), fp32 (off), or auto: bf16 only where the CPU "
            "has AMX or AVX-512 BF16 (or on CUDA).")


Norm = choices_enum("Norm", CLS_NORMALISATIONS)
Augment = choices_enum("Augment", AUGMENTS)
Balance = choices_enum("Balance", BALANCES)


LOG_REFRESH_S = "60"
"""Seconds between progress-bar refreshes when stderr is a log, not a terminal."""


def _progress_for_logs() -> None:
    """When stderr is not a terminal (a log file, ``nohup``, CI), redraw tqdm's bars at most once a
    minute, so a log gets a line now and then instead of a '\\r' frame ten times a second. Must run
    before tqdm is imported (tqdm reads ``TQDM_*`` defaults then); an explicit
    ``TQDM_MININTERVAL`` is kept."""
    import os
    import sys

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        os.environ.setdefault("TQDM_MININTERVAL", LOG_REFRESH_S)


def register(app: typer.Typer) -> None:
    train = typer.Typer(help="Train the stage-1 segmenter or a stage-2 classifier (needs the 'train' extra).",
                        no_args_is_help=True)

    @train.command("seg")
    def train_seg(
        data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Data root with seg/images and seg/masks."),
        out: Path = typer.Option(Path("runs/seg"), "--out", help="Run folder (checkpoints, history)."),
        preset: SegPreset = typer.Option(SegPreset.cpu, help="cpu: compact UNet-ResNet18 at 192 px; paper: ResUNet34 at 512 px."),
        splits: Path = typer.Option(Path("splits/seg.json"), help="Split file; created (seeded, patient-disjoint 8:1:1) if missing."),
        epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
        batch_size: Optional[int] = typer.Option(None, help="Override the preset's batch size (per process)."),
        lr: Optional[float] = typer.Option(None, help="Override the preset's learning rate."),
        size: Optional[int] = typer.Option(None, help="Override the preset's image size."),
        seed: int = typer.Option(0, help="Random seed."),
        workers: int = typer.Option(0, help="DataLoader worker processes."),
        max_steps: int = typer.Option(0, help="Cap on steps per epoch (0 = full epochs); for smoke runs."),
        resume: bool = typer.Option(False, help="Continue from OUT/last.pt."),
        init: Optional[Path] = typer.Option(None, "--init", exists=True, dir_okay=False,
                                            help="Start from this segmenter's weights (fine-tuning): a checkpoint (.pt), or an "
                                                 "exported segmenter (.onnx, e.g. the bundled one; its BatchNorm statistics stay fixed)."),
        amp: Amp = typer.Option(Amp.auto, help=AMP_HELP),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
    ) -> None:
        """Train the UNet lung segmenter (Dice loss, Adam; paper augmentation)."""
        _progress_for_logs()
        from manet_edge.config import SegModelConfig
        from manet_edge.models.unet import PAPER_SEG
        from manet_edge.train.dist import init_distributed, shutdown
        from manet_edge.train.loop import preset as make_preset
        from manet_edge.train.seg import train_segmenter

        cfg = make_preset(f"seg-{preset.value}", epochs=epochs, batch_size=batch_size, lr=lr, image_size=size,
                          seed=seed, workers=workers, max_steps_per_epoch=max_steps, amp=amp.value)
        model_cfg = PAPER_SEG if preset == SegPreset.paper else SegModelConfig()
        model = None
        postprocess = None
        if init is not None and init.suffix.lower() == ".onnx":
            from manet_edge.train.from_onnx import segmenter_from_onnx

            model, model_cfg, postprocess = segmenter_from_onnx(init)
            model.train()
            cfg = make_preset(f"seg-{preset.value}", epochs=epochs, batch_size=batch_size, lr=lr,
                              image_size=size or model_cfg.image_size, seed=seed, workers=workers,
                              max_steps_per_epoch=max_steps, amp=amp.value, freeze_bn=True)
        elif init is not None:
            import dataclasses

            from manet_edge.train.checkpoint import build_model_from_checkpoint, load_checkpoint, model_config_of

            start = load_checkpoint(init)
            model_cfg = dataclasses.replace(model_config_of(start), image_size=cfg.image_size)
            model = build_model_from_checkpoint(start).train()
        info = init_distributed(device)
        try:
            kwargs = {"postprocess": postprocess} if postprocess is not None else {}
            best = train_segmenter(data, out, cfg, model_cfg, info, splits_path=splits, resume=resume, model=model, **kwargs)
        finally:
            shutdown(info)
        if info.is_main:
            typer.echo(f"best val IoU {best['score']:.4f} at epoch {best.get('epoch', -1) + 1}; checkpoint {out / 'best.pt'}")

    @train.command("cls")
    def train_cls(
        data: Path = typer.Option(..., "--data", exists=True, file_okay=False, help="Data root with cls/<class>/ folders."),
        segmenter: Path = typer.Option(..., "--segmenter", exists=True, dir_okay=False,
                                       help="Stage-1 model whose predicted masks feed stage 2: a checkpoint (.pt) or an exported segmenter (.onnx, e.g. the bundled one)."),
        model: str = typer.Option("resnet18-ma", "--model", help="Zoo model, e.g. resnet18-ma, resnet50, vgg16-cbam."),
        out: Path = typer.Option(Path("runs/cls"), "--out", help="Run folder (checkpoints, history)."),
        preset: SegPreset = typer.Option(SegPreset.cpu, help="cpu: 128 px, 16 epochs; paper: 512 px, 200 epochs, batch 64."),
        splits: Path = typer.Option(Path("splits/cls.json"), help="Split file; created if missing."),
        cache: Path = typer.Option(Path("runs/cache"), help="Folder for the segmented-image cache."),
        balance: Optional[Balance] = typer.Option(None, help="Class balancing: sampler (inverse-frequency sampling), loss (inverse-frequency loss weights), "
                                                          "sqrt (loss weights by the inverse square root of the counts: milder), or none."),
        optimizer: Optional[Optimizer] = typer.Option(None, help="Override the preset's optimizer (paper: sgd)."),
        weight_decay: Optional[float] = typer.Option(None, min=0.0,
                                                     help="Override the preset's weight decay (L2 for sgd/adam, decoupled for adamw)."),
        label_smoothing: Optional[float] = typer.Option(None, min=0.0, max=0.5,
                                                        help="Cross-entropy label smoothing (0 = none, the presets' value)."),
        normalisation: Norm = typer.Option(Norm.segmented_minmax_pm1, help=(
            "Classifier input normalisation, recorded in the model card and applied by every runtime: "
            "segmented_minmax_pm1 (the paper's min-max of the segmented image) or lung_equalize "
            "(histogram equalisation computed inside the lung mask).")),
        augment: Augment = typer.Option(Augment.paper, help=(
            "paper: shift, scale, rotation, brightness, contrast; robust: also gamma, blur, down-up scaling, "
            "noise and JPEG re-encoding (what differs between hospitals).")),
        exclude_sources: str = typer.Option("", help=(
            "Leave sources out of training and validation, as CLASS:SOURCE[+SOURCE][,...] "
            "(e.g. normal:cxrdb or tb:shenzhen+montgomery): a leave-one-source-out run.")),
        amp: Amp = typer.Option(Amp.auto, help=AMP_HELP),
        epochs: Optional[int] = typer.Option(None, help="Override the preset's epochs."),
        batch_size: Optional[int] = typer.Option(None, help="Override the preset's batch size (per process)."),
        lr: Optional[float] = typer.Option(None, help="Override the preset's learning rate."),
        size: Optional[int] = typer.Option(None, help="Override the preset's input size (pixels, square)."),
        seed: int = typer.Option(0, help="Random seed (the paper averages three seeds)."),
        workers: int = typer.Option(0, help="DataLoader worker processes (0: augment in the training process)."),
        max_steps: int = typer.Option(0, help="Cap on steps per epoch (0 = full epochs); for smoke runs."),
        resume: bool = typer.Option(False, help="Continue from OUT/last.pt."),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
    ) -> None:
        """Train a stage-2 classifier on images segmented by the stage-1 model (SGD, cosine, CE)."""
        _progress_for_logs()
        from manet_edge.train.cls import train_classifier
        from manet_edge.train.dist import init_distributed, shutdown
        from manet_edge.train.loop import preset as make_preset

        cfg = make_preset(f"cls-{preset.value}", epochs=epochs, batch_size=batch_size, lr=lr, image_size=size,
                          seed=seed, workers=workers, max_steps_per_epoch=max_steps,
                          balance=balance.value if balance else None, optimizer=optimizer.value if optimizer else None,
                          label_smoothing=label_smoothing, weight_decay=weight_decay, amp=amp.value,
                          normalisation=normalisation.value, augment=augment.value, exclude_sources=exclude_sources)
        if exclude_sources:
            from manet_edge.datasets import parse_source_spec

            parse_source_spec(exclude_sources)  # a malformed spec fails before any work
        info = init_distributed(device)
        try:
            best = train_classifier(data, segmenter, model, out, cfg, info, splits_path=splits, cache_dir=cache, resume=resume)
        finally:
            shutdown(info)
        if info.is_main:
            typer.echo(f"best val accuracy {best['score']:.4f} at epoch {best.get('epoch', -1) + 1}; checkpoint {out / 'best.pt'}")

    app.add_typer(train, name="train")
