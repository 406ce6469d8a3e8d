"""Reads an MLflow run back with MLflow's own client.

Usage: mlflow_history.py TRACKING_URI RUN_ID
Prints JSON {"status": ..., "params": {...}, "metrics": {key: [[step, timestamp, value], ...]}}
with every metric's full history (MlflowClient.get_metric_history), sorted by step.
"""
import json
import sys

from mlflow.tracking import MlflowClient


def main():
    client = MlflowClient(tracking_uri=sys.argv[1])
    run = client.get_run(sys.argv[2])
    metrics = {}
    for key in run.data.metrics:
        hist = client.get_metric_history(sys.argv[2], key)
        metrics[key] = sorted([m.step, m.timestamp, m.value] for m in hist)
    print(json.dumps({"status": run.info.status, "params": run.data.params, "metrics": metrics}))


if __name__ == "__main__":
    main()
