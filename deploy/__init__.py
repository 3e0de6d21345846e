"""Offline tooling for the deployment files in docker/ and k8s/: render kustomizations, read PromQL (used by the
deployment tests and ``scripts/render_dashboard.py``; nothing here is imported by the service)."""
