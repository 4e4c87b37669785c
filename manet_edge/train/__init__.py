"""Training and evaluation of both stages (needs the ``train`` extra: torch, torchvision, smp)."""
