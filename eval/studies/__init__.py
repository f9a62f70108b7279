"""Studies that train models: the paper table, ablations, the outcome report.

Unlike eval's reports (which reach models only through the store and the prediction path), a study may drive
the training core (``zoo.training``, ``zoo.train``'s library functions, ``zoo.cv``'s k-fold) or shell out to
``python -m zoo.train``. Each study is a command, ``python -m eval.studies.<name>``, imported by nothing.
"""
