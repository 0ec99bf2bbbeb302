"""Typed views of the custom resources in ``crds/`` (the CRD YAML is the source of truth)."""
