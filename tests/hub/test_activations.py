"""The approvals store without a server: codes expire, a flood is capped, an approval binds
one client id, and two processes sharing the state directory agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiaozhi_hub.activations import ActivationNotFound, Activations, TooManyPending

T0 = 1_800_000_000.0


def store(path: Path | None, **kwargs: object) -> Activations:
    options: dict[str, object] = {"ttl_seconds": 600, "max_pending": 3, **kwargs}
    return Activations(path, **options)  # type: ignore[arg-type]


def test_a_code_expires_and_the_device_gets_a_new_one(tmp_path: Path) -> None:
    codes = iter(["111111", "222222"])
    activations = store(tmp_path / "a.json", random_code=lambda: next(codes))
    first = activations.request("dev1", "c1", T0)
    assert first.code == "111111"
    assert activations.request("dev1", "c1", T0 + 599).code == "111111"  # asked again: same
    assert [p.code for p in activations.pending(T0 + 599)] == ["111111"]
    assert activations.pending(T0 + 600) == []  # expired
    with pytest.raises(ActivationNotFound, match="expired or approved"):
        activations.approve(T0 + 601, by="test", code="111111")
    assert activations.request("dev1", "c1", T0 + 601).code == "222222"


def test_an_approval_binds_one_client_id(tmp_path: Path) -> None:
    activations = store(tmp_path / "a.json")
    entry = activations.request("dev1", "c1", T0)
    approved = activations.approve(T0, by="test", code=entry.code)
    assert (approved.device_id, approved.client_id) == ("dev1", "c1")
    assert activations.is_approved("dev1", "c1")
    assert not activations.is_approved("dev1", "c2")  # a second board with the same MAC
    assert activations.forget("dev1") == 1
    assert not activations.is_approved("dev1", "c1")
    assert activations.forget("dev1") == 0


def test_a_flood_of_made_up_ids_is_capped(tmp_path: Path) -> None:
    activations = store(tmp_path / "a.json", max_pending=2)
    activations.request("a", "c", T0)
    activations.request("b", "c", T0)
    with pytest.raises(TooManyPending, match="2 activations are pending"):
        activations.request("c", "c", T0)
    assert len(activations.pending(T0)) == 2
    activations.request("c", "c", T0 + 600)  # the others expired: room again


def test_approving_by_device_id_needs_the_client_id_when_ambiguous() -> None:
    activations = store(None)
    activations.request("dev1", "c1", T0)
    activations.request("dev1", "c2", T0)
    with pytest.raises(ActivationNotFound, match="2 pending client ids"):
        activations.approve(T0, by="test", device_id="dev1")
    with pytest.raises(ActivationNotFound, match="by 'code' or by 'device_id'"):
        activations.approve(T0, by="test", client_id="c1")
    assert activations.approve(T0, by="test", device_id="dev1", client_id="c2").client_id == "c2"
    rejected = activations.reject(T0, device_id="dev1")
    assert rejected.client_id == "c1"
    assert activations.pending(T0) == []


def test_two_processes_sharing_the_state_directory_agree(tmp_path: Path) -> None:
    path = tmp_path / "state" / "activations.json"
    one, two = store(path), store(path)
    entry = one.request("dev1", "c1", T0)
    assert [p.code for p in two.pending(T0)] == [entry.code]  # a restart or a replica
    two.approve(T0, by="test", code=entry.code)
    assert one.is_approved("dev1", "c1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["activations.json"]


def test_an_unreadable_file_keeps_what_was_known(tmp_path: Path) -> None:
    path = tmp_path / "activations.json"
    activations = store(path)
    entry = activations.request("dev1", "c1", T0)
    path.write_text("{not json")
    assert [p.code for p in activations.pending(T0)] == [entry.code]
    assert store(path).pending(T0) == []  # a new process starts empty, and says so in the log


def test_every_change_is_told_to_the_listener() -> None:
    """What the live stream's activation frames carry: pending (a new code only), approved,
    rejected, expired; each with the pair it is about."""
    activations = store(None)
    told: list[tuple[str, dict[str, object]]] = []
    activations.on_change = lambda change, entry: told.append((change, entry))
    a = activations.request("dev1", "c1", T0)
    activations.request("dev1", "c1", T0 + 1)  # asked again: the same code, nothing new
    activations.request("dev2", "c2", T0)
    activations.request("dev3", "c3", T0 + 300)
    activations.approve(T0 + 2, by="test", code=a.code)
    activations.reject(T0 + 3, device_id="dev2")
    assert activations.pending(T0 + 900) == []  # dev3's code ran out
    assert [(change, e["device_id"], e["client_id"]) for change, e in told] == [
        ("pending", "dev1", "c1"),
        ("pending", "dev2", "c2"),
        ("pending", "dev3", "c3"),
        ("approved", "dev1", "c1"),
        ("rejected", "dev2", "c2"),
        ("expired", "dev3", "c3"),
    ]
    assert told[0][1]["code"] == a.code
    assert told[0][1]["expires_in_seconds"] == 600
    assert "challenge" not in told[0][1]  # the device's secret, never the operator's
    assert told[3][1]["by"] == "test"
