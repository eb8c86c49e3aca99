"""Datasets: the breast-cancer data of the report, split and standardised."""
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def standardise(X_train: np.ndarray, *others: np.ndarray) -> tuple:
    """Scale every column to mean 0 and std 1 using the statistics of ``X_train`` only."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return tuple((X - mean) / std for X in (X_train, *others))


def breast_cancer(test_size: float = 0.2, seed: int = 0, X=None, y=None, scale: bool = True) -> tuple:
    """Stratified train/test split, standardised on the train part (unless ``scale`` is False:
    the raw features, as the 2020 report trained on them).

    Parameters
    ----------
    test_size : float
        Fraction of samples held out, in (0, 1).
    seed : int
        Seed of the split.
    X, y : array-like, optional
        Any other data to split the same way; the embedded breast-cancer data (569 x 30) by default.

    Returns
    -------
    X_train, X_test, y_train, y_test : ndarray
    """
    if X is None:
        X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        np.asarray(X, dtype=float), np.asarray(y), test_size=test_size, random_state=seed,
        stratify=np.asarray(y))
    if scale:
        X_train, X_test = standardise(X_train, X_test)
    return X_train, X_test, y_train, y_test
