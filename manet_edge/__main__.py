"""``python -m manet_edge`` is the same as the ``manet-edge`` console script."""

from cli import main

main()
