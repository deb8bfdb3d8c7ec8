"""`python -m lamina ...` runs the command line, as torchrun starts it: `torchrun --nproc-per-node 8 -m lamina train ...`."""
import sys

from lamina.cli import main

sys.exit(main())
