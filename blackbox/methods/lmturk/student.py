"""The distilled student: a logistic regression over sentence features, saved as plain JSON.

Training uses scikit-learn. Soft labels are trained exactly: an item with label distribution
``p`` becomes one row per class ``c`` with sample weight ``w * p[c]``, whose weighted
log-loss is the cross-entropy against ``p``. Prediction needs only numpy: the saved file
holds the coefficients, the label names and the feature model's spec — no pickle, readable
by any language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blackbox.errors import BbxError

FORMAT = "bbx-student"
VERSION = 1


def fit_logreg(
    feats: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    c: float = 1.0,
    min_prob: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a multinomial logistic regression on soft ``targets`` ``(n, C)``.

    Returns ``(coef (C, D), intercept (C,))`` in softmax form for any number of classes
    (scikit-learn's binary model, one weight vector, becomes two rows). Label mass below
    ``min_prob`` is dropped: it changes the fit by less than the regularizer does.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(feats, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n, n_classes = t.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rows, cls = np.nonzero(t >= min_prob)
    sw = w[rows] * t[rows, cls]
    present = np.unique(cls)
    if len(present) < 2:
        raise BbxError("the student needs examples of at least two classes: add gold shots")
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x[rows], cls, sample_weight=sw)
    coef = np.zeros((n_classes, x.shape[1]))
    intercept = np.full(n_classes, -1e4)  # a class never seen gets (almost) no probability
    if len(present) == 2:
        # binary: p(present[1]) = sigmoid(w·x + b) = softmax([0, w·x + b])[1]
        coef[present[0]], intercept[present[0]] = 0.0, 0.0
        coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
    else:
        coef[present], intercept[present] = model.coef_, model.intercept_
    return coef, intercept


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Student:
    """A portable linear classifier: ``softmax(features @ coef.T + intercept)``."""

    labels: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    feature_model: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities for an ``(n, D)`` feature array."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef.shape[1]:
            raise BbxError(f"features have shape {x.shape}, the student expects "
                           f"(n, {self.coef.shape[1]}): use the feature model it names")
        return softmax(x @ self.coef.T + self.intercept)

    def predict_texts(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Label raw texts with the student's own feature model (no LLM)."""
        from blackbox.methods.lmturk.features import load_feature_model

        texts = list(texts)
        if not texts:
            return []
        probs = self.predict_proba(load_feature_model(self.feature_model).embed(texts))
        return [{"text": t, "label": self.labels[int(p.argmax())],
                 "confidence": round(float(p.max()), 4),
                 "probs": {lab: round(float(v), 4) for lab, v in zip(self.labels, p, strict=True)}}
                for t, p in zip(texts, probs, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :meth:`save` writes)."""
        return {"format": FORMAT, "version": VERSION, "model": "softmax-linear",
                "labels": list(self.labels), "feature_model": self.feature_model,
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write the student as JSON."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Student:
        """Read a student written by :meth:`save`; a wrong or damaged file is a BbxError."""
        p = Path(path)
        if not p.is_file():
            raise BbxError(f"student file {p} not found: pass the student.json of a distill run")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BbxError(f"{p} is not a bbx student (not JSON): pass the student.json of a "
                           "distill run") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BbxError(f"{p} is not a bbx student (no format: {FORMAT}): pass the "
                           "student.json of a distill run")
        if data.get("version") != VERSION:
            raise BbxError(f"{p}: student format version {data.get('version')} is not "
                           f"supported (this bbx reads {VERSION}): retrain it")
        try:
            coef = np.asarray(data["coef"], dtype=np.float64)
            intercept = np.asarray(data["intercept"], dtype=np.float64)
            labels = [str(x) for x in data["labels"]]
            feature_model = dict(data["feature_model"])
        except (KeyError, TypeError, ValueError) as e:
            raise BbxError(f"{p}: damaged student file ({e}): retrain it") from None
        if coef.ndim != 2 or coef.shape[0] != len(labels) or intercept.shape != (len(labels),):
            raise BbxError(f"{p}: coefficient shapes {coef.shape}/{intercept.shape} do not match "
                           f"{len(labels)} labels: retrain it")
        return cls(labels, coef, intercept, feature_model, dict(data.get("meta") or {}))


def load_student(path: str | Path) -> Any:
    """A saved student of either kind: the linear JSON one, or a fine-tuned folder (its
    ``student.json``, or the folder itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "student.json"
    if p.is_file():
        try:
            kind = json.loads(p.read_text(encoding="utf-8")).get("model")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind == "finetuned-minilm":
            from blackbox.methods.lmturk.finetune import FinetunedStudent

            return FinetunedStudent.load(p)
    return Student.load(p)


def predict_rows(
    student: str | Path,
    texts: Sequence[str] | None = None,
    input: str | Path | None = None,  # noqa: A002 - mirrors the CLI's --input
) -> list[dict[str, Any]]:
    """Load a saved student and label ``texts`` or the texts of an ``input`` file (no LLM).

    An input file with a label column (class names or indices) adds ``gold`` to each row.
    """
    from blackbox.data.datasets import read_texts

    if (texts is None) == (input is None):
        raise BbxError("predict: give texts or an input file, exactly one of them")
    model = load_student(student)
    gold = None
    if input is not None:
        texts, gold = read_texts(input, model.labels)
    rows = model.predict_texts(list(texts or []))
    if gold is not None:
        for row, g in zip(rows, gold, strict=True):
            if g >= 0:
                row["gold"] = model.labels[int(g)]
    return rows
