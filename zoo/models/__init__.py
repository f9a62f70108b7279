"""Built-in architectures; importing this package registers them all."""

from zoo.models import unet  # noqa: F401
from zoo.models import outcome  # noqa: F401
from zoo.mask_rcnn import model as mask_rcnn  # noqa: F401  (registers "mask_rcnn")
from zoo.models import cnn, fcn, segnet, attention_unet, deeplabv3plus, residual_unet  # noqa: F401,E402
