"""The training core: state and init (:mod:`.state`), the step (:mod:`.step`), batches (:mod:`.data`), one
config validation (:mod:`.setup`), validation (:mod:`.evaluate`) and the loop (:mod:`.loop`).

``python -m zoo.train`` (:mod:`zoo.train`) is only its command line; ``zoo.cv``, ``zoo.hparam``,
``zoo.outcome``, ``zoo.load_pretrained`` and the benchmarks use this package.
"""

from zoo.training.evaluate import evaluate, format_dice_table, format_outcome_table
from zoo.training.loop import PREEMPTED_EXIT_CODE, train_and_evaluate
from zoo.training.setup import RunSetup, prepare_run, setup_mesh
from zoo.training.state import (TrainState, abstract_train_state, create_train_state, input_shapes_of, jit_init,
                                make_init_fn)
from zoo.training.step import make_augment_fn, make_train_step

__all__ = ["TrainState", "abstract_train_state", "create_train_state", "input_shapes_of", "jit_init",
           "make_init_fn", "make_augment_fn", "make_train_step", "RunSetup", "prepare_run", "setup_mesh",
           "evaluate", "format_dice_table", "format_outcome_table", "train_and_evaluate", "PREEMPTED_EXIT_CODE"]
