"""Models: the stage-2 classifier zoo (plain, mask attention, CBAM) and the stage-1 segmenter.

``create_model`` / ``list_models`` are importable without torch; building a model imports it.
"""

from manet_edge.models.zoo import UnknownModelError, create_model, list_models

__all__ = ["UnknownModelError", "create_model", "list_models"]
