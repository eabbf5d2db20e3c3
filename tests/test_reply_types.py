"""AgentReply's rich fields: what an agent may return, and the clear errors for what WhatsApp
would refuse (the over-limit rule: refuse at construction with a ValueError naming the limit)."""

from __future__ import annotations

import pytest

from wa_agent import AgentReply, AgentRequest, Choice, Contact, LinkButton, Location, SharedContact


def test_string_buttons_are_their_own_ids() -> None:
    """A bare string is both the id and the title; up to three go out as reply buttons."""
    reply = AgentReply(text="Pick one", buttons=["Yes", "No"])
    assert reply.choices == (Choice("Yes", "Yes"), Choice("No", "No"))
    assert reply.choice_style == "buttons"


def test_pairs_triples_mappings_and_choices_mix() -> None:
    """(id, title) pairs, (id, title, description) triples, mappings and Choice objects all
    normalise to Choice; a description makes it a list even with few choices."""
    reply = AgentReply(
        buttons=[
            ("y", "Yes"),
            {"id": "n", "title": "No"},
            ("m", "Maybe", "I'll think about it"),
            Choice("l", "Later"),
        ]
    )
    assert [c.id for c in reply.choices] == ["y", "n", "m", "l"]
    assert reply.choices[2].description == "I'll think about it"
    assert reply.choice_style == "list"
    assert AgentReply(buttons=[("a", "A", "")]).choice_style == "buttons"  # empty description


def test_four_to_ten_choices_are_a_list() -> None:
    """Four to ten choices go out as a list message; ten is the most WhatsApp shows."""
    assert AgentReply(buttons=[str(n) for n in range(4)]).choice_style == "list"
    assert len(AgentReply(buttons=[str(n) for n in range(10)]).choices) == 10
    assert AgentReply().choice_style is None


def test_eleven_choices_are_refused_naming_the_limit() -> None:
    """More than ten choices raise ValueError before anything is sent."""
    with pytest.raises(ValueError, match="11 choices.*at most 3 reply buttons or 10 list rows"):
        AgentReply(buttons=[f"option {n}" for n in range(11)])


def test_button_title_over_20_is_refused_but_a_list_row_takes_24() -> None:
    """A reply button title is at most 20 characters; the same title fits a list row (24)."""
    long = "A title of 22 letters!"
    assert len(long) == 22
    with pytest.raises(
        ValueError, match="reply button title .* 22 characters; WhatsApp allows at most 20"
    ):
        AgentReply(buttons=[long, "No"])
    assert AgentReply(buttons=[long, "b", "c", "d"]).choice_style == "list"
    with pytest.raises(ValueError, match="list row title .* at most 24"):
        AgentReply(buttons=["x" * 25, "b", "c", "d"])


def test_description_and_id_limits() -> None:
    """Row descriptions are at most 72 characters, button ids 256 and row ids 200."""
    with pytest.raises(ValueError, match="description .* at most 72"):
        AgentReply(buttons=[("a", "A", "d" * 73)])
    with pytest.raises(ValueError, match="reply button id .* at most 256"):
        AgentReply(buttons=[("i" * 257, "A")])
    with pytest.raises(ValueError, match="list row id .* at most 200"):
        AgentReply(buttons=[("i" * 201, "A"), "b", "c", "d"])


def test_duplicate_and_empty_choices_are_refused() -> None:
    """Ids and titles must be unique and non-empty."""
    with pytest.raises(ValueError, match="two choices are titled 'Yes'"):
        AgentReply(buttons=[("1", "Yes"), ("2", "Yes")])
    with pytest.raises(ValueError, match="two choices have the id '1'"):
        AgentReply(buttons=[("1", "Yes"), ("1", "No")])
    with pytest.raises(ValueError, match="empty title"):
        AgentReply(buttons=["  "])
    with pytest.raises(TypeError, match="a choice is a string"):
        AgentReply(buttons=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be a list or tuple"):
        AgentReply(buttons="Yes")


def test_list_button_label_is_checked_only_for_lists() -> None:
    """The label that opens a list defaults to "Choose" and is at most 20 characters."""
    assert AgentReply(buttons=list("abcd")).list_button == "Choose"
    with pytest.raises(ValueError, match="list_button .* at most 20"):
        AgentReply(buttons=list("abcd"), list_button="Pick one of these options")
    AgentReply(buttons=list("ab"), list_button="x" * 30)  # reply buttons: no list label


def test_reaction_must_be_an_emoji() -> None:
    """A reaction is one emoji (skin tones and joined emoji included), not text."""
    assert AgentReply(reaction=" 👍🏽 ").reaction == "👍🏽"
    assert AgentReply(reaction="👨‍👩‍👧").reaction == "👨‍👩‍👧"
    for bad in ("", "ok", "👍 👍"):
        with pytest.raises(ValueError, match="reaction"):
            AgentReply(reaction=bad)


def test_location_forms_and_ranges() -> None:
    """A location is a Location, a (lat, long) pair or a mapping; out-of-range is refused."""
    assert AgentReply(location=(52.52, 13.405)).location == Location(
        latitude=52.52, longitude=13.405
    )
    reply = AgentReply(location={"latitude": 1, "longitude": 2, "name": "Here"})
    assert isinstance(reply.location, Location) and reply.location.name == "Here"
    with pytest.raises(ValueError, match="latitude 91.0 is outside"):
        AgentReply(location=(91, 0))
    with pytest.raises(ValueError, match="longitude -181.0 is outside"):
        AgentReply(location=(0, -181))
    with pytest.raises(TypeError, match="AgentReply.location"):
        AgentReply(location="Berlin")  # type: ignore[arg-type]


def test_contacts_normalise_to_contact_cards() -> None:
    """Contacts may be Contact, a received SharedContact, a name or a mapping; each becomes a
    card with Meta's required formatted_name plus a name part."""
    shared = SharedContact(formatted_name="Ada Lovelace", phones=("+44 20 1234",))
    reply = AgentReply(
        contacts=[
            Contact("Grace Hopper", phones=("+1 555 0100",)),
            shared,
            "Alan",
            {"name": "Bob", "emails": ["bob@example.com"]},
        ]
    )
    cards = [c.to_card() for c in reply.contacts]  # type: ignore[union-attr]
    assert cards[0] == {
        "name": {"formatted_name": "Grace Hopper", "first_name": "Grace", "last_name": "Hopper"},
        "phones": [{"phone": "+1 555 0100", "type": "CELL"}],
    }
    assert cards[1]["phones"] == [{"phone": "+44 20 1234", "type": "CELL"}]
    assert cards[2] == {"name": {"formatted_name": "Alan", "first_name": "Alan"}}
    assert cards[3]["emails"] == [{"email": "bob@example.com", "type": "WORK"}]
    with pytest.raises(ValueError, match="needs a name"):
        Contact(" ")


def test_link_button_checks_label_and_url() -> None:
    """A link button has a label of at most 20 characters and an http(s) URL."""
    assert AgentReply(link_button=("Open", "https://example.com/a?b=c")).link_button == LinkButton(
        "Open", "https://example.com/a?b=c"
    )
    with pytest.raises(ValueError, match="at most 20"):
        LinkButton("A label far too long here", "https://example.com")
    with pytest.raises(ValueError, match="http"):
        LinkButton("Open", "ftp://example.com")
    with pytest.raises(ValueError, match="http"):
        LinkButton("Open", "javascript:alert(1)")


def test_request_carries_choice_and_messages() -> None:
    """AgentRequest has the tapped choice's id and every message of the turn (default none)."""
    request = AgentRequest(text="Yes", sender="1555", choice="yes")
    assert request.choice == "yes" and request.messages == ()
    assert AgentRequest(text="hi", sender="1").choice is None


def test_plain_replies_stay_equal() -> None:
    """Normalisation keeps equality: a text reply equals another with the same text."""
    assert AgentReply(text="a") == AgentReply(text="a")
    assert AgentReply(text="a", buttons=["x"]) == AgentReply(text="a", buttons=[("x", "x")])
