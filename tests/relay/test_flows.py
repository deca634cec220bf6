"""FlowTable: lookup, idle expiry in last-seen order, size bound; a fake clock."""

from wiregate.relay.flows import FlowTable


def test_flows_expire_after_being_idle_and_traffic_keeps_them():
    t = FlowTable(max_flows=10, idle_timeout=5.0)
    t.add("a", "A", 0.0)
    t.add("b", "B", 1.0)
    assert t.next_deadline() == 5.0
    t.touch("a", 3.0)  # a reply keeps "a" alive
    assert t.expire(5.9) == []
    assert t.expire(6.0) == ["B"]
    assert t.get("a", 7.0) == "A"
    assert t.expire(11.9) == [] and t.expire(12.0) == ["A"]
    assert len(t) == 0 and t.next_deadline() is None


def test_a_full_table_refuses_new_flows_but_makes_room_from_idle_ones():
    t = FlowTable(max_flows=2, idle_timeout=10.0)
    t.add(1, "x", 0.0)
    t.add(2, "y", 5.0)
    ok, expired = t.room(6.0)
    assert not ok and expired == []
    ok, expired = t.room(10.0)
    assert ok and expired == ["x"]
    t.add(3, "z", 10.0)
    assert sorted(t) == ["y", "z"]


def test_pop_and_clear_return_the_flows():
    t = FlowTable(max_flows=3, idle_timeout=1.0)
    t.add("k", 1, 0.0)
    t.add("j", 2, 0.0)
    assert t.pop("k") == 1 and t.pop("k") is None
    assert t.clear() == [2] and len(t) == 0


def test_one_source_cannot_take_more_than_max_per_source_flows():
    t = FlowTable(max_flows=100, idle_timeout=10.0, max_per_source=2)
    t.add(("1.2.3.4", 1), "a", 0.0, "1.2.3.4")
    t.add(("1.2.3.4", 2), "b", 1.0, "1.2.3.4")
    assert t.source_full("1.2.3.4") and not t.source_full("5.6.7.8")
    assert t.pop(("1.2.3.4", 1)) == "a"
    assert not t.source_full("1.2.3.4")  # a flow that ends gives its place back
    t.add(("1.2.3.4", 3), "c", 2.0, "1.2.3.4")
    assert t.expire(12.0) == ["b", "c"]  # so does one that expires
    assert not t.source_full("1.2.3.4") and len(t) == 0
