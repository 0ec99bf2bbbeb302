"""The public edge: HTTP/JSON REST (Stripe conventions) in front of the payment worker's gRPC API."""
