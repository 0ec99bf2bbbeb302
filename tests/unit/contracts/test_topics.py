"""Topic and consumer-group names derived from a rail name."""

import pytest

from payplane_contracts.topics import RailNameError, RailTopics, consumer_group


def test_names_are_derived_from_the_rail() -> None:
    topics = RailTopics("card-eur")
    assert topics.ledger_commands == "payplane.card-eur.ledger.commands"
    assert topics.ledger_results == "payplane.card-eur.ledger.results"
    assert topics.payment_events == "payplane.card-eur.payments.events"
    assert topics.dead_letters("ledger-writer") == "payplane.card-eur.dlq.ledger-writer"
    assert len(set(topics.all_primary())) == 3
    assert consumer_group("card-eur", "ledger-writer") == "payplane.card-eur.ledger-writer"


@pytest.mark.parametrize("bad", ["", "Card", "card_eur", "-card", "card-", "a" * 64, "card.eur"])
def test_refuses_names_that_are_not_dns_labels(bad: str) -> None:
    with pytest.raises(RailNameError, match="DNS-1123"):
        RailTopics(bad)
    with pytest.raises(RailNameError):
        consumer_group(bad, "ledger-writer")
