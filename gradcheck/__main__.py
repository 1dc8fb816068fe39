"""``python -m gradcheck ...``: the same command line as the ``gradcheck`` console script."""

from gradcheck.cli import main

main(prog_name="gradcheck")
