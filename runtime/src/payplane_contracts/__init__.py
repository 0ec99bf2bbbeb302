"""Names both sides must agree on: the operator that provisions and the runtime that uses.

Kafka topic names, SPIFFE ID templates, the account → ledger-partition mapping and, as the data plane
grows, the message schemas. Standard library only, so the operator image and every worker image can
import it without pulling in the other side's dependencies.
"""
