"""fedge's shared core: tasks, the tensor codec, configuration and the command line."""

import os

__version__ = "0.1.0"

# OpenMP's default wait policy keeps idle worker threads spinning. Where the cores are
# shared (a server beside its devices, several trainers in one simulation, an edge box
# running its own workload) the spinners starve the threads doing the work: five
# digits-mlp epochs took 12.8 s instead of 0.16 s on two loaded cores. On an idle machine
# passive waiting costs a little instead (two threads, one epoch: digits-mlp 18.9 ms
# against 11.6, digits-cnn 70.9 against 49.0), so a dedicated training box may set
# OMP_WAIT_POLICY=ACTIVE itself: a user's own setting wins. It must be set before torch
# loads libgomp, which every fedge package imports lazily, after this one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
