"""What a learned code is measured against, on the test set, in the same run:

- PCA with as many components as the code has units, fitted on the training images: the best
  linear code, the baseline an autoencoder must beat (Hinton & Salakhutdinov 2006);
- a linear probe: logistic regression on frozen codes, fitted on the training split and scored
  on the test split, for the learned codes and for PCA's.

scikit-learn does both; the arrays are small (digits: 1,437 x 64; MNIST: 60,000 x 784).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def squared_error(images: np.ndarray, reconstructions: np.ndarray) -> float:
    """Squared error summed over the pixels of each example, averaged over examples."""
    return float(((images - reconstructions) ** 2).reshape(len(images), -1).sum(axis=1).mean())


def pca_baseline(train_images: np.ndarray, test_images: np.ndarray, components: int, seed: int) -> tuple[float, PCA]:
    """PCA's test reconstruction error with `components` components, and the fitted PCA."""
    flat_train, flat_test = train_images.reshape(len(train_images), -1), test_images.reshape(len(test_images), -1)
    pca = PCA(n_components=min(components, *flat_train.shape), random_state=seed).fit(flat_train)
    reconstructed = pca.inverse_transform(pca.transform(flat_test))
    return squared_error(flat_test, reconstructed), pca


def probe_accuracy(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                   test_labels: np.ndarray, seed: int) -> float:
    """Test accuracy of logistic regression fitted on frozen training codes."""
    if len(np.unique(train_labels)) < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_codes, train_labels)
    return float(probe.score(test_codes, test_labels))
