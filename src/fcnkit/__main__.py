"""``python -m fcnkit`` (also what ``torchrun -m fcnkit train ...`` runs)."""

from fcnkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
