"""``python -m ccsa``: the same entry point as the ``cc-slurm-adapter`` console script."""

from ccsa.cli import main

if __name__ == "__main__":
    main()
