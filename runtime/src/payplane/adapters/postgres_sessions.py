"""Session settings for connections whose statements look rows up by key in tables that grow fast.

The hot statements here are ``id = any($1)`` lookups (a writer's transfers, the worker's outcome reads,
an outbox relay's marks) over tables that grow by thousands of rows a second from empty. A cached
generic plan, chosen while a table was small, keeps scanning it sequentially as it grows: 23 ms per
100-id lookup after 20k ledger transfers, 15-40 ms per outcome read or outbox mark after 30k payments,
against well under a millisecond through the primary key. So every statement is planned for its values.
And random reads are priced as what they are for a database whose hot pages are cached: with the
default (4.0) the planner scans 200k transfers sequentially for a 2,000-id lookup (54 ms) instead of
probing the primary key (6.5 ms).
"""

from typing import Final

KEY_LOOKUP_SESSION: Final = {"plan_cache_mode": "force_custom_plan", "random_page_cost": "1.1"}
