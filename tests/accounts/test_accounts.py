"""Accounts: registration, login, the lockout (on a fake clock), the SQLite store.

The store is a real SQLite file in tmp_path; hashing is real argon2id with the
cheapest parameters, on worker threads as in the server.
"""

from __future__ import annotations

import sqlite3

import pytest
import trio

from machat.protocol.errors import ChatError, ErrorCode
from machat.server.accounts import MAX_FAILURES, Accounts, Lockout, SqliteAccountStore
from machat.server.sqlite import SqliteDatabase

from .conftest import CountingHasher, FakeClock


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "chat.db")


def open_accounts(path: str, hasher: CountingHasher, clock: FakeClock) -> Accounts:
    store = SqliteAccountStore(SqliteDatabase(path))
    store.open()
    return Accounts(store, hasher=hasher, clock=clock)


@pytest.fixture
def accounts(db_path, hasher, clock) -> Accounts:
    return open_accounts(db_path, hasher, clock)


async def refused(coro, code: ErrorCode) -> str:
    with pytest.raises(ChatError) as info:
        await coro
    assert info.value.code == code
    return info.value.message


async def test_register_then_log_in(accounts: Accounts) -> None:
    assert not await accounts.is_registered("Mina")
    assert await accounts.authenticate("Mina", None) is False  # free: anyone may use it
    await accounts.register("Mina", "correct-horse")
    assert await accounts.is_registered("mina")
    assert await accounts.authenticate("Mina", "correct-horse") is True
    assert await accounts.authenticate("MINA", "correct-horse") is True  # any case


async def test_a_registered_name_needs_its_password(accounts: Accounts) -> None:
    await accounts.register("Mina", "correct-horse")
    message = await refused(
        accounts.authenticate("mina", None, hint="send it as auth"), ErrorCode.NAME_REGISTERED
    )
    assert message == "name registered: mina is registered; send it as auth"
    message = await refused(accounts.authenticate("Mina", "wrong-horse"), ErrorCode.NAME_REGISTERED)
    assert message == "name registered: wrong password for Mina"


async def test_register_refusals(accounts: Accounts) -> None:
    message = await refused(accounts.register("Mina", "short"), ErrorCode.BAD_COMMAND)
    assert message == "a password has at least 8 characters"
    await accounts.register("Mina", "correct-horse")
    message = await refused(accounts.register("MINA", "another-one"), ErrorCode.BAD_COMMAND)
    assert message == "MINA is already registered"


async def test_concurrent_registrations_of_one_name(accounts: Accounts) -> None:
    results: list[str] = []

    async def register(name: str) -> None:
        try:
            await accounts.register(name, "password-" + name)
            results.append("ok")
        except ChatError as exc:
            results.append(exc.message)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for name in ["Mina", "mina", "MINA"]:
                nursery.start_soon(register, name)
    assert results.count("ok") == 1
    assert len(results) == 3


async def test_password_change_and_unregister(accounts: Accounts) -> None:
    await accounts.register("Mina", "correct-horse")
    await refused(accounts.change_password("Mina", "wrong-horse", "new-horse"), 114)
    await refused(accounts.change_password("Mina", "correct-horse", "short"), 103)
    await accounts.change_password("mina", "correct-horse", "battery-staple")
    await refused(accounts.authenticate("Mina", "correct-horse"), 114)
    assert await accounts.authenticate("Mina", "battery-staple")
    await refused(accounts.unregister("Mina", "correct-horse"), 114)
    await accounts.unregister("Mina", "battery-staple")
    assert not await accounts.is_registered("Mina")
    assert await accounts.authenticate("Mina", None) is False
    message = await refused(accounts.unregister("Mina", "battery-staple"), 103)
    assert message == "Mina is not registered; see /help register"
    await refused(accounts.change_password("Bob", "whatever1", "whatever2"), 103)


async def test_only_argon2id_hashes_are_stored(accounts: Accounts, db_path: str) -> None:
    await accounts.register("Mina", "correct-horse")
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT key, name, hash FROM accounts").fetchall()
    conn.close()
    ((key, name, hash),) = rows
    assert (key, name) == ("mina", "Mina")
    assert hash.startswith("$argon2id$")
    assert "correct-horse" not in hash


async def test_accounts_survive_a_restart(db_path, hasher, clock) -> None:
    first = open_accounts(db_path, hasher, clock)
    await first.register("Mina", "correct-horse")
    first.store.db.close()  # type: ignore[attr-defined]
    second = open_accounts(db_path, hasher, clock)
    assert await second.authenticate("mina", "correct-horse")


async def test_unknown_and_known_names_cost_one_verification_each(
    accounts: Accounts, hasher: CountingHasher
) -> None:
    await accounts.register("Mina", "correct-horse")
    hasher.verified.clear()
    await refused(accounts.authenticate("Mina", "wrong-horse"), 114)
    assert len(hasher.verified) == 1
    assert await accounts.authenticate("Nobody", "wrong-horse") is False
    assert len(hasher.verified) == 2
    # The unknown name was checked against a real argon2id hash of the same parameters.
    known, dummy = hasher.verified
    assert dummy != known
    assert dummy.split("$")[:4] == known.split("$")[:4]


async def test_ten_wrong_passwords_in_a_minute_lock_the_name(
    accounts: Accounts, clock: FakeClock, hasher: CountingHasher
) -> None:
    await accounts.register("Mina", "correct-horse")
    await accounts.register("Oskar", "oskar-pass")
    for _ in range(MAX_FAILURES):
        clock.advance(5)  # ten tries in 50 s
        await refused(accounts.authenticate("Mina", "guess"), 114)
    # Locked: even the right password is refused, without hashing anything.
    hasher.verified.clear()
    message = await refused(accounts.authenticate("Mina", "correct-horse"), 114)
    assert message == (
        "name registered: Mina is locked after too many wrong passwords; try again in 60 s"
    )
    await refused(accounts.change_password("Mina", "correct-horse", "other-pass"), 114)
    assert hasher.verified == []
    # Other names log in as before.
    assert await accounts.authenticate("Oskar", "oskar-pass")
    clock.advance(59)
    message = await refused(accounts.authenticate("Mina", "correct-horse"), 114)
    assert message.endswith("try again in 1 s")
    clock.advance(1)
    assert await accounts.authenticate("Mina", "correct-horse")


async def test_wrong_passwords_spread_over_more_than_a_minute_do_not_lock(
    accounts: Accounts, clock: FakeClock
) -> None:
    await accounts.register("Mina", "correct-horse")
    for _ in range(3 * MAX_FAILURES):
        clock.advance(7)  # never ten within 60 s
        message = await refused(accounts.authenticate("Mina", "guess"), 114)
        assert "wrong password" in message
    assert await accounts.authenticate("Mina", "correct-horse")


def test_lockout_forgets_old_names_first(clock: FakeClock) -> None:
    lockout = Lockout(clock, max_failures=2, window=60, duration=60, max_names=3)
    lockout.failed("a")
    lockout.failed("a")  # t=0: a is locked until t=60
    clock.advance(10)
    lockout.failed("b")  # t=10
    clock.advance(65)  # t=75: a is free again, b's failure is older than the window
    lockout.failed("c")
    assert len(lockout) == 3
    lockout.failed("d")  # full: a and b are forgotten, c is kept
    assert len(lockout) == 2
    assert lockout.locked_for("a") == 0
    lockout.failed("d")
    assert lockout.locked_for("d") == 60
    for name in "efgh":
        lockout.failed(name)
    assert len(lockout) <= 3


def test_success_clears_the_count(clock: FakeClock) -> None:
    lockout = Lockout(clock, max_failures=3)
    lockout.failed("a")
    lockout.failed("a")
    lockout.succeeded("a")
    assert not lockout.failed("a")
    assert not lockout.failed("a")
    assert lockout.failed("a")
    assert lockout.locked_for("a") == 60


async def test_an_unregistered_name_costs_no_database_call(db_path, monkeypatch) -> None:
    """The store knows its keys: only a registered name is read from the file."""
    db = SqliteDatabase(db_path)
    first = SqliteAccountStore(db)
    first.open()
    calls: list[object] = []
    real_run = db.run

    async def counted(fn):
        calls.append(fn)
        return await real_run(fn)

    monkeypatch.setattr(db, "run", counted)
    accounts = Accounts(first, hasher=CountingHasher(), clock=FakeClock())
    assert await accounts.authenticate("Nobody", None) is False
    assert calls == []
    await accounts.register("Mina", "correct-horse")
    calls.clear()
    assert await accounts.is_registered("MINA")
    assert len(calls) == 1  # read from the file
    await accounts.unregister("Mina", "correct-horse")
    calls.clear()
    assert not await accounts.is_registered("mina") and calls == []
    await accounts.register("Oskar", "battery-staple")
    db.close()
    again = SqliteAccountStore(SqliteDatabase(db_path))
    again.open()  # the keys are read back
    assert (await again.get("oskar")) is not None and (await again.get("mina")) is None
