"""The double-entry ledger: payplane's source of truth for money.

``model`` holds accounts and transfers, ``results`` the precedence-ordered outcome of applying a
transfer, and ``engine`` the pure state machine that applies transfers to accounts. The engine has no
I/O: the ledger writer loads a batch's accounts, runs the engine in memory and persists the changes in
one PostgreSQL transaction, and the tests run the very same engine against a naive reference model.
"""
