"""Command-line entry points: argparse, logging setup and `trio.run`, nothing else."""
