"""Pure desired-state builders: a parsed spec in, manifests / topics / SPIRE entries out.

No I/O, no kopf, no clients (an import-linter contract keeps it so); everything here is a function of
its arguments, so it is tested without a cluster and called as often as the reconcilers like.
"""
