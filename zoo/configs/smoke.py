"""Smoke recipe: trains in seconds; used by tests and CI."""

from zoo.configs import default


def get_config():
    c = default.get_config()
    c.data.image_size = (32, 32)
    c.data.num_train = 32
    c.data.num_val = 8
    c.model.kwargs.features = 8
    c.model.kwargs.depth = 3
    c.train.steps = 20
    c.train.batch_size = 8
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.train.warmup_steps = 2
    return c
