"""``python -m irecon.cli``: the same command line as ``irecon`` (torchrun uses this form)."""

from irecon.cli import main

main()
