"""check_training_data: the library's own check of X and y, with messages naming the argument."""

import numpy as np
import pytest
import torch

from l1sparse.validation import check_training_data

X3 = np.zeros((3, 2))


def test_numpy_in_tensors_out_with_the_library_dtypes():
    X, y = check_training_data(np.arange(6.0).reshape(3, 2), np.array([0.0, 1.0, 1.0]),
                               task="classification")
    assert isinstance(X, torch.Tensor) and X.dtype == torch.float32 and X.shape == (3, 2)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 1]
    X, y = check_training_data(torch.ones(4, 3, dtype=torch.float64), np.arange(4),
                               task="regression")
    assert X.dtype == torch.float32 and y.dtype == torch.float32 and y.shape == (4, 1)
    X, y = check_training_data(np.ones((4, 3)), np.ones((4, 2)), task="regression",
                               dtype=torch.float64)
    assert X.dtype == y.dtype == torch.float64 and y.shape == (4, 2)


def test_the_input_is_not_modified():
    y = np.array([[1.0], [0.0], [1.0]])
    check_training_data(X3, y, task="classification")
    assert y.shape == (3, 1) and y.dtype == np.float64


@pytest.mark.parametrize("X,y,task,kw,error,words", [
    ([[0.0, 1.0]], [0], "regression", {}, TypeError, ["'X'", "numpy array", "list"]),
    (X3, [0, 1, 1], "classification", {}, TypeError, ["'y'", "list"]),
    (np.array([["a", "b"]] * 3), np.zeros(3), "regression", {}, TypeError, ["'X'", "dtype"]),
    (np.zeros(3), np.zeros(3), "regression", {}, ValueError, ["'X'", "2-D", "(3,)"]),
    (np.zeros((0, 2)), np.zeros(0), "regression", {}, ValueError, ["'X'", "no rows"]),
    (np.zeros((3, 0)), np.zeros(3), "regression", {}, ValueError, ["'X'", "no features"]),
    (X3, np.zeros(4), "regression", {}, ValueError, ["'X'", "3 rows", "'y' has 4"]),
    (X3, np.array(1.0), "regression", {}, ValueError, ["'y'", "scalar"]),
    (np.array([[np.nan, 1], [np.inf, 0], [np.nan, 2]]), np.zeros(3), "regression", {},
     ValueError, ["'X'", "2 NaN", "1 infinite"]),
    (X3, np.array([0.0, np.nan, 1.0]), "regression", {}, ValueError, ["'y'", "1 NaN"]),
    (X3, np.array([0.0, 0.5, 1.0]), "classification", {}, ValueError,
     ["'y'", "whole-number", "0.5"]),
    (X3, np.array([1, 2, 3]), "classification", {}, ValueError,
     ["'y'", "0..C-1", "[1, 2, 3]", "class 0 has no sample"]),
    (X3, np.array([0, 2, 2]), "classification", {}, ValueError, ["[0, 2]", "class 1"]),
    (X3, np.array([-1, 0, 1]), "classification", {}, ValueError, ["[-1, 0, 1]", "negative"]),
    (X3, np.array([0, 1, 4]), "classification", {"n_classes": 3}, ValueError,
     ["0..2", "3 outputs", "[0, 1, 4]"]),
    (X3, np.zeros((3, 4)), "classification", {}, ValueError, ["'y'", "one-hot", "(3, 4)"]),
    (X3, np.zeros(3), "nonsense", {}, ValueError, ["'task'"]),
])
def test_bad_data_is_refused_naming_the_argument(X, y, task, kw, error, words):
    with pytest.raises(error) as info:
        check_training_data(X, y, task=task, **kw)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_custom_names_appear_in_the_message():
    with pytest.raises(ValueError, match="'y_train'.*found the labels \\[1, 2\\]"):
        check_training_data(np.zeros((2, 1)), np.array([1, 2]), task="classification",
                            name_X="X_train", name_y="y_train")
    with pytest.raises(ValueError, match="'X_test'"):
        check_training_data(np.zeros(2), np.array([0, 1]), task="classification",
                            name_X="X_test", name_y="y_test")


def test_n_classes_allows_a_label_range_check_and_all_classes_present():
    X, y = check_training_data(X3, np.array([0, 1, 2]), task="classification", n_classes=3)
    assert y.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="class 3 has no sample"):
        check_training_data(X3, np.array([0, 1, 2]), task="classification", n_classes=4)
