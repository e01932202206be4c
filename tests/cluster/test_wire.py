"""The payloads nodes exchange: what the Lua script writes and what nodes decode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.cluster import wire
from machat.protocol import events as ev
from machat.protocol.formatting import encode_messages_text


def test_batch_as_the_publish_script_writes_it() -> None:
    payload = "R\t100\t101\t1764582609.000123\t2\tnode-a\t7\t5f3c\nMina:hello\tthere\nBob::) é\n"
    batch = wire.decode_batch(payload)
    assert (batch.epoch, batch.first, batch.count) == (100, 101, 2)
    assert (batch.origin, batch.incarnation, batch.seq) == ("node-a", "5f3c", 7)
    assert batch.made == ("node-a", "5f3c", 7)
    assert batch.ts == 1764582609.000123
    made = batch.room_pass("Dev")
    assert made.text == "Mina:hello\tthere\nBob::) é\n".encode()  # as members get it
    assert (made.first_id, made.last_id, made.ts) == (101, 102, 1764582609.000123)
    assert made.rows == [
        ("Dev", "Mina", "hello\tthere", 101, 1764582609.000123),
        ("Dev", "Bob", ":) é", 102, 1764582609.000123),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        "R\t1\t2\t3\t2\tn\t1\ti\nMina:hi\n",  # fewer lines than its count
        "R\t1\t2\t3\t1\tn\t1\ti\nMina:hi\nBob:yo\n",  # more
        "R\t1\t2\t3\t1\tn\t1\ti\nMina:hi",  # no newline after the last
        "R\t1\tx\t3\t1\tn\t1\ti\nMina:hi\n",
        "R\t1\t2\t3\t1\tn\tx\ti\nMina:hi\n",
        "Q\t1",
        "R\t1\t2\t3\t1\tn\ti\nMina:hi\n",  # no batch number
        # Cluster protocol 2's batch, without the incarnation: refused.
        "R\t1\t2\t3\t1\tn\t1\nMina:hi\n",
        # The batch of the nodes before the text format (a sender and a text a line
        # each): refused, not read as lines.
        "M\t1\t2\t3\t1\tn\nMina\nhi",
    ],
)
def test_bad_batches_are_refused(payload: str) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(payload)


def test_a_stored_batch_says_which_publish_made_it() -> None:
    assert wire.decode_made("node-a\t5f3c\t7\t3") == (("node-a", "5f3c", 7), 3)
    for field in ("", "node-a\t5f3c\t7", "node-a\t5f3c\tx\t3", "a\tb\t1\t2\t3"):
        assert wire.decode_made(field) is None


@pytest.mark.parametrize(
    "event", [ev.Join("dev", "Mina"), ev.Leave("dev", "Mina", "quit"), ev.Nick("Mina", "Mia")]
)
def test_room_notices_round_trip(event: ev.Join | ev.Leave | ev.Nick) -> None:
    assert wire.decode_room_notice(wire.encode_notice("a", event), "dev") == ("a", event)


def test_broadcast_round_trip() -> None:
    event = ev.Broadcast("Mina", "to\tall", 1764582609.25)
    payload = wire.encode_broadcast("a", event.sender, event.text, event.ts)
    assert wire.decode_all(payload) == ("a", event)


def test_node_gone() -> None:
    gone = wire.decode_all("X\tb\nBob\tdev\nEve\t")
    assert gone == wire.NodeGone("b", (("Bob", "dev"), ("Eve", "")))


def test_direct_messages() -> None:
    event, names = wire.decode_direct("P\t1.5\tMina\tBob,Eve\nhi\tthere")
    assert event == ev.Private("Mina", "hi\tthere", 1.5) and names == ["Bob", "Eve"]
    event, names = wire.decode_direct("G\t#team\t1.5\tMina\tBob\nhi")
    assert event == ev.GroupMessage("#team", "Mina", "hi", 1.5) and names == ["Bob"]
    with pytest.raises(wire.WireError):
        wire.decode_direct("P\tnot-a-time\tMina\tBob\nhi")


@pytest.mark.parametrize(
    "event",
    [
        ev.Moderation("ban", "Bob", "Mina", "spam\tand more", 30),
        ev.Moderation("kick", "Eve", "Mina"),
        ev.Moderation("mute", "Bob", "Mina", minutes=5),
        ev.Moderation("unmute", "Bob", "Mina"),
        ev.Moderation("unban", "Bob", "Mina"),
        ev.Topic("Dev", "release\tday", "Mina", 1764582609.25),
        ev.Topic("Dev", "", "Mina"),
    ],
)
def test_moderation_round_trip(event: ev.Moderation | ev.Topic) -> None:
    assert wire.decode_all(wire.encode_moderated("a", event)) == wire.Moderated("a", event)


@pytest.mark.parametrize(
    "payload", ["A\ta\tpunch\tBob\tMina\t0\n", "A\ta\tban\tBob\tMina\tsoon\n", "T\ta\tdev\tMina\n"]
)
def test_bad_moderation_payloads_are_refused(payload: str) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_all(payload)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Mina", "Bob"]),
            st.lists(
                st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=8),
                min_size=1,
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_a_publish_body_is_the_text_format_of_its_lines(runs) -> None:
    """One join per run writes the lines as members get them, ``sender:text`` each
    (what the publish script splits at the first colon), and a batch the script
    makes of it decodes to the same lines, in order."""
    lines = [(sender, text) for sender, texts in runs for text in texts]
    body = wire.encode_lines(runs)
    assert body.encode() == encode_messages_text(
        [ev.Message("dev", sender, text, 1, 1.5) for sender, text in lines]
    )
    batch = wire.decode_batch(f"R\t100\t101\t1.5\t{len(lines)}\tnode-a\t3\ti\n{body}")
    assert batch.room_pass("dev").text == body.encode()
    assert [(row[1], row[2]) for row in batch.room_pass("dev").rows] == lines
