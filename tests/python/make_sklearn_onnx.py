"""scikit-learn models exported by skl2onnx, as a user of skl2onnx writes them (defaults:
ZipMap on the probabilities), trained on the iris data scikit-learn ships.

usage: make_sklearn_onnx.py OUT_DIR

Writes:
  iris_logreg.onnx   StandardScaler + LogisticRegression (Scaler, LinearClassifier,
                     Normalizer, ZipMap): served, ZipMap as its probability tensor
  iris_linreg.onnx   LinearRegression (LinearRegressor)
  iris_forest.onnx   RandomForestClassifier (TreeEnsembleClassifier): refused, naming it
"""
import os
import sys

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    models = {
        "iris_logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y),
        "iris_linreg": LinearRegression().fit(x[:, :3], x[:, 3]),
        "iris_forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y),
    }
    for name, model in models.items():
        sample = x[:1, :3] if name == "iris_linreg" else x[:1]
        onx = to_onnx(model, sample, target_opset={"": 17, "ai.onnx.ml": 3})
        with open(os.path.join(out, f"{name}.onnx"), "wb") as f:
            f.write(onx.SerializeToString())


if __name__ == "__main__":
    main()
