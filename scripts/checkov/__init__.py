"""Eventfold's own checkov checks (scripts/checkov-infra.py loads this directory)."""
