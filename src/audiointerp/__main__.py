"""`python -m audiointerp` is the `audiointerp` command (used by torchrun and accelerate launch)."""

from audiointerp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
