"""`trainyard ...` with rl.dqn instrumented: at the end of training, each data-parallel rank saves
the transitions it played to $DQN_RANKS_DIR/rank<r>.npz. Lightning's launcher starts the other
ranks by running this same file again, so they are instrumented too. Used by test_dqn.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainyard.cli import main
from trainyard_rl.dqn import DQN


def on_train_end(self) -> None:
    played = len(self.replay)
    np.savez(Path(os.environ["DQN_RANKS_DIR"]) / f"rank{self.global_rank}.npz",
             observations=self.replay.observations[:played], actions=self.replay.actions[:played],
             world_size=self.trainer.world_size)


DQN.on_train_end = on_train_end

if __name__ == "__main__":
    main()
