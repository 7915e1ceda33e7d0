"""``python -m sift_fast.pretrain`` — the same entry point as ``sift-pretrain``."""

from sift_fast.cli.pretrain import main

if __name__ == "__main__":
    main()
