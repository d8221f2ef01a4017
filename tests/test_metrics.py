"""Metrics against scikit-learn, per-track accuracy and the absent-class rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fishaug.evaluation.metrics import classification_metrics, confusion_matrix, track_accuracy

CLASSES = ["bream", "chub", "perch"]
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
PREDS = torch.tensor([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])


def one_hot_probs(preds: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    probs = torch.full((len(preds), num_classes), 0.1)
    probs[torch.arange(len(preds)), preds] = 0.8
    return probs


def test_metrics_match_sklearn():
    metrics = classification_metrics(one_hot_probs(PREDS), TARGETS, CLASSES, "test")
    y, p = TARGETS.numpy(), PREDS.numpy()
    assert metrics["test/acc"] == pytest.approx(skm.accuracy_score(y, p))
    assert metrics["test/precision_macro"] == pytest.approx(
        skm.precision_score(y, p, average="macro")
    )
    assert metrics["test/recall_macro"] == pytest.approx(skm.recall_score(y, p, average="macro"))
    assert metrics["test/f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    per_class_f1 = skm.f1_score(y, p, average=None)
    for index, label in enumerate(CLASSES):
        assert metrics[f"test/f1/{label}"] == pytest.approx(per_class_f1[index])

    matrix = skm.confusion_matrix(y, p)
    specificity = []
    for index in range(3):
        tn = matrix.sum() - matrix[index].sum() - matrix[:, index].sum() + matrix[index, index]
        fp = matrix[:, index].sum() - matrix[index, index]
        specificity.append(tn / (tn + fp))
    assert metrics["test/specificity_macro"] == pytest.approx(np.mean(specificity))
    assert metrics["test/specificity/perch"] == pytest.approx(specificity[2])
    assert metrics["test/support/perch"] == 4


def test_absent_unpredicted_class_is_left_out():
    classes = CLASSES + ["eel"]
    metrics = classification_metrics(one_hot_probs(PREDS, 4), TARGETS, classes, "val")
    y, p = TARGETS.numpy(), PREDS.numpy()
    assert metrics["val/f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert metrics["val/f1/eel"] is None
    assert metrics["val/support/eel"] == 0


def test_absent_but_predicted_class_counts_as_zero():
    classes = CLASSES + ["eel"]
    preds = PREDS.clone()
    preds[0] = 3
    metrics = classification_metrics(one_hot_probs(preds, 4), TARGETS, classes, "val")
    expected = skm.f1_score(
        TARGETS.numpy(), preds.numpy(), labels=[0, 1, 2, 3], average="macro", zero_division=0
    )
    assert metrics["val/f1_macro"] == pytest.approx(expected)
    assert metrics["val/f1/eel"] == 0.0


def test_track_accuracy_maxprob_and_vote():
    # Track a: two weak wrong votes and one confident right image; track b: clearly right.
    probs = torch.tensor(
        [[0.4, 0.6], [0.4, 0.6], [0.99, 0.01], [0.1, 0.9], [0.2, 0.8]], dtype=torch.float32
    )
    targets = torch.tensor([0, 0, 0, 1, 1])
    tracks = ["a", "a", "a", "b", "b"]
    result = track_accuracy(probs, targets, tracks, "test")
    assert result["test/track_acc_maxprob"] == 1.0
    assert result["test/track_acc_vote"] == 0.5
    assert result["test/num_tracks"] == 2


def test_confusion_matrix_is_normalised_over_predictions():
    matrix = confusion_matrix(one_hot_probs(PREDS), TARGETS, 3, normalize="pred")
    np.testing.assert_allclose(matrix.sum(axis=0), [1.0, 1.0, 1.0], rtol=1e-6)
    raw = skm.confusion_matrix(TARGETS.numpy(), PREDS.numpy())
    np.testing.assert_allclose(matrix, raw / raw.sum(axis=0, keepdims=True), rtol=1e-6)
