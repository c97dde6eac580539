"""The class conventions every table follows: classes are the integer labels as strings, in sorted
order; the positive class of a binary task is the last one; a class's probability is the column
``prob_<class>``.

>>> import pandas as pd
>>> frame = pd.DataFrame({"label": [0, 1, 1], "prob_0": [0.8, 0.3, 0.4], "prob_1": [0.2, 0.7, 0.6]})
>>> y, p = binary_target(frame, ["0", "1"])
>>> y.tolist(), p.tolist()
([0, 1, 1], [0.2, 0.7, 0.6])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def positive_class(classes: Sequence[object]) -> str:
    """The positive class of a binary task: the last (highest) class, as a string."""
    return str(classes[-1])


def probability_column(class_name: object) -> str:
    """The column holding the predicted probability of ``class_name``."""
    return f"prob_{class_name}"


def is_positive(labels: pd.Series, classes: Sequence[object]) -> np.ndarray:
    """0/1 array: 1 where the label is the positive class (labels as integers or strings)."""
    return (labels.astype(str) == positive_class(classes)).to_numpy().astype(int)


def binary_target(frame: pd.DataFrame, classes: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels (1 = the positive class) and the positive-class probabilities of ``frame``."""
    return is_positive(frame["label"], classes), frame[probability_column(positive_class(classes))].to_numpy()
